"""LLM clients: the HTTP client against a real local server, the response cache, the local model."""

import copy
import json
import math
import socket
import sqlite3
import time

import pytest
import torch
from transformers import Gemma2Config, Gemma2ForCausalLM, GPT2Config, GPT2LMHeadModel

from interp.config import CacheConfig, CoderConfig, CorpusConfig, ExplainConfig, ModelConfig, RunConfig
from interp.errors import CorruptFileError
from interp.llm import (
    CachedClient,
    Completion,
    GenerationParams,
    LLMError,
    OpenAIClient,
    TransformersClient,
    make_client,
)
from interp.llm.local import prefix_chunks
from interp.llm.response_cache import legacy_replies
from interp.models import LoadedModel
from interp.results.db import ResultsDB
from interp.rundir import RunDir
from interp.stages import run_cache, run_explain
from tests.helpers.models import save_tiny_model, tiny_llama
from tests.helpers.openai_server import ScriptedServer, serving
from tests.helpers.pipeline import scripted_reply
from tests.helpers.results import explanation_lines

SECRET = "sk-test-5ecret-do-not-leak"


def user(text: str) -> tuple[dict[str, str], ...]:
    return ({"role": "user", "content": text},)


def client(srv: ScriptedServer, **kw) -> OpenAIClient:
    options = {"concurrency": 4, "timeout": 5, "max_retries": 3, "backoff": 0.01, **kw}
    return OpenAIClient(srv.base_url, "scripted-model", **options)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- OpenAIClient ------------------------------------------------------------------------


def test_replies_come_back_in_order_with_bounded_concurrency(server):
    server.jitter = 0.05
    prompts = [user(f"prompt number {i}") for i in range(24)]
    params = GenerationParams(max_tokens=7, temperature=0.5, top_p=0.9, seed=3)
    replies = client(server).generate(prompts, params)
    assert [r.text for r in replies] == [f"echo: prompt number {i}" for i in range(24)]
    assert all(r.error is None and r.prompt_tokens == 3 and r.completion_tokens == 2 for r in replies)
    assert 2 <= server.max_in_flight <= 4
    sent = json.loads(server.requests[0]["body"])
    assert sent["model"] == "scripted-model" and sent["messages"][0]["role"] == "user"
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"], sent["seed"]) == (7, 0.5, 0.9, 3)


def test_a_started_reply_asks_the_server_to_continue_it(server):
    started = (*user("Name the sea."), {"role": "assistant", "content": "Fires on"})
    client(server).generate([user("Hi"), started], GenerationParams())
    plain, continued = sorted((json.loads(r["body"]) for r in server.requests), key=lambda b: len(b["messages"]))
    assert "continue_final_message" not in plain and "add_generation_prompt" not in plain
    assert continued["continue_final_message"] is True and continued["add_generation_prompt"] is False
    assert continued["messages"][-1] == {"role": "assistant", "content": "Fires on"}


@pytest.mark.parametrize("failures", [["500", "500"], ["429"], ["truncated"], ["sleep"]])
def test_transient_failures_are_retried(server, failures):
    server.script = list(failures)
    [reply] = client(server, timeout=0.25).generate([user("hi")], GenerationParams())
    assert reply == Completion(text="echo: hi", prompt_tokens=1, completion_tokens=2)
    assert len(server.requests) == len(failures) + 1


def test_failure_after_retries_is_recorded_not_raised(server):
    server.fail_contents = {"bad"}
    good, bad = client(server, max_retries=2).generate([user("good"), user("bad")], GenerationParams())
    assert good.text == "echo: good" and good.error is None
    assert bad.text == "" and "HTTP 500" in bad.error and "3 tries" in bad.error
    assert sum('"bad"' in r["body"] for r in server.requests) == 3


def test_a_client_error_is_not_retried(server):
    server.script = ["400"]
    [reply] = client(server).generate([user("hi")], GenerationParams())
    assert reply.error.startswith("HTTP 400") and len(server.requests) == 1


