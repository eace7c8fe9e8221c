"""Bad input is named, never an unexplained traceback: LLM replies of any shape, hand-edited configs,
damaged run directories, corrupted shards, odd tokenizers, unicode and very long texts.

Property tests (hypothesis) feed each reader arbitrary input; the contract is the same everywhere:
the input is handled (parsed, skipped with a warning, recomputed) or refused with an
``InterpError`` whose message names what is wrong, which the CLI prints as one line.
"""

import ast
import json
import shutil
import string
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from interp.atomic import remove_stale_temps, write_atomic
from interp.cache import build_cache, iter_shards, shard_file, verify_shard
from interp.cli import main
from interp.coders import CoderSpec, load_coder
from interp.config import CacheConfig, CorpusConfig, RecordsConfig, RunConfig, read_config_file
from interp.corpus import corpus_windows, cut_windows
from interp.errors import CacheCorruptError, ConfigError, CorpusError, CorruptFileError
from interp.explain import LLM_EXPLAINERS, TokenText, explain_batch, explain_prompt, flag, highlight, parse_explanation
from interp.jsonl import append_jsonl
from interp.llm import GenerationParams, LLMError, OpenAIClient
from interp.models import LoadedModel
from interp.records import CacheView, RecordBuilder
from interp.scoring.classify import DetectionScorer, FuzzingScorer, parse_labels
from interp.scoring.intruder import parse_choice
from interp.scoring.simulation import parse_activations
from interp.views import explainer_view, scored_view
from tests.helpers.models import save_tiny_model, tiny_llama
from tests.helpers.openai_server import serving
from tests.helpers.pipeline import scripted_reply, tiny_run_args
from tests.helpers.results import explanation_lines, score_lines
from tests.helpers.text import is_plain_line

pytestmark = pytest.mark.reliability

CODER = "model.layers.1.mlp.topk-neurons"
TRICKY = [
    "",
    " ",
    "\n\n",
    "\x00",
    "<<",
    ">>",
    "<<>>",
    "[EXPLANATION]:",
    "[EXPLANATION]: ",
    "Explanation:\n\n",
    "<|im_end|>",
    "</s>",
    "assistant:",
    "```\n[1, 0]\n```",
    "[",
    "]",
    "[1, 0, 1",
    "1 0 1 0 1",
    "👍" * 50,
    "e\u0301\u0301\u0301",
    "\u202eevil",
    "ab\u200bcd",
    "\ud7ff\ue000",
    'The token "<<x>>"',
    "$explanation ${x}",
]
"""Replies and texts that have broken parsers before: markers, chat artefacts, half lists, combining
marks, RTL overrides.
"""
texts = st.one_of(
    st.sampled_from(TRICKY), st.text(), st.text(alphabet=st.sampled_from(list("[]01,: \n<>\"'*EXPLANATIONexplain")))
)


# --- LLM replies of any shape -----------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(texts)
@example("0\x1f_")  # CI, stop 28: the unit separator (whitespace to str.strip) was left at the end
@example("[EXPLANATION]: \u3000cats\u200b and\x00 dogs\xa0")
@example("**\x1c**")
def test_explanation_parsing_survives_any_reply(reply):
    parsed = parse_explanation(reply)
    assert parsed is None or is_plain_line(parsed)
    assert parsed is None or flag(parsed) is None or isinstance(flag(parsed), str)


@settings(max_examples=300, deadline=None)
@given(texts, st.integers(1, 12))
def test_list_and_choice_parsers_survive_any_reply(reply, n):
    labels = parse_labels(reply, n)
    assert labels is None or (len(labels) == n and all(isinstance(x, bool) for x in labels))
    values = parse_activations(reply, n)
    assert values is None or (len(values) == n and all(0 <= v <= 9 for v in values))
    choice = parse_choice(reply, n)
    assert choice is None or 0 <= choice < n


def test_a_megabyte_reply_parses_quickly():
    reply = "[EXPLANATION]: " + "word " * 200_000
    assert flag(parse_explanation(reply)).startswith("longer than")
    assert parse_explanation("x" * 1_000_000) == "x" * 1_000_000
    assert parse_labels("[" + "1, " * 100_000 + "]", 3) is None


