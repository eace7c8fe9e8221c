"""The minimal app page reads a run directory through the library."""

import json

import app


def test_app_lists_explanations_and_the_summary(tmp_path):
    (tmp_path / "explanations.jsonl").write_text(
        json.dumps({"coder": "c", "latent": 3, "explainer": "tokens", "status": "ok", "explanation": "cats"}) + "\n"
        + json.dumps({"coder": "c", "latent": 4, "explainer": "tokens", "status": "dead", "explanation": None}) + "\n"
    )
    assert app.explanation_rows(tmp_path) == [["c", 3, "tokens", "ok", "cats"], ["c", 4, "tokens", "dead", ""]]
    assert "interp run --run-dir" in app.summary_text(tmp_path)
    (tmp_path / "summary.json").write_text('{"coders": {}}')
    assert json.loads(app.summary_text(tmp_path)) == {"coders": {}}