def test_a_down_server_raises_quickly():
    url = f"http://127.0.0.1:{free_port()}/v1"
    down = OpenAIClient(url, "m", concurrency=4, max_retries=2, backoff=0.01)
    start = time.monotonic()
    with pytest.raises(LLMError, match=f"cannot reach {url}: is the server running"):
        down.generate([user(str(i)) for i in range(50)], GenerationParams())
    with pytest.raises(LLMError, match="cannot reach"):
        down.answer_logprobs([user("q")], ["Yes"])
    assert time.monotonic() - start < 3
    assert down.generate([], GenerationParams()) == []


def test_a_server_that_dies_mid_batch_fails_the_rest_at_once_and_a_new_client_asks_again():
    srv = serving()
    srv.script = ["ok"] * 6 + ["die"]
    dying = OpenAIClient(srv.base_url, "m", concurrency=4)  # the default retries: 5 tries over 7.5 s
    start = time.monotonic()
    replies = dying.generate([user(f"q{i}") for i in range(40)], GenerationParams())
    assert time.monotonic() - start < 2.5  # not ~34 requests x 7.5 s / 4 = a minute
    answered = [r for r in replies if r.error is None]
    assert 6 <= len(answered) <= 12 and all(
        r.text.startswith("echo: q") for r in answered
    )  # and those it was answering
    unreachable = f"the server at {srv.base_url} is unreachable"
    failed = [r.error for r in replies if r.error]
    assert all(unreachable in e or "ConnectionRefusedError" in e for e in failed)
    assert sum(unreachable in e for e in failed) >= 24
    start = time.monotonic()
    [late] = dying.generate([user("late")], GenerationParams())  # recorded, not raised: the server was up once
    assert unreachable in late.error and time.monotonic() - start < 0.1

    back = serving(srv.server_address[1])
    try:
        [reply] = OpenAIClient(back.base_url, "m").generate([user("late")], GenerationParams())
        assert reply.text == "echo: late" and back.base_url == srv.base_url
    finally:
        back.stop()


def test_a_run_whose_server_dies_records_the_rest_as_failed_at_once_and_the_next_command_fills_them_in(
    tmp_path, smollm_tokenizer
):
    srv = serving()
    srv.reply = scripted_reply
    cfg = RunConfig(
        model=ModelConfig(model=str(save_tiny_model(tmp_path / "model", smollm_tokenizer))),
        corpus=CorpusConfig(num_tokens=1024, ctx_len=32),
        coders=CoderConfig(["topk-neurons@model.layers.1.mlp"], neuron_k=4),
        cache=CacheConfig(batch_size=8, shard_windows=8),
        explain=ExplainConfig(llm=srv.base_url, llm_model="scripted", latents="sample:12", explain_batch=4),
    )
    run = tmp_path / "run"
    run_cache(cfg, run, progress=False)
    srv.script = ["ok"] * 4 + ["die"]
    start = time.monotonic()
    run_explain(cfg, run, progress=False)  # the run's own client, with the default retries (5 tries over 7.5 s)
    assert time.monotonic() - start < 5  # records, 4 replies, then failures at once: not 8 x 7.5 s
    rows = explanation_lines(run)
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(rows) == 12 and 4 <= 12 - len(failed) <= 8
    assert all("is unreachable" in r["note"] or "ConnectionRefusedError" in r["note"] for r in failed)

    back = serving(srv.server_address[1])
    back.reply = scripted_reply
    try:
        run_explain(cfg, run, progress=False)
        assert len(back.requests) == len(failed)
        assert {r["latent"]: r["status"] for r in RunDir(run).explanations()} == {r["latent"]: "ok" for r in rows}
    finally:
        back.stop()


def test_the_api_key_travels_only_in_the_authorization_header(server, monkeypatch):
    monkeypatch.setenv("TEST_LLM_KEY", SECRET)
    keyed = client(server, api_key_env="TEST_LLM_KEY")
    server.script = ["400"]
    [rejected] = keyed.generate([user("hi")], GenerationParams())
    [accepted] = keyed.generate([user("hi")], GenerationParams())
    assert accepted.error is None and "Bearer ***" in rejected.error and SECRET not in rejected.error
    for request in server.requests:
        headers = {k.lower(): v for k, v in request["headers"].items()}
        assert headers.pop("authorization") == f"Bearer {SECRET}"
        assert SECRET not in request["body"] + request["path"] + json.dumps(headers)
    assert SECRET not in repr(keyed) + str(keyed) + keyed.model + json.dumps(vars(keyed), default=str)
    down = OpenAIClient(f"http://127.0.0.1:{free_port()}/v1", "m", api_key_env="TEST_LLM_KEY", max_retries=0)
    with pytest.raises(LLMError) as e:
        down.generate([user("hi")], GenerationParams())
    assert SECRET not in str(e.value)
    monkeypatch.delenv("TEST_LLM_KEY")
    keyed.generate([user("hi")], GenerationParams())
    assert "authorization" not in {k.lower() for k in server.requests[-1]["headers"]}


