"""Command line: ``interp run`` (the main job) and each stage on its own; also ``python -m interp``.

``interp run RUN ...`` makes a run directory; ``interp explain|score|summary|export|publish|compare|steer|app``
then take it alone (``interp score RUN --scorers ...``): what makes the run comes from its config.json.
Each command is a thin shell over library functions; expected mistakes print one line.
"""

import argparse
import logging
import sys
from pathlib import Path

from .cli_args import add_config_args, with_args
from .config import SECTIONS, RunConfig
from .errors import InterpError
from .rundir import RunDir

DEFAULT_RUN = Path("runs/demo")


def _run_argument(p: argparse.ArgumentParser, *, positional: bool = True) -> None:
    """The run directory, as ``RUN`` or ``--run-dir RUN``."""
    if positional:
        p.add_argument(
            "run", metavar="RUN", type=Path, nargs="?", default=None, help=f"Run directory (default: {DEFAULT_RUN})"
        )
    p.add_argument("--run-dir", type=Path, default=None, help="The run directory, as a flag")


def _run_dir(ns: argparse.Namespace) -> Path:
    """The run directory the command names, however it was given."""
    given = getattr(ns, "run", None)
    if given is not None and ns.run_dir is not None and given != ns.run_dir:
        raise InterpError(f"Two run directories given ({given} and --run-dir {ns.run_dir}): give one.")
    return given or ns.run_dir or DEFAULT_RUN


def _run_parser(
    sub,
    name: str,
    help: str,
    *,
    sections: tuple[str, ...] = tuple(SECTIONS),
    run: bool = True,
    makes_run: bool = False,
) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help)
    if run:
        _run_argument(p)
    if makes_run:
        p.add_argument("--overwrite", action="store_true", help="Delete the run directory and start again")
        p.add_argument(
            "--force", action="store_true", help="Cache even where the disk looks too small for it (a full disk stops)"
        )
    if name in ("run", "cache", "explain", "score"):
        p.add_argument(
            "--wait",
            action="store_true",
            help="If another process is doing the same work on this run, wait for it (default: stop, naming it)",
        )
    p.add_argument("--quiet", action="store_true", help="No progress bars")
    for title in sections:
        add_config_args(p, SECTIONS[title], title, given_only=True)
    return p


def _config(ns: argparse.Namespace, run: RunDir | None) -> RunConfig:
    """The command's configuration: the run's own config.json where it exists (else the defaults), with the flags
    given on the command line set over it. A flag that contradicts what makes the run is refused, naming both."""
    existing = run is not None and run.is_run() and not getattr(ns, "overwrite", False)
    cfg = with_args(run.read_config() if existing else RunConfig(), ns)
    if existing:
        run.check(cfg)
    return cfg


def _fmt(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:.3f}"


def _verdict(entry: dict) -> str:
    """How the margin over the random explanation reads: paired, over how many latents, its 95% interval on the same
    latents, and 'at chance' where that includes zero."""
    ci = entry.get("margin_ci")
    if ci is None:
        return ""
    said = f"  margin {entry['margin']:+.3f} (paired, n={entry['margin_n']}; 95% CI {ci[0]:+.3f} to {ci[1]:+.3f})"
    return said if entry["above_chance"] else said + "  at chance: try a served explainer (README: A served LLM)"


def _print_summary(summary: dict, run_dir: Path) -> None:
    for name, s in summary.get("coders", {}).items():
        print(
            f"{name}: {s['kind']}, {s['num_latents']} latents, {s['num_tokens']:,} tokens, "
            f"mean L0 {s['mean_l0']:.1f}, {100 * s['dead_fraction']:.1f}% of latents never fired on the cached tokens"
        )
    sae = summary.get("default_sae")
    if sae:
        print(
            f"default SAE at {sae['hookpoint']}: held-out FVU {sae['heldout_fvu']:.3f}, "
            f"{100 * sae['heldout_dead_fraction']:.1f}% of latents never fired on its "
            f"{sae['heldout_tokens']:,} held-out tokens"
        )
    counts = summary.get("explanations")
    if counts:
        print(
            f"explanations ({summary['explainer']}): "
            + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        )
        if summary.get("failed_now"):
            print(f"  {summary['failed_now']} failed this time (recorded as failed: the same command retries them)")
        with RunDir(run_dir).reading() as db:
            shown = db.explanations(summary["explainer"], usable=True, limit=5)
        for r in shown:
            print(f"  {r['coder']} #{r['latent']}: {r.get('explanation')}")
    for coder, scorers in summary.get("scores", {}).items():
        print(
            f"scores for {coder} of the {summary['explainer']} explanations "
            "(mean over latents; random explanation in brackets):"
        )
        for scorer, e in scorers.items():
            mean, base = e["explanation"]["mean"], e["baseline"]["mean"]
            print(
                f"  {scorer:<20} {e['metric']:<18} {_fmt(mean)}  [{_fmt(base)}]  "
                f"n={e['explanation']['n']}{_verdict(e)}"
            )
    for scorer, n in summary.get("left_out", {}).items():
        print(_left_out(scorer, n, run_dir, summary["explainer"]))
    if summary.get("leaked"):
        print(_leaked(summary["leaked"], run_dir, summary["explainer"]))
    print(f"results: {run_dir.resolve()}")


