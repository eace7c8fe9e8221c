"""How long a command takes to start with many cached LLM replies: the results database against the JSONL of before.

A served run asks about 140 requests a latent (``benchmarks/served_scale.py``), so a million explained latents leave
over a hundred million replies in the response cache. The response cache used to be ``llm_cache.jsonl``, read whole
into a dict when a command started (``CachedClient``); it is now a table of the run's results database
(``interp.results.db``), looked up by key. For each size, a cache of that many replies (shaped as the explainer's:
a sha256 key and a reply of ~200 bytes) is made once; then, each in a fresh process, the time from opening it to the
answers of one batch of 64 lookups (half of them cached), and the process's peak resident set:

- ``database``: this version (``ResultsDB.replies``);
- ``jsonl``: the previous version's own code (``--previous``, a checkout of the commit before the database, e.g.
  ``git worktree add /tmp/prev b9bf68b``), its ``CachedClient`` over the same replies as ``llm_cache.jsonl``, up to
  ``--jsonl-max`` replies (it reads the whole file into memory).

    python benchmarks/reply_cache_scale.py --sizes 0 1000000 10000000 --previous /tmp/prev
"""

import argparse
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOOKUPS = 64

CHILD = r"""
import json, resource, sys, time
kind, path, keys = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
if kind == "database":
    from interp.results.db import ResultsDB
else:
    from interp.llm.response_cache import CachedClient

    class Client:
        model = "m"
start = time.perf_counter()  # imports apart: the same in both
if kind == "database":
    found = ResultsDB(path).replies(keys)
else:
    store = CachedClient(Client(), path)._store
    found = {k: store[k] for k in keys if k in store}
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "found": len(found), "peak_mib": peak}))
"""


def key(i: int) -> str:
    """The i-th reply's key: a sha256, as ``cache_key`` makes."""
    return hashlib.sha256(f"request {i}".encode()).hexdigest()


def reply(i: int) -> dict:
    """A stored explainer reply of about 200 bytes, as ``CachedClient`` stores a ``Completion``."""
    return {
        "text": f"[EXPLANATION]: Words of kings and their courts, variant {i}",
        "error": None,
        "finish_reason": "stop",
        "prompt_tokens": 812,
        "completion_tokens": 14,
    }


def make_database(path: Path, n: int) -> None:
    """A results database holding ``n`` replies (made once, in one transaction)."""
    if path.is_file():
        return
    from interp.results.db import ResultsDB

    db = ResultsDB(path)
    db.count_replies()  # creates the tables
    db.close()
    con = sqlite3.connect(path)
    with con:
        con.executemany(
            "INSERT INTO replies (key, method, value) VALUES (?, 'generate', ?)",
            ((key(i), json.dumps(reply(i))) for i in range(n)),
        )
    con.close()


def make_jsonl(path: Path, n: int) -> None:
    """The same replies as the previous version's ``llm_cache.jsonl``."""
    if path.is_file():
        return
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"key": key(i), "method": "generate", "value": reply(i)}) + "\n")


def measure(kind: str, path: Path, n: int, pythonpath: Path) -> dict:
    """Open and look up one batch in a fresh process; its time and peak memory."""
    keys = [key(i) for i in range(0, n, max(1, n // (LOOKUPS // 2)))][: LOOKUPS // 2]
    keys += [key(n + i) for i in range(LOOKUPS - len(keys))]  # not cached
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, kind, str(path), json.dumps(keys)],
        capture_output=True,
        text=True,
        env=env,
        cwd=pythonpath,  # `python -c` puts the working directory first on sys.path
    )
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[0, 1_000_000, 10_000_000])
    p.add_argument("--previous", type=Path, help="a checkout of the version before the database (for the JSONL)")
    p.add_argument("--jsonl-max", type=int, default=1_000_000, help="largest JSONL cache measured (read whole)")
    p.add_argument("--work", type=Path, help="where the caches are made (default: a temporary folder)")
    args = p.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="reply-cache-"))
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    for n in args.sizes:
        folder = work / str(n)
        folder.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        make_database(folder / "results.sqlite", n)
        made = time.perf_counter() - t
        db = measure("database", folder / "results.sqlite", n, ROOT)
        size = (folder / "results.sqlite").stat().st_size
        old = None
        if args.previous and n <= args.jsonl_max:
            make_jsonl(folder / "llm_cache.jsonl", n)
            old = measure("jsonl", folder / "llm_cache.jsonl", n, args.previous)
        rows.append((n, db, size, old, made))
        print(f"{n:,} replies: database {db['seconds']:.3f} s, {db['found']} of {LOOKUPS} found, made in {made:.0f} s")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(
        "| cached replies | database: open + 64 lookups, s | peak MiB | file MiB "
        "| jsonl (before): load + lookups, s | peak MiB | jsonl / database |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n, db, size, old, _ in rows:
        then = (
            f"{old['seconds']:.2f} | {old['peak_mib']:.0f} | {old['seconds'] / db['seconds']:,.0f}x"
            if old
            else "- | - | -"
        )
        print(f"| {n:,} | {db['seconds']:.3f} | {db['peak_mib']:.0f} | {size / 2**20:,.0f} | {then} |")


if __name__ == "__main__":
    main()