@pytest.fixture(scope="module")
def llm():
    srv = serving()
    yield srv
    srv.shutdown()
    srv.server_close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "choices",
                    "message",
                    "content",
                    "usage",
                    "logprobs",
                    "top_logprobs",
                    "token",
                    "logprob",
                    "text",
                    "type",
                    "prompt_tokens",
                ]
            )
            | st.text(max_size=5),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)
"""JSON of any shape, biased towards the field names an OpenAI reply uses, so half-right replies turn up."""


def _shaped(content) -> str:
    return json.dumps(
        {
            "choices": [{"message": {"role": "assistant", "content": content}, "logprobs": {"content": content}}],
            "usage": content,
        }
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(json_values.map(json.dumps), json_values.map(_shaped), st.text(max_size=40)))
def test_any_server_reply_is_a_completion_or_a_recorded_failure(llm, body):
    llm.body = lambda content: body
    client = OpenAIClient(llm.base_url, "m", max_retries=0, timeout=5)
    [reply] = client.generate([({"role": "user", "content": "hi"},)], GenerationParams())
    assert isinstance(reply.text, str) and isinstance(reply.prompt_tokens, int)
    assert reply.error is None or reply.error.startswith("malformed reply")
    try:
        [lp] = client.answer_logprobs([({"role": "user", "content": "hi"},)], ["Yes", "No"])
    except LLMError as e:  # a reply without log-probs: the server cannot do log-prob scoring, said in one line
        assert "logprob" in str(e).lower()
    else:
        assert lp == {} or set(lp) == {"Yes", "No"}


def test_content_parts_lists_are_joined(llm):
    llm.body = lambda content: json.dumps(
        {
            "choices": [
                {
                    "message": {
                        "content": [{"type": "text", "text": "a "}, {"type": "image"}, {"type": "text", "text": "b"}]
                    }
                }
            ]
        }
    )
    [reply] = OpenAIClient(llm.base_url, "m", max_retries=0).generate(
        [({"role": "user", "content": "hi"},)], GenerationParams()
    )
    assert reply.text == "a b" and reply.error is None


# --- a tiny real run to damage ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, smollm_tokenizer) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model"), smollm_tokenizer)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model, llm) -> Path:
    """A finished run of every stage (tiny model, scripted LLM), to copy and damage."""
    llm.body, llm.reply = None, scripted_reply
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    assert main(tiny_run_args(run_dir, tiny_model, llm.base_url) + ["--neuron-k", "4"]) == 0
    return run_dir


def records_of(run_dir: Path, lm: LoadedModel, latents: list[int]):
    view = CacheView.open(run_dir / "cache", CODER, bos_token_id=lm.tokenizer.bos_token_id)
    return list(RecordBuilder(view, RecordsConfig()).build(CODER, latents))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts)
def test_explaining_with_any_reply_records_ok_flagged_or_failed(llm, finished_run, smollm_tokenizer, reply):
    llm.body, llm.reply = None, (lambda content: reply)
    lm = LoadedModel(None, smollm_tokenizer, "tiny")
    records = records_of(finished_run, lm, [2, 3])
    client = OpenAIClient(llm.base_url, "m", max_retries=0)
    for e in explain_batch(records, "default", TokenText(smollm_tokenizer), client, GenerationParams(), max_retries=1):
        assert e.status in ("ok", "flagged", "failed", "rare", "dead")
        assert (e.status == "ok") == (isinstance(e.explanation, str) and flag(e.explanation) is None)
        assert e.status != "failed" or e.note


# --- hand-edited config.json --------------------------------------------------------------------