def _leaked(n: int, run_dir: Path, explainer: str) -> str:
    """One line on the current explanations made from what their scorers score, and the command that mends them."""
    return (
        f"warning: {n} {explainer} explanations were made with the old, leaking prompts (they held the examples or "
        "steering prompts their scorers score, or a search chose on them), so their scores are optimistic; "
        f"`interp explain {run_dir} --explainer {explainer} --redo` explains them again apart, then `interp score` "
        "rescores them."
    )


def _left_out(scorer: str, counts: dict[str, int], run_dir: Path, explainer: str) -> str:
    """One line on the score lines of ``scorer`` that the summary left out, and the command that rescores them."""
    from .scoring.registry import LLM_SCORERS, scorer_settings

    settings = scorer_settings(RunConfig().score, scorer)
    name = settings.scorers[0]
    flags = f"--scorers {name}" + (f" --score-mode {settings.score_mode}" if name in LLM_SCORERS else "")
    if explainer != RunDir(run_dir).read_config().explain.explainer:
        flags += f" --explainer {explainer}"
    said = []
    if counts["replaced"]:
        said.append(
            f"{counts['replaced']} {scorer} scores are of replaced explanations: "
            f"`interp score {run_dir} {flags}` rescores them"
        )
    if counts["withdrawn"]:
        said.append(f"{counts['withdrawn']} {scorer} scores are of explanations since flagged or failed, left out")
    return "  " + "; ".join(said)


def _compare_parser(sub) -> None:
    from .compare import DEFAULT_MAX_LATENTS

    help = (
        "Compare two coders by meaning: Hungarian matching of their explanations (and decoder directions) "
        "against a shuffled baseline."
    )
    p = sub.add_parser("compare", help=help, description=help)
    p.add_argument(
        "a", metavar="RUN_A[:CODER]", help="A run directory, and which of its coders (e.g. runs/demo:model.layers.6)"
    )
    p.add_argument("b", metavar="RUN_B[:CODER]", help="Another coder: of the same run or of another one")
    p.add_argument(
        "--explainer", default=None, help="Whose explanations to compare (default: the only explainer each coder has)"
    )
    p.add_argument(
        "--max-latents",
        type=int,
        default=DEFAULT_MAX_LATENTS,
        help=f"Compare at most this many latents per coder, a seeded sample (default: {DEFAULT_MAX_LATENTS})",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="Seed of the latent sample and the shuffled baseline (default: 0)"
    )
    p.add_argument(
        "--embedder", default=None, help="Sentence-transformers model (default: the embedded all-MiniLM-L6-v2)"
    )
    p.add_argument(
        "--no-decoders",
        dest="decoders",
        action="store_false",
        help="Skip decoder matching (it loads the runs' model and coders)",
    )
    p.add_argument("--top", type=int, default=10, help="Best and worst matched pairs to print (default: 10)")
    p.add_argument("--out", type=Path, default=None, help="Output folder (default: RUN_A/compare/CODER_A--CODER_B)")
    p.add_argument("--quiet", action="store_true", help="No progress bars")


def _compare(ns: argparse.Namespace) -> int:
    from .compare.report import compare_sides, default_out_dir, format_report, write_comparison
    from .compare.sides import load_side

    if ns.max_latents < 1:
        raise InterpError("--max-latents must be at least 1.")
    a, b = load_side(ns.a, ns.explainer), load_side(ns.b, ns.explainer)
    comparison = compare_sides(
        a,
        b,
        embedder_name=ns.embedder,
        decoders=ns.decoders,
        max_latents=ns.max_latents,
        seed=ns.seed,
        progress=not ns.quiet,
    )
    paths = write_comparison(comparison, ns.out or default_out_dir(a, b))
    print(format_report(comparison.report, top=ns.top))
    print("results: " + ", ".join(str(p.resolve()) for p in paths))
    return 0