@pytest.mark.parametrize("shape", ["chat", "completions"])
def test_answer_logprobs_are_read_from_the_top_alternatives(server, shape):
    server.logprob_shape = shape
    [scores] = client(server).answer_logprobs([user("Is it?")], ["Yes", "No", "Maybe"])
    assert scores == {"Yes": -0.2, "No": -2.3, "Maybe": -math.inf}
    assert scores.ceiling == -4.0 and scores.value("Maybe") == (-4.0, True) and scores.value("No") == (-2.3, False)
    sent = json.loads(server.requests[0]["body"])
    assert (sent["max_tokens"], sent["logprobs"], sent["top_logprobs"]) == (1, True, 200)


def ranking(named: dict[str, float], fillers: int = 40) -> list[tuple[str, float]]:
    """A whole next-token distribution, best first: ``named`` probabilities, the rest spread evenly
    over filler tokens.
    """
    rest = (1 - sum(named.values())) / fillers
    probs = {**named, **{f"w{k}": rest for k in range(fillers)}}
    return sorted(((t, math.log(p)) for t, p in probs.items()), key=lambda tp: -tp[1])


def test_unlisted_answers_are_bounded_and_a_server_refusing_a_wide_list_gets_20(server):
    server.top = lambda content: ranking({"1": 0.8, "0": 0.001} if "cat" in content else {"1": 0.5, "0": 0.45})
    server.max_top_logprobs = 20  # as OpenAI, and vLLM without --max-logprobs
    llm = client(server, concurrency=1)
    cat, dog = llm.answer_logprobs([user("cat"), user("dog")], ["1", "0"])
    assert [json.loads(r["body"])["top_logprobs"] for r in server.requests] == [200, 20, 20]  # one refusal, then 20
    least, rest = math.log(0.199 / 40), 1 - 0.8 - 19 * 0.199 / 40  # the 20th listed; what the 20 leave
    assert cat["1"] == pytest.approx(math.log(0.8)) and cat["0"] == -math.inf
    assert cat.ceiling == pytest.approx(min(least, math.log(rest))) and math.log(0.001) < cat.ceiling
    assert dog == pytest.approx({"1": math.log(0.5), "0": math.log(0.45)})

    server.max_top_logprobs = None  # a llama.cpp server lists 200: "0" is there
    [wide] = client(server).answer_logprobs([user("cat")], ["1", "0"])
    assert wide == pytest.approx({"1": math.log(0.8), "0": math.log(0.001)})


def test_log_prob_mode_needs_a_server_with_logprobs(server):
    server.logprob_shape = "none"
    with pytest.raises(LLMError, match="needs a server that returns logprobs"):
        client(server).answer_logprobs([user("Is it?")], ["Yes", "No"])


def test_a_failed_logprob_request_gives_an_empty_dict(server):
    server.fail_contents = {"bad"}
    good, bad = client(server, max_retries=0).answer_logprobs([user("good"), user("bad")], ["Yes"])
    assert good == {"Yes": -0.2} and bad == {}


# --- CachedClient ------------------------------------------------------------------------