FIELDS = [(section, key) for section, values in RunConfig().to_dict().items() for key in values]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(FIELDS), json_values)
def test_a_config_value_of_the_wrong_type_is_named(tmp_path_factory, field, value):
    section, key = field
    data = RunConfig().to_dict()
    data[section][key] = value
    path = tmp_path_factory.mktemp("cfg") / "config.json"
    path.write_text(json.dumps(data))
    try:
        cfg = read_config_file(path)
    except ConfigError as e:
        assert f"{section}.{key}" in str(e) and str(path) in str(e)
    else:
        assert getattr(getattr(cfg, section), key) == value


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.binary(max_size=64), json_values.map(lambda v: json.dumps(v).encode())))
def test_a_config_file_of_any_content_loads_or_is_named(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("cfg") / "config.json"
    path.write_bytes(data)
    try:
        read_config_file(path)
    except (ConfigError, CorruptFileError) as e:
        assert str(path) in str(e)


def test_the_cli_names_a_hand_edited_config_in_one_line(tmp_path, finished_run, tiny_model, llm, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    data = json.loads((run_dir / "config.json").read_text())
    data["corpus"]["num_tokens"] = "many"
    (run_dir / "config.json").write_text(json.dumps(data))
    assert main(tiny_run_args(run_dir, tiny_model, llm.base_url) + ["--neuron-k", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "corpus.num_tokens must be an integer, not 'many'" in err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--ctx-len", "0"], "corpus.ctx_len (--ctx-len) must be at least 1"),
        (["--shard-windows", "0"], "cache.shard_windows (--shard-windows) must be at least 1"),
        (["--batch-size", "0"], "cache.batch_size (--batch-size) must be at least 1"),
        (["--explain-batch", "0"], "explain.explain_batch (--explain-batch) must be at least 1"),
        (["--example-len", "64"], "must not exceed corpus.ctx_len (--ctx-len) (64 > 32)"),
        (["--n-quantiles", "0"], "records.n_quantiles (--n-quantiles) must be at least 1"),
        (["--max-retries", "-1"], "explain.max_retries (--max-retries) must be at least 0"),
        (["--neuron-k", "65"], "k=65 top neurons asked of model.layers.1.mlp, which has 64"),
        (["--latents", "5-2"], "selects no latents"),
        (["--latents", "sample:0"], "Cannot read latent selection 'sample:0'"),
    ],
)
def test_settings_out_of_range_are_refused_in_one_line(tmp_path, tiny_model, llm, capsys, flags, message):
    assert main(tiny_run_args(tmp_path / "run", tiny_model, llm.base_url) + ["--neuron-k", "4"] + flags) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err


# --- damaged run directories --------------------------------------------------------------------


def _garbage(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 3)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 1])


def _wrong_json(path: Path) -> None:
    path.write_text('[1, "two", {"three": null}]\n')


DAMAGE = {"missing": Path.unlink, "truncated": _truncate, "garbage": _garbage, "wrong JSON": _wrong_json}
SHARDS = f"cache/{CODER}"
RECOVERS, NAMED = "recovers", "named"
CASES = [
    ("config.json", "missing", RECOVERS),
    ("config.json", "truncated", NAMED),
    ("config.json", "wrong JSON", NAMED),
    ("cache/tokens.safetensors", "missing", RECOVERS),
    ("cache/tokens.safetensors", "garbage", RECOVERS),
    (f"{SHARDS}/coder.json", "missing", RECOVERS),
    (f"{SHARDS}/coder.json", "garbage", NAMED),
    (f"{SHARDS}/shard-00001.safetensors", "missing", RECOVERS),
    (f"{SHARDS}/shard-00001.safetensors", "truncated", RECOVERS),
    (f"{SHARDS}/shard-00001.safetensors", "garbage", RECOVERS),
    (f"{SHARDS}/shard-00001.json", "missing", RECOVERS),
    (f"{SHARDS}/shard-00001.json", "garbage", RECOVERS),
    (f"{SHARDS}/shard-00001.json", "wrong JSON", RECOVERS),
    (f"{SHARDS}/stats.safetensors", "garbage", RECOVERS),
    (f"{SHARDS}/stats.json", "wrong JSON", RECOVERS),
    ("results.sqlite", "missing", RECOVERS),  # every explanation and score made again, each once
    ("results.sqlite", "truncated", NAMED),  # the run's explanations and scores: not redone over a damaged file
    ("results.sqlite", "garbage", NAMED),
    ("summary.json", "garbage", RECOVERS),
]
"""(file, damage, outcome): the run either rebuilds what it needs and ends as the undamaged run did,
or stops with one line naming the file (where the file's content cannot be redone from the rest)."""
LEGACY = ("explanations.jsonl", "scores.jsonl", "llm_cache.jsonl")
"""The files that held a run's results before the results database: imported once, then left as they were."""
LEGACY_CASES = [
    ("explanations.jsonl", "missing"),
    ("explanations.jsonl", "truncated"),
    ("explanations.jsonl", "wrong JSON"),
    ("scores.jsonl", "missing"),
    ("scores.jsonl", "truncated"),
    ("scores.jsonl", "garbage"),
]
"""(file, damage) of a run made before the results database: the lines that can be read are imported, the rest is
made again, and the run ends as the undamaged run did."""


