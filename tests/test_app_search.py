"""The app's explanation search and the pages of its latent table, on the app tests' small real run.

The search goes through the app's own handler (``Handlers.explain``, what the Explain tab's button calls) to the
scripted OpenAI-compatible server and the real embedding judge, so what the tab's controls say is what the explain
stage does; the Explore panel's candidates table is read against the explanation lines of the run's results database;
each page of the latent table against the whole table, and its search against what a word search of the explanations
means.
"""

import json
import os
import time

import gradio as gr
import pytest
from gradio_client import Client

from interp.app import AppConfig, explain_score, explore
from interp.app.handlers import Handlers
from interp.app.session import Runs
from interp.app.workspace import Workspace
from interp.errors import ConfigError
from interp.explain.explainers import Explanation
from interp.rundir import RunDir
from tests.helpers.app import CODER, RUN, copy_workspace, serve_app
from tests.helpers.results import explanation_lines

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # gradio_client would report to its makers otherwise

WORDS = ["cat", "dog", "sun", "king", "sea"]


def explainer_reply(body: dict) -> str:
    """A deterministic explainer whose answer depends on the request's seed, so the candidates differ."""
    return f' the token "{WORDS[body.get("seed", 0) % len(WORDS)]}"'


def explained_latents(ws) -> list[int]:
    """The latents the small run's tokens explainer explained (they fire often enough to have examples)."""
    return sorted(r["latent"] for r in explanation_lines(ws / RUN) if r["status"] == "ok")


def searched_lines(ws, explainer: str = "short") -> dict[int, dict]:
    return {r["latent"]: r for r in explanation_lines(ws / RUN) if r["explainer"] == explainer}


def test_the_explain_tabs_search_reaches_the_explain_stage_and_explore_shows_its_candidates(
    tmp_path, workspace, server
):
    ws = copy_workspace(workspace, tmp_path)
    server.request_reply = explainer_reply
    h = Handlers(AppConfig(workspace=str(ws), run_dir=RUN))
    run = h.runs.get(RUN)
    latents = explained_latents(ws)
    records = {r.latent: r for r in run.builder(CODER).build(CODER, latents)}
    # the judge's AUROC needs validation examples of both kinds; this small run has them for some latents only
    scored = [k for k in latents if records[k].valid and records[k].valid_negatives + records[k].valid_hard_negatives]
    first, second = scored[0], next(k for k in latents if k not in scored)
    untouched = next(k for k in latents if k not in (first, second))
    chosen = f"{first},{second}"
    llm = ["url", "", server.base_url, "scripted"]
    status, table, _ = h.explain(
        RUN, CODER, 0, "short", "a selection", chosen, *llm, "best-of-k", 3, 1, "embedding", 0.5, True, False
    )
    assert "done" in status and "other search settings" not in status
    assert sorted(table["latent"]) == sorted([first, second])
    bodies = [json.loads(r["body"]) for r in server.requests]
    assert len(bodies) == 6  # 3 candidates for each of the 2 latents
    assert [b.get("temperature") for b in bodies].count(
        0.5
    ) == 4  # the first of each latent greedy, the others sampled
    lines = searched_lines(ws)
    assert sorted(lines) == sorted([first, second])
    ok = [c for c in lines[first]["candidates"] if c["status"] == "ok"]
    assert ok and all(c["score"] is not None for c in ok)  # judged on validation
    assert lines[first]["judge"]["validation_score"] == max(c["score"] for c in ok)
    assert all(c["score"] is None for c in lines[second]["candidates"])  # nothing to judge on: the first ok is kept
    for latent, r in lines.items():
        assert r["search"] == {
            "search": "best-of-k",
            "candidates": 3,
            "temperature": 0.5,
            "tokens_candidate": True,
            "judge": "embedding",
            "rounds": 0,
        }
        assert [c["source"] for c in r["candidates"]] == ["explainer"] * 3 + ["tokens"]
        shown = explore.candidates_table(run, CODER, latent)
        assert shown.headers == explore.CANDIDATE_HEADERS
        assert [row[:5] for row in shown.rows] == [
            ["short", c["round"], c["source"], c["text"], c["score"]] for c in r["candidates"]
        ]
        assert {row[5] for row in shown.rows} == {"embedding (auroc)"}
        assert [row[6] for row in shown.rows] == [c["status"] for c in r["candidates"]]
        kept = [row for row in shown.rows if row[7] == "yes"]
        assert len(kept) == 1 and kept[0][3] == r["explanation"] and kept[0][4] == r["judge"]["validation_score"]
        assert explore.latent_view(run, CODER, latent).candidates == shown
        update = h.candidates(RUN, CODER, latent)
        assert update.visible is True and len(update.value["data"]) == 4
    assert explore.candidates_table(run, CODER, untouched).rows == []  # explained by tokens alone: nothing searched
    hidden = h.candidates(RUN, CODER, untouched)
    assert hidden.visible is False and hidden.value["data"] in ([], [[]])

    # Another search of the same latents keeps them, and says so; "Explain again" redoes them with the new settings
    server.requests.clear()
    status, *_ = h.explain(RUN, CODER, 0, "short", "a selection", chosen, *llm, "refine", 2, 1, "embedding", 0.5)
    assert "2 of the chosen latents kept explanations made with other search settings" in status
    assert server.requests == []
    h.explain(RUN, CODER, 0, "short", "a selection", chosen, *llm, "refine", 2, 1, "embedding", 0.5, False, True)
    for r in searched_lines(ws).values():
        assert r["search"]["search"] == "refine" and r["search"]["rounds"] == 1 and r["search"]["candidates"] == 2
        assert [c["round"] for c in r["candidates"]][:2] == [0, 0] and {c["round"] for c in r["candidates"]} <= {0, 1}
    refined = [json.loads(r["body"])["messages"][-2]["content"] for r in server.requests]
    assert refined and all("Your explanation was:" in m for m in refined)  # round 0 came from the response cache
    assert any(c["round"] == 1 for c in searched_lines(ws)[first]["candidates"])