def test_cache_sends_only_uncached_prompts_and_retries_failures(server, tmp_path):
    db = ResultsDB(tmp_path / "results.sqlite")
    prompts = [user("a"), user("b"), user("c"), user("a")]
    params = GenerationParams(max_tokens=5)
    server.fail_contents = {"b"}
    first = CachedClient(client(server, max_retries=0), db).generate(prompts, params)
    assert [r.text for r in first] == ["echo: a", "", "echo: c", "echo: a"] and first[1].error
    assert len(server.requests) == 3

    server.fail_contents = set()
    second = CachedClient(client(server), ResultsDB(db.path)).generate(prompts, params)  # another process's view
    assert [r.text for r in second] == ["echo: a", "echo: b", "echo: c", "echo: a"]
    assert len(server.requests) == 4 and '"b"' in server.requests[-1]["body"]

    cached = CachedClient(client(server), db)
    assert cached.generate(prompts, params) == second
    assert cached.generate(prompts, GenerationParams(max_tokens=6))[0].text == "echo: a"
    assert len(server.requests) == 4 + 3

    scores = cached.answer_logprobs(prompts[:1], ["Yes", "Maybe"])
    [again] = CachedClient(client(server), ResultsDB(db.path)).answer_logprobs(prompts[:1], ["Yes", "Maybe"])
    assert [again] == scores and again.ceiling == scores[0].ceiling == -4.0
    assert scores == [{"Yes": -0.2, "Maybe": -math.inf}] and len(server.requests) == 8
    with sqlite3.connect(db.path) as con:  # a plain SQLite file: any tool reads it
        assert con.execute("SELECT count(*) FROM replies").fetchone()[0] == len(cached) == 7


def test_a_run_made_before_the_database_has_its_replies_imported_once_and_its_jsonl_left_alone(
    server, tmp_path, caplog
):
    legacy = tmp_path / "llm_cache.jsonl"
    old = CachedClient(client(server), ResultsDB(tmp_path / "old.sqlite"))
    old.generate([user("a"), user("b")], GenerationParams())
    with sqlite3.connect(old.db.path) as con:
        rows = con.execute("SELECT key, method, value FROM replies ORDER BY key").fetchall()
    lines = "".join(json.dumps({"key": k, "method": m, "value": json.loads(v)}) + "\n" for k, m, v in rows)
    legacy.write_text(lines + '{"key": "12ab", "method": "gen')  # as the previous version wrote it, torn at the end
    before = legacy.read_bytes()
    server.requests.clear()
    run = [ResultsDB(tmp_path / "new.sqlite") for _ in range(2)]
    assert run[0].import_once("llm_cache.jsonl", legacy_replies(legacy)) and "torn last line" in caplog.text
    assert not run[1].import_once("llm_cache.jsonl", legacy_replies(legacy))  # once
    assert legacy.read_bytes() == before and run[1].count_replies() == 2
    replies = CachedClient(client(server), run[1]).generate([user("a"), user("b"), user("c")], GenerationParams())
    assert [r.text for r in replies] == ["echo: a", "echo: b", "echo: c"] and len(server.requests) == 1


def test_an_import_cut_short_leaves_nothing_and_is_done_again(server, tmp_path):
    db = ResultsDB(tmp_path / "results.sqlite")

    def killed():
        yield "k1", "generate", {"text": "one"}
        raise KeyboardInterrupt  # the process is stopped mid-import

    with pytest.raises(KeyboardInterrupt):
        db.import_once("llm_cache.jsonl", killed())
    assert db.count_replies() == 0
    assert db.import_once("llm_cache.jsonl", iter([("k1", "generate", {"text": "one"})])) and db.count_replies() == 1


def test_a_process_database_reads_the_runs_and_is_merged_into_it_once(tmp_path):
    run = ResultsDB(tmp_path / "results.sqlite")
    run.add_replies([("a", "generate", {"text": "A"})])
    run.close()  # the run's is not written while a launch's processes read it
    mine = ResultsDB(tmp_path / "results.p1.sqlite", base=run.path)
    assert mine.replies(["a", "b"]) == {"a": {"text": "A"}}
    mine.add_replies([("b", "generate", {"text": "B"}), ("a", "generate", {"text": "A"})])
    mine.close()
    assert run.merge_from([mine.path]) == 1 and not list(tmp_path.glob("results.p1*"))
    twice = ResultsDB(tmp_path / "results.p2.sqlite")
    twice.add_replies([("b", "generate", {"text": "B"})])  # a file merged already, left by a kill before its removal
    twice.close()
    assert run.merge_from([twice.path]) == 0
    assert run.replies(["a", "b", "c"]) == {"a": {"text": "A"}, "b": {"text": "B"}} and run.count_replies() == 2