def outputs(run_dir: Path) -> dict:
    """What a run produced, ignoring timing, the order lines were written in, plots (redrawn from the scores), the
    LLM response cache (a lost reply is fetched again only when needed) and a legacy run's JSONL (left as it was):
    its files, and every explanation and score line its results database ever stored."""
    out = {}
    for p in sorted(run_dir.rglob("*")):
        rel = str(p.relative_to(run_dir))
        if not p.is_file() or rel.startswith(("plots/", "results.sqlite")) or rel in LEGACY:
            continue
        out[rel] = p.read_bytes()
    for table, lines in (("explanations", explanation_lines(run_dir)), ("scores", score_lines(run_dir))):
        rows = [{k: v for k, v in r.items() if k != "batch_seconds_per_latent"} for r in lines]
        out[f"results.sqlite: {table}"] = sorted(json.dumps(r, sort_keys=True) for r in rows)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("rel, damage, outcome", CASES, ids=[f"{r}-{d}" for r, d, _ in CASES])
def test_a_damaged_run_directory_recovers_or_names_the_file(
    tmp_path, finished_run, tiny_model, llm, capsys, rel, damage, outcome
):
    llm.body, llm.reply = None, scripted_reply
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    DAMAGE[damage](run_dir / rel)
    rc = main(tiny_run_args(run_dir, tiny_model, llm.base_url) + ["--neuron-k", "4"])
    err = capsys.readouterr().err.strip().splitlines()
    if outcome == NAMED:
        assert rc == 2 and err[-1].startswith("error: ") and Path(rel).name in err[-1]
    else:
        assert rc == 0, err
        assert outputs(run_dir) == outputs(finished_run)


@pytest.fixture(scope="module")
def legacy_run(tmp_path_factory, finished_run) -> Path:
    """``finished_run`` as a run made before the results database kept it: its explanation and score lines, every one
    in the order written, in explanations.jsonl and scores.jsonl, and no database (its replies not kept)."""
    run_dir = tmp_path_factory.mktemp("legacy") / "run"
    shutil.copytree(finished_run, run_dir, ignore=shutil.ignore_patterns("results.sqlite*"))
    append_jsonl(run_dir / "explanations.jsonl", explanation_lines(finished_run))
    append_jsonl(run_dir / "scores.jsonl", score_lines(finished_run))
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize("rel, damage", LEGACY_CASES, ids=[f"{r}-{d}" for r, d in LEGACY_CASES])
def test_a_damaged_jsonl_of_a_run_made_before_the_database_is_imported_as_far_as_it_reads_and_recovers(
    tmp_path, legacy_run, finished_run, tiny_model, llm, capsys, rel, damage
):
    llm.body, llm.reply = None, scripted_reply
    run_dir = tmp_path / "run"
    shutil.copytree(legacy_run, run_dir)
    DAMAGE[damage](run_dir / rel)
    left = {name: (run_dir / name).read_bytes() for name in LEGACY if (run_dir / name).is_file()}
    rc = main(tiny_run_args(run_dir, tiny_model, llm.base_url) + ["--neuron-k", "4"])
    assert rc == 0, capsys.readouterr().err
    assert outputs(run_dir) == outputs(finished_run)
    assert {name: (run_dir / name).read_bytes() for name in LEGACY if (run_dir / name).is_file()} == left


@pytest.mark.slow
def test_extra_files_in_a_run_directory_are_left_alone(tmp_path, finished_run, tiny_model, llm):
    llm.body, llm.reply = None, scripted_reply
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    extras = {
        "notes.txt": b"mine",
        f"{SHARDS}/shard-00099.json": b"{}",
        "plots/old.png": b"not a png",
        "cache/junk.bin": b"\0",
    }
    for rel, data in extras.items():
        (run_dir / rel).write_bytes(data)
    assert main(tiny_run_args(run_dir, tiny_model, llm.base_url) + ["--neuron-k", "4"]) == 0
    assert all((run_dir / rel).read_bytes() == data for rel, data in extras.items())
    assert {k: v for k, v in outputs(run_dir).items() if k not in extras} == outputs(finished_run)


