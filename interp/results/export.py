"""``interp export RUN --jsonl DIR``: a run's results as the flat JSONL files runs kept before the database.

``DIR/explanations.jsonl`` and ``DIR/scores.jsonl`` hold the current line per key, as ``RunDir.explanations`` and
``RunDir.scores`` give them (scores with their examples); with ``history``, every line ever written, replaced ones
too, each with ``current``. The lines are streamed from the database a page at a time and each file is replaced
whole (``write_atomic``), so an export of a million latents holds a page, and a killed one leaves no half file.
"""

import json
from pathlib import Path

from ..atomic import write_atomic
from ..errors import InterpError
from ..rundir import EXPLANATIONS, SCORES, RunDir


def export_jsonl(run: RunDir, out: Path, *, history: bool = False) -> dict[str, int]:
    """Write the run's explanations and scores as JSONL into ``out``; file name -> lines written."""
    run.read_config()
    if out.resolve() == run.path.resolve():
        raise InterpError(f"Export into another folder than the run itself ({run.path}): its JSONL would be imported.")
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    with run.reading() as db:
        for table, name in (("explanations", EXPLANATIONS), ("scores", SCORES)):
            counts[name] = 0

            def write(tmp: Path, table: str = table, name: str = name) -> None:
                with open(tmp, "w", encoding="utf-8") as f:
                    for line in db.lines(table, current_only=not history):
                        f.write(json.dumps(line, ensure_ascii=False) + "\n")
                        counts[name] += 1

            write_atomic(out / name, write)
    return counts
