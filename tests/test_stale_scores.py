"""A score always belongs to the explanation it is shown with: a run scored, then re-explained with other text
(``--redo`` through a scripted server), reports no old score as current anywhere, names the lines it left out,
and after one ``interp score RUN`` reports what a run made fresh with the new explanations reports."""

from pathlib import Path

import pytest

from interp.app import explore
from interp.app.session import Runs
from interp.app.workspace import Workspace
from interp.cli import main
from interp.rundir import RunDir
from interp.scoring.base import ScoreResult
from interp.scoring.results import baseline_explanations, current_scores
from interp.stages import summarize_run
from publish.card import make_card
from publish.dataset import build_dataset, read_run
from tests.helpers.models import save_tiny_model
from tests.helpers.pipeline import first_marked_token, scripted_reply, tiny_run_args
from tests.helpers.results import score_lines

CODER = "model.layers.1.mlp.topk-neurons"
DETECT = ["--scorers", "detection", "--score-mode", "generative", "--quiet"]


def renamed(flagged: str):
    """The upgraded explainer: other text for every latent; a reply with no words (flagged) where the latent's
    first marked token is ``flagged``."""

    def reply(content: str) -> str:
        if "<<" in content and "Example 1:" in content:
            token = first_marked_token(content)
            return "[EXPLANATION]: 42" if token == flagged else f'[EXPLANATION]: Words such as "{token}" in a text'
        return scripted_reply(content)

    return reply


def rounded(value):
    """``value`` with every float rounded to 9 places: two runs' sums may differ in the last bits."""
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return round(value, 9) if isinstance(value, float) else value


def made(run_dir: Path, model: Path, url: str) -> list[str]:
    """The run's first command: the default explainer through the scripted server, scored by embedding."""
    return [*tiny_run_args(run_dir, model, url), "--neuron-k", "4", "--explainer", "default", "--scorers", "embedding"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, smollm_tokenizer) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model"), smollm_tokenizer)


@pytest.mark.slow  # every stage end to end
def test_scores_of_replaced_explanations_are_left_out_named_and_rescored_by_one_command(
    tmp_path, tiny_model, server, capsys
):
    run_dir = tmp_path / "run"
    server.reply = scripted_reply
    assert main(made(run_dir, tiny_model, server.base_url)) == 0
    assert main(["score", str(run_dir), *DETECT]) == 0  # a second scorer, not in the run's config
    run = RunDir(run_dir)
    before = {r["latent"]: r["explanation"] for r in run.explanations("default")}
    assert len(before) >= 3 and {r["status"] for r in run.explanations("default")} == {"ok"}
    old = sorted(r["metrics"]["auroc"] for r in run.current_scores().rows if r["scorer"] == "embedding")
    lines = score_lines(run_dir)

    flagged_token = before[min(before)].split('"')[1]  # 'The token "X"': one latent's token is now flagged
    flagged = {k for k, text in before.items() if text.split('"')[1] == flagged_token}
    server.reply = renamed(flagged_token)
    assert main(["explain", str(run_dir), "--redo", "--llm-model", "upgraded", "--quiet"]) == 0
    now = {r["latent"]: r for r in run.explanations("default")}
    assert {k for k, r in now.items() if r["status"] == "flagged"} == flagged
    assert all(now[k]["explanation"] != before[k] for k in set(now) - flagged)
    assert score_lines(run_dir) == lines  # re-explaining leaves the score lines as they were

    # The summary: no old score counts; the left-out lines are named with the command that rescores them.
    capsys.readouterr()
    assert main(["summary", str(run_dir)]) == 0
    out = capsys.readouterr().out
    ok = len(now) - len(flagged)
    assert "scores for" not in out  # every line left is of an old text: none is shown as a score
    assert (
        f"{2 * ok} embedding scores are of replaced explanations: `interp score {run_dir} --scorers embedding` "
        f"rescores them; {2 * len(flagged)} embedding scores are of explanations since flagged or failed" in out
    )
    assert f"`interp score {run_dir} --scorers detection --score-mode generative` rescores them" in out
    left_out = summarize_run(run_dir)["left_out"]
    assert left_out == {s: {"replaced": 2 * ok, "withdrawn": 2 * len(flagged)} for s in ("detection", "embedding")}

    # The app: the latent table holds no score column; one latent's view shows its old scores, marked stale.
    app_run = Runs(Workspace(tmp_path)).get("run")
    table = explore.latent_table(app_run, CODER)
    assert table.headers == explore.LATENT_HEADERS and explore.sort_choices(app_run) == list(explore.SORTS)
    assert {row[0]: row[2] for row in table.rows} == {
        k: r["explanation"] if r["status"] == "ok" else "" for k, r in now.items()
    }
    latent = min(set(now) - flagged)
    view = explore.latent_view(app_run, CODER, latent).scores
    stale = view.headers.index("stale")
    assert view.rows and all(row[stale].startswith("stale: ") for row in view.rows)
    assert any(repr(before[latent]) in row[stale] for row in view.rows)
    described = explore.describe(app_run)
    assert f"left out: {2 * len(now)} embedding scores" in described and "mean auroc" not in described

    # Publishing: the rows of the new explanations carry no score of the old ones; the card says what was left out.
    data = read_run(run_dir)
    assert not data.scores and data.left_out == left_out  # no line is of a current explanation
    rows = build_dataset(data, progress=False)[CODER].to_list()
    assert all(row["scores"] == [] for row in rows)
    assert f"{4 * len(now)} older score lines" in make_card(data, repo_id="someone/run")

    # One command (no --scorers) rescores every scorer with replaced lines: the numbers of a fresh run.
    assert main(["score", str(run_dir), "--quiet"]) == 0
    fresh_dir = tmp_path / "fresh"
    assert main([*made(fresh_dir, tiny_model, server.base_url), "--llm-model", "upgraded"]) == 0
    assert main(["score", str(fresh_dir), *DETECT]) == 0
    rescored, fresh = summarize_run(run_dir), summarize_run(fresh_dir)
    assert rounded(rescored["scores"]) == rounded(fresh["scores"]) and set(rescored["scores"][CODER]) == {
        "embedding",
        "detection",
    }
    assert rescored["left_out"] == {
        s: {"replaced": 0, "withdrawn": 2 * len(flagged)} for s in ("detection", "embedding")
    }
    new = rescored["scores"][CODER]["embedding"]
    assert sorted(new["explanation"]["values"] + new["baseline"]["values"]) != old
    table = explore.latent_table(Runs(Workspace(tmp_path)).get("run"), CODER)
    assert table.rows == explore.latent_table(Runs(Workspace(tmp_path)).get("fresh"), CODER).rows
    published = build_dataset(read_run(run_dir), progress=False)[CODER].to_list()
    assert [r["scores"] for r in published] == [r["scores"] for r in build_dataset(fresh_dir, progress=False)[CODER]]
    assert all(r["scores"] == [] for r in published if r["latent"] in flagged)