def _export_parser(sub) -> None:
    help = "Write a run's explanations and scores as JSONL files (explanations.jsonl, scores.jsonl) into a folder."
    p = sub.add_parser("export", help=help, description=help)
    _run_argument(p)
    p.add_argument("--jsonl", type=Path, required=True, metavar="DIR", help="The folder to write the files into")
    p.add_argument(
        "--history", action="store_true", help="Every line ever written, replaced ones too (each with `current`)"
    )
    p.set_defaults(quiet=False)


def _export(ns: argparse.Namespace) -> int:
    from .results.export import export_jsonl

    counts = export_jsonl(RunDir(_run_dir(ns)), ns.jsonl, history=ns.history)
    for name, n in counts.items():
        print(f"{ns.jsonl / name}: {n:,} lines")
    return 0


def _publish_parser(sub) -> None:
    help = "Publish a run's explanations as a Hugging Face dataset (Parquet + dataset card), in one commit."
    p = sub.add_parser("publish", help=help, description=help)
    p.add_argument("run_dir", metavar="RUN", type=Path, help="The run directory to publish")
    p.add_argument(
        "repo",
        metavar="REPO",
        nargs="?",
        help="Dataset repository on the Hub (owner/name); created if missing, updated if not (not with --neuronpedia)",
    )
    p.add_argument(
        "--private", action="store_true", help="Create the repository private (an existing public one is refused)"
    )
    p.add_argument(
        "--token-env",
        default="HF_TOKEN",
        help="Environment variable holding the Hub token (default: HF_TOKEN; else the huggingface_hub login)",
    )
    p.add_argument("--out", type=Path, default=None, help="Where to write the dataset folder (default: RUN/publish)")
    p.add_argument("--dry-run", action="store_true", help="Only write the folder; upload nothing")
    p.add_argument("--license", default="cc-by-4.0", help="License in the dataset card (default: cc-by-4.0)")
    p.add_argument("--quiet", action="store_true", help="No progress bars")
    _neuronpedia_args(p)


def _neuronpedia_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Neuronpedia", "Upload batches for neuronpedia.org instead of a Hub dataset")
    g.add_argument(
        "--neuronpedia",
        type=Path,
        metavar="OUT_DIR",
        default=None,
        help="Write the run (or a delphi results folder) as upload-batch files under OUT_DIR/<source>/",
    )
    g.add_argument("--np-model", default=None, help="Neuronpedia model id (default: the coder's own Neuronpedia id)")
    g.add_argument("--np-source", default=None, help="Neuronpedia source, of a source set you created")
    g.add_argument("--np-coder", default=None, help="Upload only this coder of the run")
    g.add_argument(
        "--np-name",
        action="append",
        metavar="FROM=TO",
        help="Rename an explainer or LLM to a methodName/modelName Neuronpedia knows (repeatable)",
    )
    g.add_argument("--push", action="store_true", help="Post the batches, with the key in $NEURONPEDIA_API_KEY")
    g.add_argument("--np-url", default=None, help="Neuronpedia's address (default: https://www.neuronpedia.org)")
    g.add_argument("--np-key-env", default=None, help="Variable holding the API key (default: NEURONPEDIA_API_KEY)")


def _neuronpedia(ns: argparse.Namespace) -> int:
    from publish.delphi_results import is_delphi_results
    from publish.neuronpedia import delphi_features, parse_names, run_features, write_batches
    from publish.neuronpedia_push import DEFAULT_URL, KEY_ENV, push_batches

    names = parse_names(ns.np_name)
    source = Path(ns.run_dir)
    coders = delphi_features(source, names) if is_delphi_results(source) else run_features(source, names)
    written = write_batches(coders, ns.neuronpedia, model_id=ns.np_model, source=ns.np_source, only=ns.np_coder)
    for name, n in written.items():
        print(f"neuronpedia batches: {(ns.neuronpedia / name).resolve()} ({n} features)")
    if ns.push:
        url = ns.np_url or DEFAULT_URL
        done = push_batches(ns.neuronpedia, url=url, key_env=ns.np_key_env or KEY_ENV)
        print(f"posted {done['pushed']} batches to {url} ({done['skipped']} already there)")
    return 0