def test_the_search_settings_are_checked_as_the_cli_checks_them(tmp_path, workspace):
    ws = copy_workspace(workspace, tmp_path)
    run = Runs(Workspace(ws)).get(RUN)
    h = Handlers(AppConfig(workspace=str(ws), run_dir=RUN))
    tokens = ["tokens", "this latent", "", "local", "", "", ""]
    for search, message in (
        (["best-of-k", 0], r"explain\.candidates \(--candidates\) must be at least 1, not 0"),
        (["refine", 2, -1], r"explain\.rounds \(--rounds\) must be at least 0, not -1"),
        (["best-of-k", 2, 1, "oracle"], r"explain\.judge \(--judge\) must be one of embedding, surprisal"),
        (["best-of-k", 2, 1, "embedding", -0.5], r"explain\.temperature \(--temperature\) must be at least 0"),
        (["best-of-3"], "Unknown search 'best-of-3': use none, best-of-k, refine"),
        (["best-of-k", 2.5], "'2.5' is not a whole number: type how many candidates per round"),
        (["best-of-k", 10**6], "1,000,000 candidates per round is more than the app runs"),
        (["refine", 2, 100], "100 refinement rounds is more than the app runs"),
        (["best-of-k", 2, 1, "embedding", "warm"], "'warm' is not a temperature"),
    ):
        with pytest.raises(gr.Error, match=message):
            h.explain(RUN, CODER, 0, *tokens, *search)
    with pytest.raises(ConfigError, match="must be at least 1"):
        explain_score.explain(
            run, CODER, "tokens", explain_score.LLMChoice("local"), "0", search=explain_score.SearchChoice("refine", 0)
        )
    assert explain_score.search_spec() == explain_score.SearchChoice()
    assert explanation_lines(ws / RUN) == explanation_lines(workspace / RUN)  # refused: not a line written


def write_tokens_lines(ws, latents, text=lambda latent: f'"w{latent % 5}"') -> None:
    """Tokens-explainer lines for ``latents``, as ``interp explain --explainer tokens`` writes them."""
    lines = [Explanation(CODER, latent, "tokens", text(latent), "ok").to_dict() for latent in latents]
    RunDir(ws / RUN).add_explanations(lines)


def test_the_latent_table_sends_one_page_with_the_search_and_sort_applied_first(tmp_path, workspace):
    ws = copy_workspace(workspace, tmp_path)
    write_tokens_lines(ws, range(128))  # every latent of the coder, 4 of them replacing their explanation
    run = Runs(Workspace(ws)).get(RUN)
    whole = explore.latent_table(run, CODER)
    assert len(whole.rows) == 128 and explore.PAGE_SIZE == 100
    first = explore.latent_page(run, CODER)
    assert (first.page, first.pages, first.total, first.line()) == (1, 2, 128, "page 1 of 2 (128 latents)")
    assert first.table == explore.Table(whole.headers, whole.rows[:100])
    last = explore.latent_page(run, CODER, page=2)
    assert last.table.rows == whole.rows[100:] and len(last.table.rows) == 28
    assert explore.latent_page(run, CODER, page=9).page == 2 and explore.latent_page(run, CODER, page=-3).page == 1
    matching = [row for row in whole.rows if row[2] == '"w3"']
    assert len(matching) == 25
    pages = [explore.latent_page(run, CODER, query="W3", page=p, page_size=10) for p in (1, 2, 3)]
    assert [p.line() for p in pages] == [f"page {p} of 3 (25 latents)" for p in (1, 2, 3)]
    assert [row for p in pages for row in p.table.rows] == matching and len(pages[-1].table.rows) == 5
    by_frequency = explore.latent_page(run, CODER, sort="frequency", page_size=10)
    assert by_frequency.table.rows == explore.latent_table(run, CODER, sort="frequency").rows[:10]
    nothing = explore.latent_page(run, CODER, query="no explanation says this")
    assert (nothing.table.rows, nothing.line()) == ([], "page 1 of 1 (0 latents)")

    # the handlers: the page and where it stands, previous and next, and the run opening on page 1
    h = Handlers(AppConfig(workspace=str(ws), run_dir=RUN))
    table, shown = h.latents(RUN, CODER, "", "latent", 2)
    assert len(table) == 28 and shown == {"line": "page 2 of 2 (128 latents)", "page": 2}
    assert h.show_page(shown) == ("page 2 of 2 (128 latents)", 2)
    assert h.next_page(RUN, CODER, "", "latent", 2)[1]["page"] == 2
    table, shown = h.previous_page(RUN, CODER, "", "latent", 2)
    assert list(table["latent"]) == [row[0] for row in whole.rows[:100]] and shown["page"] == 1
    assert h.latents(RUN, CODER, "w3", "latent")[1] == {"line": "page 1 of 1 (25 latents)", "page": 1}
    opened = h.open_run(RUN)
    assert len(opened[4]) == 100 and opened[7:] == ("page 1 of 2 (128 latents)", 1)
    with pytest.raises(gr.Error, match="'two' is not a page number"):
        h.latents(RUN, CODER, "", "latent", "two")