# --- corrupted shards ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory, smollm_tokenizer):
    lm = tiny_llama(smollm_tokenizer)
    coders = {"n": load_coder(CoderSpec.parse("topk-neurons@model.layers.1.mlp"), lm.model, neuron_k=4)}
    windows = torch.randint(3, 5000, (12, 16), generator=torch.Generator().manual_seed(0), dtype=torch.int32)
    cache_dir = tmp_path_factory.mktemp("cache")
    cfg = CacheConfig(batch_size=4, shard_windows=4)
    build_cache(lm, coders, windows, cache_dir, cfg, progress=False)
    return lm, coders, windows, cache_dir, cfg, shard_file(cache_dir / "n", 1).read_bytes()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_corruption_of_a_shard_is_caught_and_recomputed(small_cache, data):
    lm, coders, windows, cache_dir, cfg, good = small_cache
    path = shard_file(cache_dir / "n", 1)
    if data.draw(st.booleans(), label="truncate"):
        damaged = good[: data.draw(st.integers(0, len(good) - 1), label="length")]
    else:
        at = data.draw(st.integers(0, len(good) - 1), label="offset")
        damaged = good[:at] + bytes([good[at] ^ data.draw(st.integers(1, 255), label="xor")]) + good[at + 1 :]
    path.write_bytes(damaged)
    with pytest.raises(CacheCorruptError, match="shard-00001.safetensors"):
        verify_shard(cache_dir / "n", 1)
    with pytest.raises(CacheCorruptError):
        list(iter_shards(cache_dir / "n"))
    build_cache(lm, coders, windows, cache_dir, cfg, progress=False)
    assert path.read_bytes() == good


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=80), json_values.map(lambda v: json.dumps(v).encode())))
def test_any_damage_to_a_shard_sidecar_is_recomputed(small_cache, sidecar):
    lm, coders, windows, cache_dir, cfg, good = small_cache
    meta = cache_dir / "n" / "shard-00001.json"
    original = meta.read_bytes()
    assume(sidecar != original)
    meta.write_bytes(sidecar)
    with pytest.raises(CacheCorruptError, match="shard-00001"):
        verify_shard(cache_dir / "n", 1)
    build_cache(lm, coders, windows, cache_dir, cfg, progress=False)
    assert meta.read_bytes() == original and shard_file(cache_dir / "n", 1).read_bytes() == good


# --- atomic writes ------------------------------------------------------------------------------


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")

    def half(p: Path):
        p.write_text("new, but only ha")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, half)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_temporaries_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    host = socket.gethostname()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    files = {
        f".shard-00001.safetensors.{dead}@{host}.abcd1234.tmp": False,  # its writer was killed
        f".summary.json.{os.getpid()}@{host}.abcd1234.tmp": True,  # this process is writing it
        f".summary.json.{dead}@another-host.abcd1234.tmp": True,  # another machine on a shared filesystem
        ".notes.tmp": True,  # not ours
        "keep.json": True,
    }
    (tmp_path / "sub").mkdir()
    for name in files:
        (tmp_path / "sub" / name).write_text("x")
    killed = (
        tmp_path / "sub" / f".stats.safetensors.{dead}@{host}.ef567890.tmp"
    )  # a folder, as write_atomic makes them
    killed.mkdir()
    (killed / ".tmpAb12Cd").write_text("x")  # what safetensors was writing inside it
    live = tmp_path / "sub" / f".tokens.safetensors.{os.getpid()}@{host}.ef567890.tmp"
    live.mkdir()
    files[live.name] = True
    assert remove_stale_temps(tmp_path) == 2
    assert {p.name for p in (tmp_path / "sub").iterdir()} == {name for name, kept in files.items() if kept}