def test_a_line_counts_only_for_the_current_usable_text_and_the_random_text_it_assigns():
    explanations = [
        {"explainer": "default", "coder": "sae", "latent": k, "status": s, "explanation": t}
        for k, s, t in ((0, "ok", "cats"), (1, "ok", "dogs"), (2, "ok", "fish"), (3, "flagged", "..."))
    ]
    assigned = baseline_explanations(explanations[:3], seed=7)

    def line(latent: int, text: str, baseline: bool = False, explainer: str = "default") -> dict:
        return ScoreResult("embedding", "sae", latent, explainer, baseline, text, {"auroc": 0.5}, []).to_dict()

    now = [line(0, "cats"), line(0, assigned[("sae", 0)], baseline=True), line(1, "dogs"), line(2, "fish")]
    old = [line(1, "old dogs"), line(2, "old fish", baseline=True)]
    gone = [line(3, "..."), line(3, "cats", baseline=True), line(4, "never explained"), line(0, "cats", explainer="x")]
    split = current_scores(explanations, now + old + gone)
    assert (split.rows, split.replaced, split.withdrawn) == (now, old, gone)
    assert split.left_out() == {"embedding": {"replaced": 2, "withdrawn": 4}}
    assert current_scores(explanations, now + old + gone, explainer="x").rows == []
    own = line(1, "dogs", baseline=True)  # its own text is no other latent's: not a random explanation
    assert current_scores(explanations, [own]).replaced == [own]


def rows_of(texts: dict[int, str], coder: str = "a") -> list[dict]:
    return [
        {"explainer": "default", "coder": coder, "latent": k, "status": "ok", "explanation": t}
        for k, t in texts.items()
    ]


def baseline_lines(assigned: dict) -> list[dict]:
    return [
        ScoreResult("embedding", c, k, "default", True, text, {"auroc": 0.5}, []).to_dict()
        for (c, k), text in assigned.items()
    ]


def test_explaining_more_latents_moves_no_random_explanation_and_re_explaining_one_moves_only_those_drawn_from_it():
    first = {k: f"text {k}" for k in range(10)}
    assigned = baseline_explanations(rows_of(first), seed=3)
    scored = baseline_lines(assigned)
    more = {**first, **{k: f"text {k}" for k in range(10, 40)}}
    grown = baseline_explanations(rows_of(more), seed=3, scored=scored)
    assert all(grown[key] == text for key, text in assigned.items())  # every earlier draw kept
    assert current_scores(rows_of(more), scored).rows == scored  # and counted by the summary
    donor = next(k for k in range(10) if list(assigned.values()).count(f"text {k}"))
    redone = {**more, donor: "a new text"}
    after = baseline_explanations(rows_of(redone), seed=3, scored=scored)
    moved = {key for key in assigned if after[key] != assigned[key]}
    assert moved == {key for key, text in assigned.items() if text == f"text {donor}"} and moved
    split = current_scores(rows_of(redone), scored)
    assert {(r["coder"], r["latent"]) for r in split.replaced} == moved
    assert baseline_explanations(rows_of(more), seed=3) == baseline_explanations(rows_of(more), seed=3)  # seeded


def test_the_random_texts_depend_on_the_explanations_held_not_on_their_line_order():
    """Processes under ``accelerate launch`` append their explanations interleaved: the baselines are the same."""
    rows = [
        {"explainer": "default", "coder": c, "latent": k, "status": "ok", "explanation": f"{c} {k}"}
        for c in ("a", "b")
        for k in range(20)
    ]
    assigned = baseline_explanations(rows, seed=3)
    assert baseline_explanations(rows[::-1], seed=3) == assigned
    assert baseline_explanations(rows[1::2] + rows[::2], seed=3) == assigned
    assert all(text != f"{coder} {latent}" for (coder, latent), text in assigned.items())  # never its own
    scored = baseline_lines(assigned)
    assert baseline_explanations(rows, seed=3, scored=scored[::-1]) == assigned
    same = rows_of({0: "cats", 1: "cats", 2: "dogs"})  # another text wherever there is one
    assert baseline_explanations(same, seed=0) == {("a", 0): "dogs", ("a", 1): "dogs", ("a", 2): "cats"}