def test_a_corrupt_legacy_cache_line_is_named(tmp_path):
    path = tmp_path / "llm_cache.jsonl"
    path.write_text("not json\n")
    with pytest.raises(CorruptFileError, match="line 1 is not a cache record"):
        ResultsDB(tmp_path / "results.sqlite").import_once("llm_cache.jsonl", legacy_replies(path))


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_database_is_named(tmp_path, server, damage):
    path = tmp_path / "results.sqlite"
    if damage == "garbage":
        path.write_bytes(b"garbage " * 1000)
    else:
        db = ResultsDB(path)
        db.add_replies([(f"k{i}", "generate", {"text": "x" * 2000}) for i in range(200)])
        db.close()
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CorruptFileError, match="is not a readable results database"):
        CachedClient(client(server), ResultsDB(path)).generate([user(f"k{i}") for i in range(50)], GenerationParams())


# --- make_client -------------------------------------------------------------------------


def test_make_client_reads_specs(server, tmp_path, smollm):
    http = make_client(server.base_url, "scripted-model", concurrency=2)
    assert isinstance(http, OpenAIClient) and http.concurrency == 2 and http.model == "scripted-model"
    cached = make_client(server.base_url, "scripted-model", cache=ResultsDB(tmp_path / "results.sqlite"))
    assert isinstance(cached, CachedClient) and cached.model == "scripted-model"
    local = make_client("local", lm=smollm)
    assert isinstance(local, TransformersClient) and local.model == "embedded"
    with pytest.raises(LLMError, match="needs a model name"):
        make_client(server.base_url)
    with pytest.raises(LLMError, match="Unknown LLM client"):
        make_client("ollama")


# --- TransformersClient ------------------------------------------------------------------

QUESTIONS = [
    "Answer with Yes or No only. Is Paris the capital of France?",
    "Is fire cold? Answer Yes or No.",
    "Hi",
]
EASY = [QUESTIONS[0], "Is fire cold? Reply with one word: Yes or No."]
"""Questions where SmolLM2-135M starts its reply with Yes or No (right or wrong: it says No to Paris)."""