def test_an_atomic_write_leaves_no_temporary_file_even_of_a_writer_that_makes_its_own(tmp_path):
    import torch
    from safetensors.torch import save_file

    write_atomic(tmp_path / "out.safetensors", lambda p: save_file({"x": torch.zeros(4)}, str(p)))

    def fails(p):
        (p.parent / ".tmpXy12Ab").write_text("half")  # as safetensors does beside the path it is given
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(tmp_path / "other.safetensors", fails)
    assert [p.name for p in tmp_path.iterdir()] == ["out.safetensors"]


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    """mkstemp makes files private (0600); results on a shared machine must be readable as plain writes are."""
    plain = tmp_path / "plain"
    plain.write_text("x")
    write_atomic(tmp_path / "atomic", lambda p: p.write_text("x"))
    assert (tmp_path / "atomic").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def _name(call: ast.Call) -> str | None:
    return getattr(call.func, "attr", None) or getattr(call.func, "id", None)


def _writes(call: ast.Call, writers: set[str]) -> bool:
    """Does this call write a file: a writer method (``x.savefig(...)``), or ``open`` in a writing mode?"""
    if isinstance(call.func, ast.Attribute) and call.func.attr in writers:
        return True
    if _name(call) != "open":
        return False
    mode = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "mode"), None)
    return isinstance(mode, ast.Constant) and bool(set(str(mode.value)) & set("wax+"))


def test_every_library_write_is_atomic_or_an_append():
    """A source audit: each call that writes a file sits inside ``write_atomic`` (in its arguments, or in a function
    handed to it by name), or is the JSONL appender, or the results database's transactions."""
    root = Path(__file__).resolve().parents[1]
    writers = {
        "savefig",
        "write_text",
        "write_bytes",
        "save_file",
        "to_parquet",
        "save",
        "save_pretrained",
        "save_model",
        "to_csv",
        "to_json",
        "dump",
        "connect",  # sqlite3: a database written outside results/db.py would escape its transactions
    }
    allowed = {
        "interp/results/db.py": "the results database: every write is one SQLite transaction",
        "interp/atomic.py": "the atomic writer itself",
        "interp/jsonl.py": "the JSONL appender itself: whole lines, flushed and synced",
        "interp/models.py": "the embedded model is converted into a staging folder that is renamed into place whole",
    }
    found = []
    for path in sorted([*(root / "interp").rglob("*.py"), *(root / "publish").rglob("*.py"), root / "app.py"]):
        rel = str(path.relative_to(root))
        if rel in allowed:
            continue
        tree = ast.parse(path.read_text())
        calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
        atomic = [call for call in calls if _name(call) == "write_atomic"]
        writers_given = {a.id for call in atomic for a in call.args if isinstance(a, ast.Name)}  # a function by name
        given = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name in writers_given]
        inside = {id(n) for node in [*atomic, *given] for n in ast.walk(node)}
        found += [
            f"{rel}:{c.lineno}: {ast.unparse(c)[:90]}" for c in calls if id(c) not in inside and _writes(c, writers)
        ]
    assert not found, "writes outside write_atomic / append_jsonl:\n" + "\n".join(found)