def _publish(ns: argparse.Namespace) -> int:
    from publish.hub import publish_run  # publish is the last stage: the core never imports it up front

    if ns.neuronpedia is not None:
        return _neuronpedia(ns)
    if ns.push:
        raise InterpError("--push posts Neuronpedia batches: give --neuronpedia OUT_DIR too.")
    if ns.repo is None:
        raise InterpError("Give the dataset repository (interp publish RUN OWNER/NAME), or --neuronpedia OUT_DIR.")

    result = publish_run(
        ns.run_dir,
        ns.repo,
        token_env=ns.token_env,
        private=ns.private,
        out_dir=ns.out,
        dry_run=ns.dry_run,
        license=ns.license,
        progress=not ns.quiet,
    )
    rows = ", ".join(f"{name}: {n} rows" for name, n in result.rows.items())
    print(f"dataset folder: {result.folder.resolve()} ({rows})")
    if result.commit_oid is None:
        print(f"dry run: nothing uploaded; `interp publish {ns.run_dir} {ns.repo}` would push it to {result.url}")
    else:
        visibility = "private" if result.private else "public"
        print(f"published to {result.url} ({visibility}), commit {result.commit_url}")
    return 0


def _steer_parser(sub) -> None:
    from .config import ModelConfig
    from .steer import MODES

    help = "Steer one latent while the model continues prompts: clean and steered continuations side by side."
    p = sub.add_parser("steer", help=help, description=help)
    p.add_argument("prompts", nargs="+", metavar="PROMPT", help="Text for the model to continue")
    p.add_argument("--latent", type=int, required=True, help="The latent to steer")
    p.add_argument(
        "--hookpoint", default=None, help="Which coder: its hookpoint, MLP module or name (default: the only one)"
    )
    p.add_argument(
        "--mode", choices=MODES, default="add", help="add a strength, clamp to it, or ablate to zero (default: add)"
    )
    p.add_argument(
        "--strength", type=float, default=None, help="add: amount added to the latent; clamp: value it is set to"
    )
    p.add_argument(
        "--target-kl",
        type=float,
        default=None,
        help="Instead of --strength: the strength whose next-token KL is this many nats",
    )
    p.add_argument("--max-new-tokens", type=int, default=32, help="Tokens to generate per continuation (default: 32)")
    p.add_argument(
        "--top-tokens", type=int, default=8, help="Next tokens listed whose probability rose most (default: 8)"
    )
    _run_argument(p, positional=False)
    p.add_argument(
        "--coders",
        nargs="+",
        default=argparse.SUPPRESS,
        help="Coder specs (KIND[:SOURCE][@HOOKPOINT]) instead of a run's; the model comes from --model",
    )
    p.add_argument(
        "--neuron-k",
        type=int,
        default=argparse.SUPPRESS,
        help="k for top-k sparsified neurons (with --coders; default: 32)",
    )
    p.add_argument("--quiet", action="store_true", help="No progress bars")
    add_config_args(p, ModelConfig, "model (with --coders; a run directory uses its own)", given_only=True)


def _columns(left: str, right: str, width: int) -> list[str]:
    import textwrap

    a, b = textwrap.wrap(left, width) or [""], textwrap.wrap(right, width) or [""]
    a, b = a + [""] * (len(b) - len(a)), b + [""] * (len(a) - len(b))
    return [f"{x:<{width}} | {y}" for x, y in zip(a, b, strict=True)]