@pytest.fixture
def one_thread():
    """Run torch on one thread: on a busy 2-core machine two threads thrash (20 s instead of 1 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_batched_greedy_generation_equals_one_at_a_time(smollm, one_thread):
    if smollm.model.dtype != torch.float32:
        pytest.skip("padding changes low-precision (CUDA bfloat16) logits enough to flip a greedy token")
    local = TransformersClient(lm=smollm, batch_size=3)
    prompts = [user(q) for q in QUESTIONS]
    params = GenerationParams(max_tokens=6)
    batched = local.generate(prompts, params)
    assert batched == [local.generate([p], params)[0] for p in prompts]
    assert len({r.prompt_tokens for r in batched}) == 3
    assert all(r.text and 0 < r.completion_tokens <= 6 for r in batched)


@pytest.mark.slow
def test_seeded_sampling_is_reproducible(smollm, one_thread):
    local = TransformersClient(lm=smollm)
    params = GenerationParams(max_tokens=4, temperature=1.0, seed=7)
    prompts = [user(q) for q in QUESTIONS[:2]]
    assert local.generate(prompts, params) == local.generate(prompts, params)


@pytest.mark.slow
def test_answer_logprobs_rank_answers_as_greedy_generation_does(smollm, one_thread):
    local = TransformersClient(lm=smollm)
    prompts = [user(q) for q in EASY]
    batched = local.answer_logprobs(prompts, ["Yes", "No", ""])
    replies = local.generate(prompts, GenerationParams(max_tokens=2))
    for scores, reply, prompt in zip(batched, replies, prompts, strict=True):
        assert max(scores, key=scores.get) == reply.text.split()[0].strip(".,!")
        assert scores[""] == -math.inf and -5 < max(scores.values()) < 0
        [alone] = local.answer_logprobs([prompt], ["Yes", "No", ""])
        assert alone == pytest.approx(scores, abs=1e-4 if smollm.model.dtype == torch.float32 else 0.1)


def test_a_started_reply_is_continued_not_closed(smollm_tokenizer, tiny_lm):
    local = TransformersClient(lm=type(tiny_lm)(tiny_lm.model, smollm_tokenizer, "smollm"))
    asked = user("Name the sea.")
    started = (*asked, {"role": "assistant", "content": "Fires on"})
    assert smollm_tokenizer.decode(local.render(started)) == smollm_tokenizer.decode(local.render(asked)) + "Fires on"
    plain = copy.deepcopy(smollm_tokenizer)
    plain.chat_template = None
    local = TransformersClient(lm=type(tiny_lm)(tiny_lm.model, plain, "plain"))
    assert plain.decode(local.render(started)) == "user: Name the sea.\nassistant: Fires on"


def test_prompts_without_a_chat_template_are_rendered_as_role_lines(tiny_lm):
    tokenizer = copy.deepcopy(tiny_lm.tokenizer)
    tokenizer.chat_template = None
    local = TransformersClient(lm=type(tiny_lm)(tiny_lm.model, tokenizer, "plain"))
    prompt = ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"})
    assert tokenizer.decode(local.render(prompt)) == "system: Be brief.\nuser: Hi\nassistant:"
    [reply] = local.generate([prompt], GenerationParams(max_tokens=3))
    assert reply.error is None and reply.completion_tokens <= 3


def tiny_model(arch: str, tokenizer) -> LoadedModel:
    """Architectures whose caches and positions differ: rotary (Llama), sliding-window layers (Gemma
    2), learned positions (GPT-2).
    """
    if arch == "llama":
        return tiny_llama(tokenizer)
    torch.manual_seed(0)
    if arch == "gemma2":
        model = Gemma2ForCausalLM(
            Gemma2Config(
                vocab_size=len(tokenizer),
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=8,
                sliding_window=8,
                max_position_embeddings=256,
            )
        )
    else:
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=256))
    return LoadedModel(model.eval().requires_grad_(False), tokenizer, f"tiny-{arch}")


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gpt2"])
def test_shared_prefixes_run_once_and_change_no_log_prob(arch, smollm_tokenizer):
    lm = tiny_model(arch, smollm_tokenizer)
    local = TransformersClient(lm=lm, batch_size=4)
    system = {"role": "system", "content": "You judge texts against an explanation of a feature. " * 3}
    prompts = [
        (system, {"role": "user", "content": f"Explanation: {e}\nText: {t}"})
        for e in ("the word cat", "numbers in code")
        for t in ("a cat sat", "x = 1 + 2 # sum", "the quick brown fox jumps over the lazy dog", "no")
    ] + [user("short and alone")]
    got = local.answer_logprobs(prompts, ["1", "0", "Yes"])
    rendered = [local.render(p) for p in prompts]
    assert local.forward_tokens < sum(map(len, rendered)) * 0.6  # the system prompt ran once per chunk
    for ids, scores in zip(rendered, got, strict=True):
        with torch.inference_mode():
            logprobs = lm.model(torch.tensor([ids])).logits[0, -1].float().log_softmax(-1)
        for answer, value in scores.items():
            assert math.isclose(value, max(logprobs[t].item() for t in local._first_tokens(answer)), abs_tol=1e-4)


def test_prefix_chunks_share_the_longest_prefix_their_rows_have():
    system = list(range(100, 140))
    rows = [system + [1, 2, 3] + [50 + t] * (1 + t % 3) for t in range(7)]  # one explanation's texts
    rows += [system + [9, 8] + [60 + t] for t in range(5)]  # another's
    rows += [[7, 7, 7], [100, 101, 5]]  # share (almost) nothing with the rest
    chunks = prefix_chunks(rows, size=4)
    assert sorted(i for members, _ in chunks for i in members) == list(range(len(rows)))
    for members, common in chunks:
        assert len(members) <= 4
        assert all(rows[i][:common] == rows[members[0]][:common] for i in members)
        if len(members) > 1:  # the longest shared prefix, and never a prefix of only a few tokens
            assert len({tuple(rows[i][common : common + 1]) for i in members}) > 1 and common >= 40
    assert ([12], 3) in chunks and ([13], 3) in chunks
    assert [len(m) for m, _ in prefix_chunks(rows[:7], size=16)] == [7]