# --- tokenizers that split oddly, unicode, long texts -------------------------------------------


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer with no merges: every UTF-8 byte is a token, so an emoji is 4 tokens
    that decode to nothing whole.
    """
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<s>": 0, "</s>": 1, **{ch: i + 2 for i, ch in enumerate(sorted(alphabet))}}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="</s>")


UNICODE_DOCS = [
    "Plain English text about cats and dogs. " * 4,
    "日本語のテキストと中文文本，以及한국어 문장도 있습니다。" * 3,
    "Emoji 👍🏽👨‍👩‍👧‍👦🇫🇷 and combining e\u0301\u0301 marks, zero\u200bwidth and \u202eright-to-left\u202c text. " * 3,
    "Markers that look like ours: <<not a mark>> [EXPLANATION]: $explanation ${texts} Text 1: x " * 3,
    "a" * 5000,  # one very long word
    "\x00\x01\x02 control characters \t\r\n and a lone \ufffd replacement " * 5,
]


@pytest.fixture(scope="module")
def odd_run(tmp_path_factory):
    """A cache over unicode-heavy text with a byte-level tokenizer and a tiny Llama of its vocabulary."""
    tokenizer = byte_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    lm = LoadedModel(LlamaForCausalLM(cfg).eval().requires_grad_(False), tokenizer, "byte-llama")
    windows = cut_windows(UNICODE_DOCS, tokenizer, ctx_len=64, num_windows=1000, add_bos=True)
    coders = {"n": load_coder(CoderSpec.parse("topk-neurons@model.layers.1.mlp"), lm.model, neuron_k=4)}
    cache_dir = tmp_path_factory.mktemp("odd")
    build_cache(lm, coders, windows, cache_dir, CacheConfig(batch_size=8, shard_windows=16), progress=False)
    from interp.cache import finalize_stats

    finalize_stats(cache_dir / "n", 64, len(windows), 16)
    return lm, cache_dir


def test_a_byte_level_tokenizer_and_unicode_text_go_through_records_prompts_and_scorers(odd_run):
    lm, cache_dir = odd_run
    view = CacheView.open(cache_dir, "n", bos_token_id=lm.tokenizer.bos_token_id)
    records = [
        r
        for r in RecordBuilder(view, RecordsConfig(example_len=16, min_examples=2)).build(
            "n", list(range(64)), contrast=True
        )
        if r.status == "ok"
    ]
    assert len(records) > 10
    text = TokenText(lm.tokenizer)
    assert "\ufffd" in "".join(text(list(range(2, len(lm.tokenizer)))))  # lone bytes of multi-byte characters
    for record in records:
        for explainer in LLM_EXPLAINERS:  # the intervention explainer steers a model: tested in test_intervention
            prompt = explain_prompt(explainer_view(record), explainer, text)
            assert all(isinstance(m["content"], str) and m["content"] for m in prompt)
        for scorer in (DetectionScorer(None, lm.tokenizer), FuzzingScorer(None, lm.tokenizer)):
            cases = scorer.cases(scored_view(record), np.random.default_rng(0))
            assert len(cases) == len(record.test) + len(record.negatives) + len(record.hard_negatives)
            assert all(isinstance(c, str) and "\n" not in c for c, _ in cases)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(), st.lists(st.sampled_from([0.0, 0.0, 0.5, 3.0]), min_size=1, max_size=64))
def test_highlighting_any_unicode_keeps_the_text_and_marks_each_active_run(smollm_tokenizer, content, acts):
    ids = smollm_tokenizer(content, add_special_tokens=False)["input_ids"][:64] or [0]
    pieces = TokenText(smollm_tokenizer)(ids)
    assume("<" not in "".join(pieces) and ">" not in "".join(pieces))
    acts = (acts * len(ids))[: len(ids)]
    marked = highlight(pieces, acts)
    runs = sum(1 for i, a in enumerate(acts) if a > 0 and (i == 0 or acts[i - 1] <= 0))
    assert marked.replace("<<", "").replace(">>", "") == "".join(pieces)
    assert marked.count("<<") == marked.count(">>") == runs


def test_a_very_long_document_without_spaces_is_cut_into_windows(smollm_tokenizer, tmp_path):
    doc = tmp_path / "long.txt"
    doc.write_text("".join(string.ascii_letters[i % 52] for i in range(200_000)))
    windows = corpus_windows(CorpusConfig(corpus=str(doc), ctx_len=256, num_tokens=256 * 8), smollm_tokenizer)
    assert windows.shape == (8, 256) and bool((windows[:, 0] == smollm_tokenizer.bos_token_id).all())


@pytest.mark.parametrize(
    "name, data, outcome",
    [
        ("bad-utf8.txt", b"caf\xe9 au lait\n" * 100, None),
        ("bad-utf8.jsonl", b'{"text": "caf\xe9 au lait"}\n' * 100, None),
        ("numbers.jsonl", b'{"text": 42}\n', "the 'text' field holds 42, not text"),
        ("list.jsonl", b"[1, 2]\n", "expected a JSON object"),
        ("empty.txt", b"", "no complete token windows"),
    ],
)
def test_odd_corpus_files_are_read_or_named(smollm_tokenizer, tmp_path, name, data, outcome):
    path = tmp_path / name
    path.write_bytes(data)
    cfg = CorpusConfig(corpus=str(path), ctx_len=8, num_tokens=16)
    if outcome is None:
        assert corpus_windows(cfg, smollm_tokenizer).shape == (2, 8)
    else:
        with pytest.raises(CorpusError, match=outcome):
            corpus_windows(cfg, smollm_tokenizer)