def _steer(ns: argparse.Namespace) -> int:
    import shutil

    from .steer_side_by_side import generate_side_by_side, pick_coder
    from .subject import open_subject

    if hasattr(ns, "coders"):  # no run: the model comes from the flags, the coders from their specs
        subject = open_subject(with_args(RunConfig(), ns), None)
    else:
        run = RunDir(_run_dir(ns))
        run.read_config()  # not a run: say so before anything loads
        subject = open_subject(_config(ns, run), run)
    name, coder = pick_coder(subject.coders, ns.hookpoint, subject.lm.model)
    results = [
        generate_side_by_side(
            subject.lm,
            coder,
            prompt,
            ns.latent,
            mode=ns.mode,
            strength=ns.strength,
            target_kl=ns.target_kl,
            max_new_tokens=ns.max_new_tokens,
            top_k=ns.top_tokens,
        )
        for prompt in ns.prompts
    ]
    width = max(20, (shutil.get_terminal_size((100, 20)).columns - 3) // 2)
    for prompt, r in zip(ns.prompts, results, strict=True):
        how = "ablate" if ns.mode == "ablate" else f"{ns.mode} {r.strength:.4g}"
        print(f"{name} latent {ns.latent}: {how}, next-token KL {r.kl:.4g} nats")
        print(f"prompt: {prompt}")
        print(
            "\n".join(
                _columns("clean", "steered", width)
                + ["-" * width + "-+-" + "-" * width]
                + _columns(r.clean, r.steered, width)
            )
        )
        rises = ", ".join(f"{c.token!r} {c.clean:.3f}->{c.steered:.3f}" for c in r.top_token_changes)
        print(f"more likely next: {rises or '(none)'}\n")
    return 0


def _app_parser(sub) -> None:
    from dataclasses import fields

    from .app.config import AppConfig

    help = "Serve the Gradio app over a run directory: explore, explain, score, intervene, publish."
    p = sub.add_parser("app", help=help, description=help + " Settings also come from INTERP_* environment variables.")
    p.add_argument(
        "run",
        metavar="RUN_DIR",
        nargs="?",
        default=None,
        help="Run directory to open first, inside the workspace (default: runs/demo)",
    )
    p.add_argument(
        "--quiet", action="store_true", help="No progress bars in the console (the page still shows progress)"
    )
    add_config_args(p, AppConfig, "app")
    p.set_defaults(**{f.name: None for f in fields(AppConfig)})  # unset flags fall back to the environment


def _app(ns: argparse.Namespace) -> int:
    from dataclasses import fields, replace

    from .app.config import AppConfig, config_from_env

    given = {f.name: getattr(ns, f.name) for f in fields(AppConfig) if getattr(ns, f.name) is not None}
    config = replace(config_from_env(), **given, **({"run_dir": ns.run} if ns.run else {}))
    try:
        import gradio  # noqa: F401  (the app's one optional dependency)

        from .app import launch
    except ImportError:
        raise InterpError("The app needs Gradio: pip install 'interp[app]'.") from None
    launch(config)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``interp`` argument parser with all subcommands."""
    parser = argparse.ArgumentParser(prog="interp", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub, "run", "The main job: every pipeline stage, in order, into one run directory.", makes_run=True)
    _run_parser(sub, "cache", "Cache sparse latent activations over a corpus (resumable).", makes_run=True)
    _run_parser(
        sub,
        "explain",
        "Explain latents of a cached run with an LLM (resumable). The model, corpus, coders and "
        "record settings are the run's own.",
    )
    _run_parser(
        sub,
        "score",
        "Score a run's explanations against held-out examples and a random baseline (resumable). "
        "The model, corpus, coders and record settings are the run's own.",
    )
    summary = _run_parser(
        sub, "summary", "Print the summary of one explainer's scores of a run (and rewrite its plots).", sections=()
    )
    summary.add_argument(
        "--explainer",
        default=None,
        help="Whose explanations' scores to summarise (default: the run's own explainer, from its config.json)",
    )
    _run_parser(
        sub,
        "validate",
        "Check the scorers on planted latents of known meaning: true explanation vs a random one.",
        run=False,
        sections=("model", "corpus", "records", "explain", "score", "intervene"),
    )
    _compare_parser(sub)
    _export_parser(sub)
    _publish_parser(sub)
    _steer_parser(sub)
    _app_parser(sub)
    return parser


def _stage(ns: argparse.Namespace) -> int:
    """``run`` and ``cache`` make (or resume) a run; ``explain``, ``score`` and ``summary`` refuse a folder that is
    none."""
    from . import stages

    run_dir = _run_dir(ns)
    run = RunDir(run_dir)
    if ns.command == "summary":
        summary = stages.summarize_run(run_dir, ns.explainer)
    elif ns.command == "explain":
        summary = stages.run_explain(_config(ns, run), run_dir, progress=not ns.quiet, wait=ns.wait)
    elif ns.command == "score":
        summary = stages.run_score(  # with no --scorers, every scorer of a replaced explanation scores it again
            _config(ns, run), run_dir, progress=not ns.quiet, rescore_replaced=not hasattr(ns, "scorers"), wait=ns.wait
        )
    elif ns.command == "run":
        summary = stages.run(
            _config(ns, run), run_dir, overwrite=ns.overwrite, progress=not ns.quiet, wait=ns.wait, force=ns.force
        )
    else:
        summary = stages.run_cache(
            _config(ns, run), run_dir, overwrite=ns.overwrite, progress=not ns.quiet, wait=ns.wait, force=ns.force
        ).summary
    _print_summary(summary, run_dir)
    return 0


def _validate(ns: argparse.Namespace) -> int:
    from .validate import format_validation, run_validation

    print(format_validation(run_validation(_config(ns, None), progress=not ns.quiet)))
    return 0


COMMANDS = {
    "run": _stage,
    "cache": _stage,
    "explain": _stage,
    "score": _stage,
    "summary": _stage,
    "validate": _validate,
    "compare": _compare,
    "export": _export,
    "publish": _publish,
    "steer": _steer,
    "app": _app,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``interp`` command: expected mistakes print one line and exit 2."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ns = build_parser().parse_args(argv)
    if ns.quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    try:
        return COMMANDS[ns.command](ns)
    except InterpError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
