"""A tiny random Llama's cached run to explain through the scripted server, and a spy on the judges a search makes.

Shared by the search tests and the leak tests: both explain copies of one cached run and watch what the explainer is
sent and what the judge is handed.
"""

import re
import shutil
from pathlib import Path

from interp import stages
from interp.cli import main
from interp.config import RecordsConfig
from interp.records import LatentRecord, RecordBuilder
from interp.rundir import RunDir
from interp.scoring.base import Scorer
from tests.helpers.models import save_tiny_model

CODER = "model.layers.1.mlp.topk-neurons"
SPLITS = (
    "--n-train 6 --n-test 6 --n-valid 6 --n-negatives 4 --n-hard-negatives 4 --n-valid-negatives 4 "
    "--n-valid-hard-negatives 4 --n-contrast-negatives 4 --min-examples 4 --example-len 16"
).split()


def explainer_reply(body: dict) -> str:
    """A deterministic explainer: the request's seed picks which marked token of the contexts it names; a
    refinement names a token the judge missed (again picked by the seed)."""
    content = [m for m in body["messages"] if m["role"] != "assistant"][-1]["content"]
    if "Your explanation was:" in content:
        shown = content.split("does not cover these:\n", 1)[1].split("\nThe feature does not fire", 1)[0]
    else:
        shown = content.split("Contexts:", 1)[1]
    tokens = re.findall(r"<<(.*?)>>", shown) or ["nothing"]
    return f' the token "{tokens[body.get("seed", 0) % len(tokens)]}"'


def cache_tiny_run(tmp_path_factory, tokenizer) -> tuple[Path, Path]:
    """(model folder, a cached run of it with small splits); tests explain copies of the run."""
    model = save_tiny_model(tmp_path_factory.mktemp("model"), tokenizer)
    run = tmp_path_factory.mktemp("runs") / "cached"
    args = ["cache", "--run-dir", str(run), "--quiet", "--model", str(model)]
    args += ["--coders", "topk-neurons@model.layers.1.mlp", *SPLITS]
    args += "--num-tokens 4096 --ctx-len 32 --shard-windows 32 --batch-size 16 --neuron-k 4".split()
    assert main(args) == 0
    return model, run


def copy_of(run: Path, tmp_path: Path, name: str = "run") -> Path:
    """A copy of ``run`` under ``tmp_path``, to explain without touching the shared one."""
    shutil.copytree(run, tmp_path / name)
    return tmp_path / name


def explain_args(run: Path, url: str, *extra: str) -> list[str]:
    """``interp explain`` of 4 sampled latents of ``run`` through the server at ``url``, with ``extra``."""
    return ["explain", str(run), "--quiet", "--llm", url, "--llm-model", "scripted", "--concurrency", "2"] + [
        *"--explain-batch 2 --latents sample:4".split(),
        *extra,
    ]


class Spy(Scorer):
    """The real judge, with every (held-out split, explanation) it is handed kept; raises KeyboardInterrupt at call
    ``stop_at`` (an interrupted search)."""

    def __init__(self, inner: Scorer, seen: list, stop_at: int | None = None):
        self.inner, self.name, self.seen, self.stop_at, self.calls = inner, inner.name, seen, stop_at, 0

    def score(self, items):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        self.seen.extend(items)
        return self.inner.score(items)


def spy_on_judges(monkeypatch) -> tuple[list, dict]:
    """(what the judges of the explain commands are handed, a control to interrupt the next one: ``stop_at``)."""
    seen: list = []
    control = {"stop_at": None, "spies": []}
    make = stages.make_scorers

    def spied(*args, **kwargs):
        spies = [Spy(s, seen, control["stop_at"]) for s in make(*args, **kwargs)]
        control["spies"] += spies
        return spies

    monkeypatch.setattr(stages, "make_scorers", spied)
    return seen, control


def records_of(
    run: Path, tokenizer, cfg: RecordsConfig | None = None, contrast: bool = False
) -> dict[int, LatentRecord]:
    """Every record of ``run``'s coder, built as the stages build them (with the contrastive negatives if asked)."""
    rd = RunDir(run)
    view = rd.cache_view(CODER, tokenizer)
    builder = RecordBuilder(view, cfg or rd.read_config().records)
    return {r.latent: r for r in builder.build(CODER, range(view.num_latents), contrast=contrast)}
