"""Command line: ``interp run`` (the main job), ``interp cache``, ``interp explain``; also ``python -m interp``.

Each command is a thin shell over library functions; expected mistakes print one line.
"""

import argparse
import logging
import sys
from pathlib import Path

from .config import SECTIONS, RunConfig
from .cli_args import add_config_args, config_from_args
from .errors import InterpError


def _run_parser(sub, name: str, help: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help)
    p.add_argument("--run-dir", type=Path, default=Path("runs/demo"), help="Run directory (default: runs/demo)")
    p.add_argument("--overwrite", action="store_true", help="Delete the run directory and start again")
    p.add_argument("--quiet", action="store_true", help="No progress bars")
    for title, cls in SECTIONS.items():
        add_config_args(p, cls, title)
    return p


def _config(ns: argparse.Namespace) -> RunConfig:
    return RunConfig(**{title: config_from_args(cls, ns) for title, cls in SECTIONS.items()})


def _fmt(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:.3f}"


def _print_summary(summary: dict, run_dir: Path) -> None:
    for name, s in summary.get("coders", {}).items():
        print(
            f"{name}: {s['kind']}, {s['num_latents']} latents, {s['num_tokens']:,} tokens, "
            f"mean L0 {s['mean_l0']:.1f}, dead {100 * s['dead_fraction']:.1f}%"
        )
    sae = summary.get("default_sae")
    if sae:
        print(
            f"default SAE at {sae['hookpoint']}: held-out FVU {sae['heldout_fvu']:.3f}, "
            f"dead latents {100 * sae['heldout_dead_fraction']:.1f}%"
        )
    counts = summary.get("explanations")
    if counts:
        print(f"explanations ({summary['explainer']}): " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
        from .jsonl import read_jsonl

        rows = [r for r in read_jsonl(run_dir / "explanations.jsonl") if r["status"] == "ok"]
        for r in rows[:5]:
            print(f"  {r['coder']} #{r['latent']}: {r['explanation']}")
    for coder, scorers in summary.get("scores", {}).items():
        print(f"scores for {coder} (mean over latents; random explanation in brackets):")
        for scorer, e in scorers.items():
            mean, base = e["explanation"]["mean"], e["baseline"]["mean"]
            print(f"  {scorer:<20} {e['metric']:<18} {_fmt(mean)}  [{_fmt(base)}]  n={e['explanation']['n']}")
    print(f"results: {run_dir.resolve()}")


def build_parser() -> argparse.ArgumentParser:
    """The ``interp`` argument parser with all subcommands."""
    parser = argparse.ArgumentParser(prog="interp", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub, "run", "The main job: every pipeline stage, in order, into one run directory.")
    _run_parser(sub, "cache", "Cache sparse latent activations over a corpus (resumable).")
    _run_parser(sub, "explain", "Explain latents of a cached run with an LLM (resumable).")
    _run_parser(sub, "score", "Score a run's explanations against held-out examples and a random baseline (resumable).")
    _run_parser(sub, "summary", "Print the summary of a run's scores (and rewrite its plots).")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``interp`` command."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ns = build_parser().parse_args(argv)
    from . import run as pipeline

    if ns.quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

    try:
        cfg = _config(ns)
        if ns.command == "explain":
            summary = pipeline.run_explain(cfg, ns.run_dir, progress=not ns.quiet)
        elif ns.command == "score":
            summary = pipeline.run_score(cfg, ns.run_dir, progress=not ns.quiet)
        elif ns.command == "summary":
            summary = pipeline.summarize_run(ns.run_dir)
        else:
            stage = pipeline.run if ns.command == "run" else pipeline.run_cache
            summary = stage(cfg, ns.run_dir, overwrite=ns.overwrite, progress=not ns.quiet)
    except InterpError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _print_summary(summary, ns.run_dir)
    return 0
