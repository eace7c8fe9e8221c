"""Corpus sources become full token windows, deterministically."""

import json

import pytest
import torch

from interp.config import CorpusConfig
from interp.corpus import builtin_documents, corpus_windows, cut_windows
from interp.errors import CorpusError


def test_builtin_corpus_has_shakespeare_and_python_docs():
    docs = builtin_documents()
    assert len(docs) > 500
    assert any("Twelfth Night" in d for d in docs)
    assert any("for_stmt" in d or 'The "for" statement' in d for d in docs)
    assert not any("**" in d for d in docs[:200])


def test_windows_are_full_start_with_bos_and_are_deterministic(smollm_tokenizer):
    cfg = CorpusConfig(ctx_len=32, num_tokens=32 * 10)
    a = corpus_windows(cfg, smollm_tokenizer)
    b = corpus_windows(cfg, smollm_tokenizer)
    assert a.shape == (10, 32) and a.dtype == torch.int32
    assert torch.equal(a, b)
    assert torch.all(a[:, 0] == smollm_tokenizer.bos_token_id)
    c = corpus_windows(CorpusConfig(ctx_len=32, num_tokens=320, shuffle_seed=1), smollm_tokenizer)
    assert not torch.equal(a, c)


def test_skip_windows_continues_the_same_stream(smollm_tokenizer):
    cfg = CorpusConfig(ctx_len=16, add_bos=False)
    all_ = corpus_windows(cfg, smollm_tokenizer, num_windows=6)
    tail = corpus_windows(cfg, smollm_tokenizer, num_windows=2, skip_windows=4)
    assert torch.equal(all_[4:], tail)


def test_local_text_jsonl_and_parquet_files(tmp_path, smollm_tokenizer):
    text = "The cat sat on the mat. " * 40
    (tmp_path / "a.txt").write_text(text)
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps({"body": text}) for _ in range(3)))
    import datasets

    datasets.Dataset.from_dict({"body": [text] * 2}).to_parquet(str(tmp_path / "c.parquet"))
    for name in ("a.txt", "b.jsonl", "c.parquet"):
        cfg = CorpusConfig(corpus=str(tmp_path / name), text_column="body", ctx_len=16, num_tokens=64)
        w = corpus_windows(cfg, smollm_tokenizer)
        assert w.shape == (4, 16)
        assert "cat sat" in smollm_tokenizer.decode(w[0, 1:].tolist())


def test_empty_or_malformed_corpora_say_what_is_wrong(tmp_path, smollm_tokenizer):
    (tmp_path / "empty.txt").write_text("   \n")
    with pytest.raises(CorpusError, match="no complete token windows"):
        corpus_windows(CorpusConfig(corpus=str(tmp_path / "empty.txt")), smollm_tokenizer)
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"other": 1}\n')
    with pytest.raises(CorpusError, match=r"bad.jsonl:2: .*'text'"):
        corpus_windows(CorpusConfig(corpus=str(tmp_path / "bad.jsonl")), smollm_tokenizer)
    with pytest.raises(CorpusError, match="less than one window"):
        corpus_windows(CorpusConfig(num_tokens=10, ctx_len=64), smollm_tokenizer)
    (tmp_path / "folder").mkdir()
    with pytest.raises(CorpusError, match="No .txt"):
        corpus_windows(CorpusConfig(corpus=str(tmp_path / "folder")), smollm_tokenizer)


def test_cut_windows_without_bos_uses_every_token(smollm_tokenizer):
    w = cut_windows(["a b c d e f g h"], smollm_tokenizer, ctx_len=4, num_windows=5, add_bos=False)
    ids = smollm_tokenizer("a b c d e f g h", add_special_tokens=False)["input_ids"] + [smollm_tokenizer.eos_token_id]
    assert w.flatten().tolist() == ids[: w.numel()]
