"""Explain and score with 1 and 2 processes (``torchrun --nproc_per_node 2``): seconds, latents per
second and the ratio, for the tokens explainer, the embedding scorer and (``--llm-latents N``) the embedded
SmolLM2 explainer on N latents.

Each command is timed whole, as a user runs it (start-up, model loading and the barrier included): that is what
the split costs or saves. On a CPU-only machine both processes share its cores, so 2 processes show the split's
overhead, not the scaling one GPU per process gives. The load average is printed with the table: timings taken
while other work loads the cores are distorted.

    python benchmarks/process_split.py                          # a tiny random model's run, ~5 minutes on 2 cores
    python benchmarks/process_split.py --run runs/demo --latents 0-199   # a copy of an existing run (left as it is)
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ONE = [sys.executable, "-m", "interp"]
TWO = [  # torchrun (as `accelerate launch --multi_gpu`): `accelerate launch --cpu` starts one process without MPI
    sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "interp",
]  # fmt: skip


def tiny_run(folder: Path) -> Path:
    """A cached run of a 4-layer random Llama (the tests' tiny model): 4,096 tokens, 64 top-k neurons."""
    sys.path.insert(0, str(ROOT))
    from transformers import AutoTokenizer

    from interp.models import embedded_model_dir
    from tests.helpers.models import save_tiny_model

    model = save_tiny_model(folder / "model", AutoTokenizer.from_pretrained(embedded_model_dir()))
    run = folder / "run"
    args = "--num-tokens 4096 --ctx-len 32 --shard-windows 16 --batch-size 16 --coders topk-neurons@model.layers.1.mlp"
    subprocess.run([*ONE, "cache", str(run), "--model", str(model), "--quiet", *args.split()], check=True, cwd=ROOT)
    return run


def timed(command: list[str]) -> float:
    """Seconds ``command`` takes (it must succeed)."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def loadavg() -> str:
    """The 1-, 5- and 15-minute load averages."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.is_file() else 0


def measure(run: Path, stage: str, args: list[str], out: Path) -> list[tuple[float, int]]:
    """(seconds, lines written) with 1 process, then 2, each from the same starting run."""
    results = []
    for launcher in (ONE, TWO):
        work = Path(tempfile.mkdtemp(dir=run.parent)) / "run"
        shutil.copytree(run, work)
        before = lines(work / out)
        seconds = timed([*launcher, stage, str(work), *args, "--quiet"])
        results.append((seconds, lines(work / out) - before))
        shutil.rmtree(work.parent)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="an existing cached run to copy (default: a tiny random model's)")
    parser.add_argument("--latents", default="0-63", help="latents the tokens explainer explains (then scored)")
    parser.add_argument("--llm-latents", type=int, default=0, help="latents the embedded SmolLM2 explains (0: skip)")
    ns = parser.parse_args()
    load_before = loadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if ns.run:
            run = tmp / "run"
            shutil.copytree(ns.run, run, ignore=shutil.ignore_patterns("locks"))
        else:
            run = tiny_run(tmp)
        tokens = ["--explainer", "tokens", "--latents", ns.latents]
        rows = [("explain, tokens explainer", measure(run, "explain", tokens, Path("explanations.jsonl")))]
        subprocess.run([*ONE, "explain", str(run), *tokens, "--quiet"], check=True, cwd=ROOT)
        score = ["--explainer", "tokens", "--scorers", "embedding"]
        rows.append(("score, embedding scorer", measure(run, "score", score, Path("scores.jsonl"))))
        if ns.llm_latents:
            llm = ["--explainer", "default", "--latents", f"0-{ns.llm_latents - 1}", "--llm", "local"]
            rows.append(("explain, SmolLM2 explainer", measure(run, "explain", llm, Path("explanations.jsonl"))))
    load_after = loadavg()
    print(f"load average {load_before} at the start, {load_after} at the end, on {os.cpu_count()} cores")
    print("| stage | lines | 1 process | 2 processes | speed-up (1-process time / 2) |\n|---|---:|---:|---:|---:|")
    for name, ((s1, n1), (s2, n2)) in rows:
        print(f"| {name} | {n1} | {s1:.1f} s, {n1 / s1:.2f}/s | {s2:.1f} s, {n2 / s2:.2f}/s | {s1 / s2:.2f}x |")


if __name__ == "__main__":
    main()