SEARCHED = {
    0: "cats and dogs",
    1: "Dogs, and CATS",
    2: "hotdogs on a stand",
    3: "the dog days",
    4: '"w3" "x5"',
    5: "C++ templates",
    6: "Café au lait",
}
"""Explanations of the first latents, each with something a word search must find, or must not."""


def test_the_search_finds_the_words_as_a_phrase_its_last_word_a_prefix_in_any_case(tmp_path, workspace):
    ws = copy_workspace(workspace, tmp_path)
    write_tokens_lines(ws, range(128), text=lambda latent: SEARCHED.get(latent, "nothing here"))
    run = Runs(Workspace(ws)).get(RUN)

    def found(query: str) -> list[int]:
        return [row[0] for row in explore.latent_table(run, CODER, query=query).rows]

    assert found("DOGS") == [0, 1]  # a word, in any case; not inside another word (hotdogs)
    assert found("dog") == [0, 1, 3]  # the last word a prefix: dog, dogs
    assert found("og") == found("otdogs") == []  # no word begins so
    assert found("hot") == [2]
    assert found("and cats") == found("AND ca") == [1]  # the words as a phrase, in their order
    assert found("cats dogs") == []  # not side by side anywhere
    assert found("  dogs   AND  ") == [1]  # spaces between the words count as one
    assert found('"w3" "x5"') == found("w3 x") == [4]  # quotes are punctuation, never search syntax
    assert found("c++ TEMP") == [5]  # punctuation between words is no part of them: "c", "temp"
    assert found("++") == [5] and found(",") == [1]  # a query of punctuation alone is looked for as it is written
    assert found("cafe") == found("CAFÉ") == [6]  # accents and case folded alike
    assert found("no explanation says this") == []
    assert found("") == found("   ") == list(range(128))
    assert explore.latent_page(run, CODER, query="dog", page_size=2).line() == "page 1 of 2 (3 latents)"


def test_fifty_thousand_explained_latents_send_one_page_and_turning_it_recomputes_nothing(tmp_path, workspace):
    ws = copy_workspace(workspace, tmp_path)
    write_tokens_lines(ws, range(50_000), text=lambda latent: f'"w{latent % 7}" "x{latent % 11}"')
    run = Runs(Workspace(ws)).get(RUN)
    start = time.perf_counter()
    first = explore.latent_page(run, CODER)
    built = time.perf_counter() - start
    assert (len(first.table.rows), first.line()) == (100, "page 1 of 500 (50,000 latents)")
    assert [row[0] for row in first.table.rows] == list(range(100))
    start = time.perf_counter()
    later = explore.latent_page(run, CODER, page=500)
    turned = time.perf_counter() - start
    assert [row[0] for row in later.table.rows] == list(range(49_900, 50_000))
    run.derived(("latent_order", CODER, "", "latent"), lambda: pytest.fail("the order was computed again"))
    start = time.perf_counter()
    searched = explore.latent_page(run, CODER, query='"w3" "x5"')
    queried = time.perf_counter() - start
    assert searched.total == len([i for i in range(50_000) if i % 7 == 3 and i % 11 == 5])
    write_tokens_lines(ws, [50_000])  # a new line: the order is computed again with it
    assert explore.latent_page(run, CODER).total == 50_001
    print(
        f"\n50,000 latents: first page {built:.2f} s, page 500 {turned * 1000:.1f} ms, a search {queried:.2f} s "
        f"(load average {open('/proc/loadavg').read().split()[0]})"
    )


def test_the_api_pages_the_table_and_still_answers_what_it_did(tmp_path, workspace):
    ws = copy_workspace(workspace, tmp_path)
    write_tokens_lines(ws, range(128))
    with serve_app(ws) as page:
        client = Client(page.local_url, verbose=False)
        assert len(client.predict(RUN, CODER, "", "latent", api_name="/latents")["data"]) == 100
        rows = client.predict(RUN, CODER, "", "latent", 2, api_name="/latents")["data"]
        assert [row[0] for row in rows] == list(range(100, 128))
        assert len(client.predict(RUN, CODER, 5, api_name="/latent")) == 8
        opened = client.predict(RUN, api_name="/open_run")
        assert opened[-2:] == ("page 1 of 2 (128 latents)", 1)
        client.close()
