"""A read-only run directory (a published or shared run on a read-only mount): browsing works, and every stage that
must write refuses in one line naming the directory.

CI runs as root, where ``chmod`` does not stop a write: the run is bind-mounted read-only instead (skipped where
mounting is not permitted).
"""

import subprocess
from pathlib import Path

import pytest

from interp.app import explore
from interp.app.session import Runs
from interp.app.workspace import Workspace
from interp.cli import main
from interp.jsonl import append_jsonl
from interp.rundir import RunDir
from publish.published import load_published
from tests.helpers.models import save_tiny_model
from tests.helpers.pipeline import scripted_reply, tiny_run_args
from tests.helpers.results import explanation_lines, score_lines

CODER = "model.layers.1.mlp.topk-neurons"


@pytest.fixture(params=["indexed", "cached before indexes", "made before the results database"])
def read_only(request, tmp_path, smollm_tokenizer, server):
    """A whole tiny run (cached, explained, scored) in a workspace, seen through a read-only bind mount, and its
    current explanation and score lines as the run read them while it could be written. Its cache with its latent
    offset indexes, or without them, as a cache made before they existed (they cannot be written beside the shards
    now: browsing keeps them in memory); or the run as one made before the results database, its lines in
    explanations.jsonl and scores.jsonl alone (they cannot be imported into a database beside them now: browsing
    reads them into one in memory)."""
    server.reply = scripted_reply
    ws = tmp_path / "ws"
    model = save_tiny_model(ws / "model", smollm_tokenizer)
    assert main(tiny_run_args(ws / "run", model, server.base_url)) == 0
    lines = RunDir(ws / "run").explanations(), RunDir(ws / "run").scores()
    assert lines[0] and lines[1]
    if request.param == "made before the results database":
        append_jsonl(ws / "run" / "explanations.jsonl", explanation_lines(ws / "run"))
        append_jsonl(ws / "run" / "scores.jsonl", score_lines(ws / "run"))
        for path in (ws / "run").glob("results.sqlite*"):
            path.unlink()
    if request.param == "cached before indexes":
        indexes = list((ws / "run" / "cache").rglob("index-*.safetensors"))
        assert indexes
        for index in indexes:
            index.unlink()
    view = tmp_path / "ro"
    view.mkdir()
    done = subprocess.run(["mount", "--bind", str(ws), str(view)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount here ({done.stderr.strip()}), and chmod does not stop root from writing")
    try:
        remount = subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], capture_output=True, text=True)
        if remount.returncode != 0:
            pytest.skip(f"cannot remount read-only here ({remount.stderr.strip()})")
        with pytest.raises(OSError, match="Read-only file system"):
            (view / "run" / "probe").write_text("x")
        yield view, lines
    finally:
        subprocess.run(["umount", "--lazy", str(view)], check=False)  # detached even while the app still maps a file


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_browsing_a_read_only_run_works_and_writing_stages_refuse_in_one_line(read_only, tmp_path, capsys, server):
    mount, (explanations, scores) = read_only
    run_dir = mount / "run"
    before = _snapshot(run_dir)
    assert RunDir(run_dir).explanations() == explanations and RunDir(run_dir).scores() == scores  # read in place
    assert main(["summary", str(run_dir)]) == 0
    assert "scores for " + CODER in capsys.readouterr().out
    run = Runs(Workspace(mount)).get("run")
    table = explore.latent_table(run, CODER)
    assert [row[0] for row in table.rows] == sorted({r["latent"] for r in explanations if r["coder"] == CODER})
    view = explore.latent_view(run, CODER, int(table.rows[0][0]))
    assert view is not None
    out = tmp_path / "elsewhere"
    assert main(["publish", str(run_dir), "me/features", "--dry-run", "--out", str(out), "--quiet"]) == 0
    published = load_published(out)
    assert published is not None
    capsys.readouterr()
    for stage in (
        ["explain", str(run_dir), "--llm", server.base_url, "--quiet"],
        ["score", str(run_dir), "--llm", server.base_url, "--quiet"],
        ["cache", str(run_dir), "--quiet"],
        ["run", "--run-dir", str(run_dir), "--quiet"],
    ):
        assert main(stage) == 2
        err = capsys.readouterr().err.strip().splitlines()
        lines = [line for line in err if line.startswith("error:")]
        assert len(lines) == 1 and lines[0].startswith(f"error: {run_dir} cannot be written (a read-only mount"), err
        assert f"`interp {stage[0] if stage[0] != 'run' else 'cache'}`" in lines[0]
    assert _snapshot(run_dir) == before
