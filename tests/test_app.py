"""The app's panels as library calls and through gradio_client, on a small real run in a workspace.

The browser drives the same app in test_app_browser.py; here each panel function is checked
against the run's files and the cache, and the served API against the same functions.
"""

import json
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import unicodedata
from contextlib import closing

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from safetensors.torch import load_file

from interp.app import AppConfig, config_from_env, explain_score, explore, intervene, publishing
from interp.app.render import escape, examples_html, tokens_html
from interp.app.session import OpenRun, Runs, build_default_run, run_is_complete
from interp.app.workspace import Workspace, WorkspaceError
from interp.cache import iter_shards, load_stats
from interp.cli import main
from interp.errors import InterpError
from interp.steer_side_by_side import generate_side_by_side
from tests.helpers.app import CODER, INJECTION, RUN, TOKEN, copy_workspace, everything_written, free_port, serve_app
from tests.helpers.hub_server import local_hub
from tests.helpers.openai_server import serving
from tests.helpers.results import explanation_lines

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # gradio_client would report to its makers otherwise


@pytest.fixture(scope="module")
def run(workspace) -> OpenRun:
    return Runs(Workspace(workspace)).get(RUN)


# --------------------------------------------------------------------------- configuration and workspace


def test_configuration_comes_from_the_environment_and_a_space_changes_the_defaults():
    assert config_from_env({}) == AppConfig()
    cfg = config_from_env(
        {"INTERP_WORKSPACE": "/data", "INTERP_PORT": "8000", "INTERP_BUILD_DEMO": "yes", "INTERP_HOST": "0.0.0.0"}
    )
    assert (cfg.workspace, cfg.port, cfg.build_demo, cfg.host, cfg.env_token) == ("/data", 8000, True, "0.0.0.0", True)
    space = config_from_env({"SPACE_ID": "me/interp", "GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "7861"})
    assert (space.build_demo, space.env_token, space.host, space.port) == (True, False, "0.0.0.0", 7861)
    assert config_from_env({"SPACE_ID": "x", "INTERP_ENV_TOKEN": "1"}).env_token is True
    assert config_from_env({"INTERP_LLM_URL": "http://10.0.0.2:8000/v1"}).llm_url == "http://10.0.0.2:8000/v1"
    with pytest.raises(InterpError, match=r"\$INTERP_BUILD_DEMO: Cannot read 'maybe' as yes or no"):
        config_from_env({"INTERP_BUILD_DEMO": "maybe"})
    with pytest.raises(InterpError, match="not a TCP port"):
        config_from_env({"INTERP_PORT": "70000"})


def test_paths_from_the_page_stay_inside_the_workspace(tmp_path):
    root = tmp_path / "ws"
    (root / "runs" / "a" / "cache").mkdir(parents=True)
    (root / "runs" / "a" / "config.json").write_text("{}")
    (root / "runs" / "a" / "cache" / "config.json").write_text("{}")  # inside a run: not another run
    (root / "deep" / "b" / "c" / "d").mkdir(parents=True)
    (root / "deep" / "b" / "c" / "d" / "config.json").write_text("{}")  # deeper than the listing looks
    (tmp_path / "secret").mkdir()
    (root / "escape").symlink_to(tmp_path / "secret")
    ws = Workspace(root)
    assert ws.resolve("runs/a") == root.resolve() / "runs" / "a"
    assert ws.resolve(str(root / "runs")) == root.resolve() / "runs"
    assert ws.runs() == ["runs/a"]
    for bad in ["../secret", "runs/../../secret", str(tmp_path / "secret"), "escape", "escape/x", "/etc/passwd", "~"]:
        with pytest.raises(WorkspaceError, match="outside the workspace"):
            ws.resolve(bad)
    with pytest.raises(WorkspaceError, match="No path given"):
        ws.resolve("  ")
    with pytest.raises(
        WorkspaceError, match=r"There is no run directory 'runs/nope' in the workspace.*the runs here are runs/a"
    ):
        ws.run_dir("runs/nope")
    with pytest.raises(WorkspaceError, match="'deep' is not a run directory"):
        ws.run_dir("deep")
    assert ws.model_source("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert ws.model_source("runs/a") == str(root.resolve() / "runs" / "a")
    for bad in ["../secret", "/etc", "escape"]:
        with pytest.raises(WorkspaceError):
            ws.model_source(bad)
    with pytest.raises(WorkspaceError, match="is not a folder"):
        Workspace(tmp_path / "missing")


def test_rendered_text_is_escaped_and_shows_each_activation():
    html = tokens_html(["<b>", " x", "\n"], [0.0, 2.0, 1.0], top=2.0)
    assert "<b>" not in html and "&lt;b&gt;" in html and "↵" in html
    assert html.count('class="tok on"') == 2 and 'title="2"' in html and 'data-act="1"' in html
    block = examples_html([(INJECTION, [INJECTION], [1.0])], 1.0)
    assert "<script" not in block and "<img" not in block and "${" not in block and "{{" not in block
    assert escape('"q"') == "&quot;q&quot;"


# --------------------------------------------------------------------------- the panels as functions


def words(text: str) -> list[str]:
    """``text``'s words as the run database's full-text index splits them: runs of letters and digits, case and
    accents folded."""
    plain = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return re.findall(r"[^\W_]+", plain.lower())


def holds(text: str, query: str) -> bool:
    """What the latent table's search keeps: ``query``'s words as a phrase in ``text``, its last word a prefix, in
    any case."""
    q, t = words(query), words(text)
    return any(
        t[i : i + len(q) - 1] == q[:-1] and t[i + len(q) - 1].startswith(q[-1]) for i in range(len(t) - len(q) + 1)
    )


def test_the_latent_table_searches_and_sorts_what_the_run_holds(run, workspace):
    table = explore.latent_table(run, CODER)
    lines = [r for r in explanation_lines(workspace / RUN) if r["coder"] == CODER]
    assert table.headers == ["latent", "status", "explanation", "frequency", "embedding"]
    assert [row[0] for row in table.rows] == sorted(r["latent"] for r in lines)
    count = load_stats(workspace / RUN / "cache" / CODER)["count"]
    for latent, status, text, frequency, auroc in table.rows:
        line = next(r for r in lines if r["latent"] == latent)
        assert (status, text) == (line["status"], line["explanation"]) and frequency == count[latent].item() / 2048
        assert auroc == next(
            r["metrics"]["auroc"] for r in run.dir.scores() if r["latent"] == latent and not r["baseline"]
        )
    by_score = explore.latent_table(run, CODER, sort="score: embedding")
    assert [row[4] for row in by_score.rows] == sorted((row[4] for row in table.rows), reverse=True)
    by_freq = explore.latent_table(run, CODER, sort="frequency")
    assert [row[3] for row in by_freq.rows] == sorted((row[3] for row in table.rows), reverse=True)
    word = next(w for row in table.rows for w in words(row[2])[2:] if len(w) > 1)  # a word of a listed token
    found = {}
    for query in (word.upper(), word[:-1], "The TOKENS", "tokens the", "okens"):
        found[query] = [row[0] for row in explore.latent_table(run, CODER, query=query).rows]
        assert found[query] == [row[0] for row in table.rows if holds(row[2], query)], query
    assert found[word.upper()] and set(found[word.upper()]) <= set(found[word[:-1]])  # any case; the last a prefix
    assert found["The TOKENS"] == [row[0] for row in table.rows]  # "The tokens ...": a phrase every one begins with
    assert found["tokens the"] == found["okens"] == []  # the words in another order; not a word's beginning
    assert explore.latent_table(run, CODER, query="no explanation says this").rows == []
    assert explore.sort_choices(run) == ["latent", "frequency", "score: embedding"]
    with pytest.raises(InterpError, match="Cannot sort by 'score: fuzzing': use latent, frequency, score: embedding"):
        explore.latent_table(run, CODER, sort="score: fuzzing")
    with pytest.raises(InterpError, match="has no coder 'model.layers.9'"):
        explore.latent_table(run, "model.layers.9")


def test_a_latent_view_shows_its_record_from_the_cache(run, workspace):
    latent = explore.latent_table(run, CODER).rows[0][0]
    view = explore.latent_view(run, CODER, latent)
    record = view.record
    tokens = load_file(workspace / RUN / "cache" / "tokens.safetensors")["tokens"]
    bos = run.model()[0].tokenizer.bos_token_id
    fired = {}
    for meta, t in iter_shards(workspace / RUN / "cache" / CODER):
        keep = t.latent == latent
        for tok, act in zip(
            (t.token[keep].long() + meta.first_window * meta.ctx_len).tolist(),
            t.activation[keep].tolist(),
            strict=True,
        ):
            if tokens.flatten()[tok] != bos:
                fired[tok] = act
    assert record.stats.count == len(fired) and record.stats.max == pytest.approx(max(fired.values()))
    assert sum(record.stats.histogram) == len(fired)
    assert f"latent {latent}" in view.stats and f"fires on {len(fired):,} tokens" in view.stats
    assert view.top.count('class="example"') == len(record.top) and view.top.count('class="tok on"') == sum(
        sum(a > 0 for a in ex.acts) for ex in record.top
    )
    strongest = f'title="{record.top[0].max_act:.4g}"'
    assert strongest in view.top  # hovering the strongest token shows its value
    assert view.quantiles.count('class="example"') == len(record.test)
    assert (
        len(view.promoted.rows) == run.cfg.records.n_logit_tokens
        and view.promoted.rows[0][2] >= view.promoted.rows[-1][2]
    )
    assert view.explanations.rows[0][:2] == ["tokens", "ok"]
    (scorer, explainer, metric, value, baseline, *_rest) = view.scores.rows[0]
    assert (scorer, explainer, metric) == ("embedding", "tokens", "auroc") and 0 <= value <= 1 and 0 <= baseline <= 1
    assert view.histogram.axes[0].get_xlabel() == "activation"
    n = run.coder(CODER).num_latents
    with pytest.raises(InterpError, match=f"Latent {n} does not exist: .* has {n} latents"):
        explore.latent_view(run, CODER, n)


def test_test_my_text_finds_the_latents_the_cache_found_on_the_same_tokens(run, workspace):
    tokens = load_file(workspace / RUN / "cache" / "tokens.safetensors")["tokens"]
    window = tokens[3].tolist()
    tokenizer = run.model()[0].tokenizer
    text = tokenizer.decode(window[1:])
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == window[1:]  # the builtin text round-trips
    cached = {}
    for meta, t in iter_shards(workspace / RUN / "cache" / CODER):
        position = t.token.long() + meta.first_window * meta.ctx_len - 3 * 32
        keep = (position >= 1) & (position < 32)
        for p, latent, act in zip(
            position[keep].tolist(), t.latent[keep].tolist(), t.activation[keep].tolist(), strict=True
        ):
            cached[(p - 1, latent)] = act
    strongest = max(cached, key=cached.get)
    shown = explore.text_latents(run, CODER, text, latent=strongest[1])
    first = shown.latents.rows[0]
    assert first[0] == strongest[1] and first[1] == pytest.approx(cached[strongest], rel=1e-4, abs=1e-6)
    assert first[2] == sum(1 for (_, latent) in cached if latent == strongest[1])
    acts = [float(a) for a in re.findall(r'data-act="([^"]+)"', shown.highlight)]
    assert acts == pytest.approx(
        [cached[(p, strongest[1])] for p in range(31) if (p, strongest[1]) in cached], rel=1e-3
    )
    with pytest.raises(InterpError, match="Type some text"):
        explore.text_latents(run, CODER, "")
    with pytest.raises(InterpError, match="limit is 256"):
        explore.text_latents(run, CODER, "word " * 300)


def test_explain_one_latent_or_a_selection_with_a_server_and_find_it_in_the_run(tmp_path, workspace):
    ws = copy_workspace(workspace, tmp_path)
    run = Runs(Workspace(ws)).get(RUN)
    srv = serving()
    srv.reply = lambda content: "Thinking.\n[EXPLANATION]: cats and dogs"
    try:
        llm = explain_score.llm_spec(Workspace(ws), "url", url=srv.base_url, server_model="test-model")
        summary, table = explain_score.explain(run, CODER, "default", llm, "7", progress=False)
        assert table.rows == [[7, "ok", "cats and dogs", "test-model", ""]] and summary["explanations"] == {"ok": 1}
        assert len(srv.requests) == 1 and "<<" in json.loads(srv.requests[0]["body"])["messages"][-1]["content"]
        summary, table = explain_score.explain(run, CODER, "default", llm, "7,9,11", progress=False)
        assert [row[0] for row in table.rows] == [7, 9, 11] and len(srv.requests) == 3  # 7 was done already
        lines = [r for r in explanation_lines(ws / RUN) if r["explainer"] == "default"]
        assert sorted(r["latent"] for r in lines) == [7, 9, 11] and {r["explanation"] for r in lines} == {
            "cats and dogs"
        }
        assert explain_score.explainers(run) == ["tokens", "default"]
        assert [row[0] for row in explore.latent_table(run, CODER, query="DOGS").rows] == [7, 9, 11]
    finally:
        srv.shutdown()
        srv.server_close()
    with pytest.raises(InterpError, match="not an OpenAI-compatible base URL"):
        explain_score.llm_spec(Workspace(ws), "url", url="file:///etc/passwd", server_model="m")
    with pytest.raises(InterpError, match="Name the model"):
        explain_score.llm_spec(Workspace(ws), "url", url=srv.base_url)
    with pytest.raises(WorkspaceError, match="outside the workspace"):
        explain_score.llm_spec(Workspace(ws), "local", model="../../elsewhere")
    assert explain_score.llm_spec(Workspace(ws), "local") == explain_score.LLMChoice("local", None)
    assert explain_score.llm_spec(Workspace(ws), "local", model="models/tiny-llama").llm == "local:" + str(
        ws.resolve() / "models/tiny-llama"
    )
    with pytest.raises(InterpError, match="Latents \\[128\\] do not exist: this coder has 128 latents"):
        explain_score.explain(run, CODER, "tokens", explain_score.LLMChoice("local"), "128", progress=False)


def test_the_owners_key_goes_only_to_the_owners_server(tmp_path, workspace, monkeypatch):
    ws = copy_workspace(workspace, tmp_path)
    run = Runs(Workspace(ws)).get(RUN)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-owner-secret")
    owners, visitors = serving(), serving()
    for srv in (owners, visitors):
        srv.reply = lambda content: "[EXPLANATION]: cats"
    try:
        keyed = frozenset([owners.base_url + "/"])
        for srv, latent in ((owners, "7"), (visitors, "9")):
            llm = explain_score.llm_spec(Workspace(ws), "url", url=srv.base_url, server_model="m", keyed_urls=keyed)
            explain_score.explain(run, CODER, "default", llm, latent, progress=False)
        anyone = explain_score.llm_spec(
            Workspace(ws), "url", url=visitors.base_url, server_model="m"
        )  # env_token on: the owner's own machine
        explain_score.explain(run, CODER, "default", anyone, "11", progress=False)
    finally:
        for srv in (owners, visitors):
            srv.shutdown()
            srv.server_close()
    sent = [[r["headers"].get("Authorization") for r in srv.requests] for srv in (owners, visitors)]
    assert sent == [["Bearer sk-owner-secret"], [None, "Bearer sk-owner-secret"]]


def test_a_model_named_in_the_page_never_runs_its_own_code(tmp_path, workspace):
    ws = copy_workspace(workspace, tmp_path)
    evil = ws / "models" / "evil"
    shutil.copytree(ws / "models" / "tiny-llama", evil, ignore=shutil.ignore_patterns("*.safetensors", "config.json"))
    (evil / "config.json").write_text(
        json.dumps(
            {
                "model_type": "evil-llama",
                "auto_map": {
                    "AutoConfig": "configuration_evil.EvilConfig",
                    "AutoModelForCausalLM": "modeling_evil.EvilModel",
                },
            }
        )
    )
    code = f"open({str(tmp_path / 'ran')!r}, 'w').write('remote code ran')\n"
    (evil / "configuration_evil.py").write_text(code)
    (evil / "modeling_evil.py").write_text(code)
    run = Runs(Workspace(ws)).get(RUN)
    llm = explain_score.llm_spec(Workspace(ws), "local", model="models/evil")
    with pytest.raises(InterpError, match="contains custom code"):
        explain_score.explain(run, CODER, "default", llm, "7", progress=False)
    assert not (tmp_path / "ran").exists()


def test_score_shows_every_examples_outcome_and_the_plots(tmp_path, workspace):
    ws = copy_workspace(workspace, tmp_path)
    with closing(sqlite3.connect(ws / RUN / "results.sqlite")) as db, db:  # score again, here
        db.execute("DELETE FROM score_examples")
        db.execute("DELETE FROM scores")
    run = Runs(Workspace(ws)).get(RUN)
    assert run.dir.scores() == [] and run.dir.explanations()
    summary = explain_score.score(
        run, CODER, "tokens", ["embedding"], "logprob", explain_score.LLMChoice("local"), progress=False
    )
    assert summary.rows[0][:2] == ["embedding", "auroc"] and summary.rows[0][-1] == 4
    assert {caption for _, caption in explain_score.plots(run, CODER)} >= {
        f"scores_{CODER}_embedding",
        f"frequency_{CODER}",
    }
    latent = explore.latent_table(run, CODER).rows[0][0]
    o = explain_score.outcomes(run, CODER, latent, "embedding", "tokens")
    row = next(
        r for r in run.dir.scores() if r["latent"] == latent and r["scorer"] == "embedding" and not r["baseline"]
    )
    assert len(o.table.rows) == len(row["examples"]) == o.right + o.wrong
    positives = sum(e["label"] for e in row["examples"])
    called = [
        r for r in o.table.rows if (r[0] == "right") == r[3]
    ]  # called positive: right on a positive, wrong on a negative
    assert len(called) == positives  # ranking scorers call the top P examples positive
    top_score = min(r[5] for r in called)
    assert all(r[5] <= top_score for r in o.table.rows if r not in called)
    assert all(r[6] for r in o.table.rows) and "auroc" in o.metrics
    with pytest.raises(InterpError, match="No detection score"):
        explain_score.outcomes(run, CODER, latent, "detection", "tokens")
    with pytest.raises(InterpError, match="Choose at least one scorer"):
        explain_score.score(run, CODER, "tokens", [], "logprob", explain_score.LLMChoice("local"), progress=False)


def test_verdicts_use_answers_when_there_are_answers_and_rank_otherwise():
    answers = [
        {"label": True, "prediction": True, "score": None},
        {"label": False, "prediction": True, "score": None},
        {"label": True, "prediction": None, "score": None},
    ]
    assert explain_score._verdicts(answers) == [True, False, None]
    ranked = [
        {"label": True, "prediction": None, "score": 0.9},
        {"label": False, "prediction": None, "score": 0.8},
        {"label": True, "prediction": None, "score": 0.1},
        {"label": False, "prediction": None, "score": 0.0},
    ]
    assert explain_score._verdicts(ranked) == [True, False, False, True]


def test_intervene_is_the_steering_library_side_by_side(run):
    lm, _ = run.model()
    s = intervene.steer_prompt(run, CODER, 5, "The king said", mode="add", strength=3.0, max_new_tokens=6)
    direct = generate_side_by_side(
        lm, run.coder(CODER), "The king said", 5, mode="add", strength=3.0, max_new_tokens=6
    )
    assert (s.result.clean, s.result.steered, s.result.kl) == (direct.clean, direct.steered, direct.kl)
    assert [row[1] for row in s.changes.rows] == [c.token_id for c in direct.top_token_changes]
    assert "add 3" in s.summary and s.result.kl > 0
    zero = intervene.steer_prompt(run, CODER, 5, "The king said", mode="add", strength=0.0, max_new_tokens=6)
    assert zero.result.clean == zero.result.steered and zero.result.kl == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(InterpError, match="Ask for 1 to 128 new tokens"):
        intervene.steer_prompt(run, CODER, 5, "x", strength=1.0, max_new_tokens=0)
    with pytest.raises(InterpError, match="either a strength or a target KL"):
        intervene.steer_prompt(run, CODER, 5, "x", max_new_tokens=4)
    with pytest.raises(InterpError, match="Latent 128 does not exist"):
        intervene.steer_prompt(run, CODER, 128, "x", strength=1.0, max_new_tokens=4)


def test_the_default_run_is_built_only_when_it_is_not_complete(workspace, tmp_path):
    ws = Workspace(workspace)
    before = {p: p.stat().st_mtime_ns for p in (workspace / RUN).rglob("*") if p.is_file()}
    assert run_is_complete(workspace / RUN)
    assert build_default_run(ws, RUN, progress=False) == workspace.resolve() / RUN  # finished: nothing is run
    assert {p: p.stat().st_mtime_ns for p in (workspace / RUN).rglob("*") if p.is_file()} == before
    assert not run_is_complete(tmp_path / "never-made")
    with pytest.raises(WorkspaceError, match="outside the workspace"):
        build_default_run(ws, "../elsewhere", progress=False)


def test_publish_previews_and_pushes_with_a_typed_token_that_goes_nowhere_else(
    tmp_path, workspace, monkeypatch, caplog, capfd
):
    ws = copy_workspace(workspace, tmp_path)
    run = Runs(Workspace(ws)).get(RUN)
    table, card = publishing.preview_table(run)
    assert [row[1] for row in table.rows] == sorted(
        r["latent"] for r in run.dir.explanations()
    ) and "auroc" in table.rows[0][7]
    assert card.startswith("---") and "embedding" in card
    caplog.set_level(logging.DEBUG)
    with local_hub(monkeypatch, tmp_path, TOKEN) as hub:
        with pytest.raises(InterpError, match="Type a Hugging Face write token"):
            publishing.push(run, "me/set", "", env_token=False)
        with pytest.raises(InterpError, match="owner/name"):
            publishing.push(run, "no-owner", TOKEN)
        with pytest.raises(InterpError) as refused:
            publishing.push(run, "me/set", "hf_wrong" + TOKEN[8:], progress=False)
        assert "hf_wrong" not in str(refused.value)
        result = publishing.push(run, "me/set", TOKEN, private=True, progress=False)
        assert result.private and hub.repos["me/set"].private and result.rows == {CODER: 4}
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        again = publishing.push(run, "me/set", "", env_token=True, private=True, progress=False)
        assert again.commit_oid == hub.repos["me/set"].head.oid
    out = capfd.readouterr()
    for place in (caplog.text, out.out, out.err, repr(result)):
        assert TOKEN not in place and TOKEN[3:] not in place
    assert TOKEN.encode() not in everything_written(ws)


# --------------------------------------------------------------------------- the served app, through gradio_client


@pytest.fixture(scope="module")
def served(workspace, tmp_path_factory):
    """The app serving a copy of the workspace on 127.0.0.1, and a gradio_client Client to it."""
    with serve_app(copy_workspace(workspace, tmp_path_factory.mktemp("served"))) as page:
        yield page, Client(page.local_url, verbose=False)


def test_the_api_serves_every_panel(served, run):
    page, client = served
    assert page.local_url.startswith("http://127.0.0.1:")
    endpoints = set(client.view_api(return_format="dict")["named_endpoints"])
    assert {
        "/open_run",
        "/latents",
        "/latent",
        "/test_text",
        "/explain",
        "/score",
        "/outcomes",
        "/steer",
        "/preview",
        "/publish",
    } <= endpoints
    status, coder, *_ = client.predict(RUN, api_name="/open_run")
    assert f"**{RUN}**" in status and "explanations (tokens): 4 ok" in status and coder["value"] == CODER
    table = client.predict(RUN, CODER, "", "latent", api_name="/latents")
    assert [row[0] for row in table["data"]] == [row[0] for row in explore.latent_table(run, CODER).rows]
    latent = table["data"][0][0]
    stats, _hist, explanations, scores, top, quantiles, promoted, _suppressed = client.predict(
        RUN, CODER, latent, api_name="/latent"
    )
    view = explore.latent_view(run, CODER, latent)
    assert stats == view.stats and top == view.top and quantiles == view.quantiles
    assert (
        explanations["data"][0][:3] == view.explanations.rows[0][:3]
        and promoted["data"][0][1] == view.promoted.rows[0][1]
    )
    highlight, fired = client.predict(RUN, CODER, "To be or not to be", latent, api_name="/test_text")
    assert fired["data"] and 'class="example"' in highlight
    summary, clean, steered, changes = client.predict(
        RUN, CODER, latent, "The king said", "add", "strength", 3.0, 6, api_name="/steer"
    )
    direct = intervene.steer_prompt(run, CODER, latent, "The king said", strength=3.0, max_new_tokens=6)
    assert (clean, steered) == (direct.result.clean, direct.result.steered) and "add 3" in summary
    outcome_md, outcomes = client.predict(RUN, CODER, latent, "embedding", "tokens", api_name="/outcomes")
    assert "right" in outcome_md and {row[0] for row in outcomes["data"]} <= {"right", "wrong", "failed"}


def test_bad_paths_and_missing_runs_are_clear_errors_on_the_api(served):
    _, client = served
    with pytest.raises(AppError, match="outside the workspace"):
        client.predict("../../etc", api_name="/open_run")
    with pytest.raises(AppError, match="outside the workspace"):
        client.predict("/etc", CODER, 0, api_name="/latent")
    with pytest.raises(AppError, match="There is no run directory 'runs/missing'.*runs/small"):
        client.predict("runs/missing", api_name="/open_run")
    with pytest.raises(AppError, match="Latent 9999 does not exist"):
        client.predict(RUN, CODER, 9999, api_name="/latent")


def test_long_work_is_queued_with_progress_and_browsing_stays_served(served):
    """A slow explanation job runs, reporting progress, while another user's requests are answered at once."""
    _, client = served
    srv = serving()
    srv.script = ["sleep"] * 8
    srv.sleep = 4.0
    srv.reply = lambda content: "[EXPLANATION]: slow answers"
    try:
        job = client.submit(
            RUN, CODER, 0, "default", "a selection", "20-21", "url", "", srv.base_url, "m", api_name="/explain"
        )
        deadline = time.time() + 30
        while not srv.requests and time.time() < deadline:
            time.sleep(0.05)
        assert srv.requests, "the explain job never asked the server"
        other = Client(served[0].local_url, verbose=False)
        start = time.perf_counter()
        table = other.predict(RUN, CODER, "", "latent", api_name="/latents")
        answered = time.perf_counter() - start
        assert table["data"] and answered < 2.0 and not job.done()
        progress = []
        while not job.done():
            progress += [(p.desc, p.index, p.length) for p in job.status().progress_data or []]
            time.sleep(0.1)
        assert ("explaining (default)", 0, 2) in progress  # the library's tqdm bar, shown by Gradio
        status, explained, _ = job.result(timeout=60)
        assert "done" in status and [row[:3] for row in explained["data"]] == [
            [20, "ok", "slow answers"],
            [21, "ok", "slow answers"],
        ]
    finally:
        srv.shutdown()
        srv.server_close()


# --------------------------------------------------------------------------- command line


def test_interp_app_reports_bad_settings_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["app", "--workspace", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: The workspace") and "\n" not in err
    assert main(["app", "../outside", "--workspace", str(tmp_path)]) == 2
    assert "outside the workspace" in capsys.readouterr().err
    monkeypatch.setenv("INTERP_PORT", "zero")
    assert main(["app"]) == 2
    assert "$INTERP_PORT: Cannot read 'zero' as a whole number" in capsys.readouterr().err


@pytest.mark.slow  # a fresh Python process
def test_python_app_py_serves_the_run_on_localhost_with_settings_from_the_environment(workspace, tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_TEMP_DIR": str(tmp_path / "gradio"),
        "INTERP_PORT": str(port),
        "INTERP_WORKSPACE": str(workspace),
    }
    proc = subprocess.Popen(
        [sys.executable, "app.py", RUN], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "Running on local URL" in line or len(lines) > 200:
                break
        assert f"Running on local URL:  http://127.0.0.1:{port}" in "".join(lines), "".join(lines)
        status, coder, *_ = Client(f"http://127.0.0.1:{port}/", verbose=False).predict(RUN, api_name="/open_run")
        assert f"**{RUN}**" in status and coder["value"] == CODER
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow  # a fresh Python process
def test_app_py_is_the_interp_app_command():
    out = subprocess.run([sys.executable, "app.py", "--help"], capture_output=True, text=True, check=True).stdout
    assert "usage: interp app" in out and "--workspace" in out and "INTERP_" in out
