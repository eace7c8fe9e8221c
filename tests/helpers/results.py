"""What a run's results database holds, line by line, as the tests read it (the JSONL files were read so before)."""

from pathlib import Path

from interp.rundir import RunDir


def explanation_lines(run_dir: str | Path) -> list[dict]:
    """Every explanation line the run ever stored, replaced ones too, in the order written."""
    return _history(run_dir, "explanations")


def score_lines(run_dir: str | Path) -> list[dict]:
    """Every score line the run ever stored (with its examples), replaced ones too, in the order written."""
    return _history(run_dir, "scores")


def _history(run_dir: str | Path, table: str) -> list[dict]:
    with RunDir(Path(run_dir)).reading() as db:
        return [{k: v for k, v in line.items() if k != "current"} for line in db.lines(table, current_only=False)]
