"""What the app's tests share: a small real run in a workspace and the app served from it.

The run is made once per test session (the ``workspace`` fixture in conftest.py; every app test
module reuses it): a tiny random Llama saved into the workspace as the subject model (with the
embedded model's tokenizer), top-k MLP neurons as the coder, token-list explanations and
embedding scores.
"""

import shutil
import socket
from contextlib import contextmanager
from pathlib import Path

import pytest

from interp.app import AppConfig, launch
from interp.cli import main
from interp.rundir import RunDir
from tests.helpers.models import tiny_llama

CODER = "model.layers.1.mlp.topk-neurons"
RUN = "runs/small"
TOKEN = "hf_APPtestTOKEN7c1e9b20d4"
INJECTION = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2"> ${7*7} {{pwned}}'
"""An explanation that would run script if the app rendered explanations as HTML."""


def make_workspace(root: Path, tokenizer) -> Path:
    """A workspace holding a tiny model and a finished small run (built on first call, then reused)."""
    run_dir = root / RUN
    if "scores" in RunDir(run_dir).summary():  # scored: the run is finished (its lines are in results.sqlite)
        return root
    model_dir = root / "models" / "tiny-llama"
    lm = tiny_llama(tokenizer, layers=2, hidden=64)
    lm.model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    args = [
        "run",
        "--run-dir",
        str(run_dir),
        "--model",
        str(model_dir),
        "--num-tokens",
        "2048",
        "--ctx-len",
        "32",
        "--shard-windows",
        "16",
        "--batch-size",
        "8",
        "--quiet",
        "--coders",
        "topk-neurons@model.layers.1.mlp",
        "--neuron-k",
        "8",
        "--min-examples",
        "3",
        "--latents",
        "sample:4",
        "--explainer",
        "tokens",
        "--scorers",
        "embedding",
    ]
    assert main(args) == 0
    return root


def copy_workspace(workspace: Path, parent: Path) -> Path:
    """A copy of the shared workspace at ``parent/ws``, for a test that writes to its run or plants files in it."""
    return shutil.copytree(workspace, parent / "ws", ignore=shutil.ignore_patterns(".gradio"))


@contextmanager
def serve_app(root: Path, **settings):
    """The app serving the workspace ``root`` on 127.0.0.1 (Gradio's own files inside it), closed afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        mp.setenv("GRADIO_TEMP_DIR", str(root / ".gradio"))
        page = launch(AppConfig(workspace=str(root), run_dir=RUN, port=free_port(), **settings), block=False)
        try:
            yield page
        finally:
            page.close()


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def everything_written(*roots: Path) -> bytes:
    """The bytes of every file under ``roots``, to search for a secret."""
    return b"".join(p.read_bytes() for root in roots for p in sorted(Path(root).rglob("*")) if p.is_file())
