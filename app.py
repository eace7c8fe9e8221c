"""A minimal Gradio page over a run directory: its summary and its explanations.

The full app (explore / explain / score / intervene / publish panels) is issue 6; this page
already reads only through the library, like the CLI.

    python app.py [RUN_DIR]          # or set INTERP_RUN_DIR; default runs/demo
"""

import json
import os
import sys
from pathlib import Path

from interp.jsonl import read_jsonl

RUN_DIR = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("INTERP_RUN_DIR", "runs/demo"))


def explanation_rows(run_dir: Path) -> list[list]:
    """Table rows (coder, latent, explainer, status, explanation) of a run's explanations."""
    return [
        [r["coder"], r["latent"], r["explainer"], r["status"], r["explanation"] or ""]
        for r in read_jsonl(run_dir / "explanations.jsonl")
    ]


def summary_text(run_dir: Path) -> str:
    """The run's summary.json, or a note saying how to make one."""
    path = run_dir / "summary.json"
    if not path.is_file():
        return f"No summary in {run_dir}: run `interp run --run-dir {run_dir}` first."
    return json.dumps(json.loads(path.read_text()), indent=2)


def build(run_dir: Path):
    """The Gradio Blocks page for ``run_dir``."""
    import gradio as gr

    with gr.Blocks(title="interp") as page:
        gr.Markdown(f"# interp — {run_dir}")
        gr.Dataframe(
            value=explanation_rows(run_dir),
            headers=["coder", "latent", "explainer", "status", "explanation"],
            label="Explanations",
        )
        gr.Code(value=summary_text(run_dir), language="json", label="summary.json")
    return page


if __name__ == "__main__":
    build(RUN_DIR).launch(server_name="127.0.0.1")
