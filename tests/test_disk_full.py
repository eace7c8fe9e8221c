"""A full disk is one line and loses nothing.

A real tiny tmpfs (where the test may mount one) for the cache: refused at once when clearly too small, stopped
in one line when it fills mid-way, and resumed to the uninterrupted cache byte for byte once it has room; and for
the results database: full when the LLM's replies are committed, and filled inside the transaction of a batch of
explanation or score lines (the lines written into it, its commit still to come): one line, every batch committed
before it kept, nothing of it stored, and the same command resumes to the uninterrupted run. Then ENOSPC at every
other write site of a whole run (and of publish), raised by a wrapper of the ``fsync`` that every write of files
shares (SQLite syncs its own files, beneath Python: the tmpfs tests are its), at the first write of each site in
turn: each stops in one line with exit 2, leaves no partial file or line, and the resumed run ends equal to an
uninterrupted one.
"""

import errno
import json
import os
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from safetensors import safe_open

from interp.cache import covering_shards
from interp.cli import main
from interp.errors import DiskFullError
from interp.results.db import ResultsDB
from tests.helpers.models import save_tiny_model
from tests.helpers.pipeline import scripted_reply, tiny_run_args
from tests.test_crash_resume import check_whole, differences, mid_write, stored, traced_connect
from tests.test_crash_resume import normalised as files

CODER = "model.layers.1.mlp.topk-neurons"


def normalised(run_dir: Path) -> dict[str, object]:
    """``test_crash_resume``'s comparison, with the latent offset indexes read as metadata and tensors: safetensors
    writes a header's metadata keys in no fixed order."""
    out = files(run_dir)
    for rel in [r for r in out if Path(r).name.startswith("index-")]:
        with safe_open(run_dir / rel, "pt") as f:
            out[rel] = (f.metadata(), {k: f.get_tensor(k).tolist() for k in f.keys()})
    return out


def _error_line(err: str) -> str:
    """The one line a failed command printed (the log lines around it are INFO)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a tmpfs of the given size (``mount(kib)``; ``mount(kib, remount=True)`` resizes it); unmounted after."""
    point = tmp_path / "tmpfs"
    point.mkdir()
    mounted = []

    def mount(kib: int, remount: bool = False) -> Path:
        opts = f"size={kib}k" + (",remount" if remount else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(point)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}): the fsync wrapper tests remain")
        mounted.append(point)
        return point

    yield mount
    if mounted:
        subprocess.run(["umount", str(point)], check=False)


@pytest.fixture
def model(tmp_path, smollm_tokenizer) -> Path:
    return save_tiny_model(tmp_path / "model", smollm_tokenizer)


def _cache_args(run_dir: Path, model: Path, url: str = "http://127.0.0.1:9/v1") -> list[str]:
    args = tiny_run_args(run_dir, model, url)
    args[0] = "cache"
    return args


def test_a_full_tmpfs_stops_the_cache_in_one_line_and_the_same_command_resumes_it(tmp_path, model, tmpfs, capsys):
    assert main(_cache_args(tmp_path / "reference", model)) == 0
    small = tmpfs(64)
    run_dir = small / "run"
    assert main(_cache_args(run_dir, model)) == 2  # clearly too small: refused before caching
    line = _error_line(capsys.readouterr().err)
    assert re.search(r"has \d+\.\d KiB free, and this cache needs about \d+\.\d KiB.*--force", line), line
    assert main([*_cache_args(run_dir, model), "--force"]) == 2  # tried anyway: the disk fills
    line = _error_line(capsys.readouterr().err)
    assert line.startswith(f"error: No space left on the device writing {run_dir}/"), line
    assert re.search(r"\(\d+(\.\d)? (bytes|KiB) free there; caching .* still needs about \d+\.\d KiB\)", line), line
    assert "run the same command: it resumes" in line
    assert not mid_write(run_dir)
    tmpfs(1024, remount=True)
    assert main(_cache_args(run_dir, model)) == 0
    for d in (run_dir, tmp_path / "reference"):
        assert len(list(covering_shards(d / "cache" / CODER))) == 4  # every shard whole, by size and sha256
    assert differences(normalised(tmp_path / "reference"), normalised(run_dir)) == []


SITES = {
    "config.json": "config",
    "tokens.safetensors": "token windows",
    "coder.json": "coder description",
    "stats.safetensors": "statistics",
    "stats.json": "statistics totals",
    "summary.json": "summary",
}


def site(path: str) -> str:
    """What kind of write ``path`` is (a file being synced: the target, or its temporary copy)."""
    name = Path(path).name
    if name.startswith("shard-"):
        return "shard" if name.endswith(".safetensors") else "shard sidecar"
    if name.startswith("index-"):
        return "latent offset index"
    if name.endswith(".png"):
        return "plot"
    if name.endswith(".lock.json"):
        return "lock holder"
    if name.endswith(".parquet"):
        return "published table"
    if name == "README.md":
        return "dataset card"
    return SITES.get(name, name)


def test_a_full_disk_at_the_results_database_is_one_line_and_the_same_command_resumes(
    tmp_path, model, tmpfs, server, capsys
):
    server.reply = scripted_reply
    reference = tmp_path / "reference"
    assert main(tiny_run_args(reference, model, server.base_url)) == 0
    disk = tmpfs(16 * 1024)
    run_dir = disk / "run"
    assert main(_cache_args(run_dir, model, server.base_url)) == 0
    filler = disk / "filler"
    filler.write_bytes(bytes(shutil.disk_usage(disk).free - 24 * 1024))  # room for the stage's small files only
    assert main(tiny_run_args(run_dir, model, server.base_url)) == 2
    line = _error_line(capsys.readouterr().err)
    assert line.startswith(f"error: No space left on the device writing {run_dir}/results.sqlite"), line
    assert "run the same command: it resumes" in line and not mid_write(run_dir)
    filler.unlink()
    assert main(tiny_run_args(run_dir, model, server.base_url)) == 0
    assert differences(normalised(reference), normalised(run_dir)) == []


class FillsAt:
    """A trace callback of the run's database connections (``traced_connect``) that fills the disk, a real tmpfs,
    inside the ``nth`` transaction that stores ``table`` lines: at its first row, so the commit finds no room."""

    def __init__(self, disk: Path, table: str, nth: int):
        self.disk, self.table, self.nth = disk, table, nth
        self.filler = disk / "filler"
        self.transactions = 0
        self.inside = False
        self.filled_at = ""

    def __call__(self, sql: str) -> None:
        sql = sql.lstrip()
        if sql.startswith("BEGIN"):
            self.inside = False
        elif sql.startswith(f"INSERT INTO {self.table} ") and not self.inside:
            self.inside = True
            self.transactions += 1
            if self.transactions == self.nth:
                self.fill()
                self.filled_at = sql[:60]

    def fill(self) -> None:
        """Write zeros until not one more byte fits."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        size = 1 << 20
        while size:
            try:
                os.write(fd, bytes(size))
            except OSError:
                size //= 2
        os.close(fd)


def _lines(run_dir: Path, table: str) -> list:
    """Every explanation or score line the database has committed, in the order written, as a read-only connection
    reads them (the killed or failed command's files as it left them): explanation lines without their timing,
    score rows without their id."""
    rows = stored(run_dir)[table]
    if table == "explanations":
        return [{k: v for k, v in json.loads(line).items() if k != "batch_seconds_per_latent"} for _, line in rows]
    return [row[1:] for row in rows]


@pytest.mark.parametrize("table", ["explanations", "scores"])
def test_a_disk_that_fills_inside_a_commit_of_results_is_one_line_keeps_every_earlier_batch_and_resumes(
    tmp_path, model, tmpfs, server, monkeypatch, capsys, table
):
    server.reply = scripted_reply
    args = lambda run_dir: [*tiny_run_args(run_dir, model, server.base_url), "--concurrency", "3"]  # noqa: E731
    reference = tmp_path / "reference"  # 6 latents: two batches of 3 explanations, four of 3 score lines
    assert main(args(reference)) == 0
    disk = tmpfs(16 * 1024)
    run_dir = disk / "run"
    fills = FillsAt(disk, table, nth=2)
    monkeypatch.setattr(sqlite3, "connect", traced_connect(run_dir, fills))
    assert main(args(run_dir)) == 2
    line = _error_line(capsys.readouterr().err)
    assert fills.filled_at, "the disk never filled"
    assert line.startswith(f"error: No space left on the device writing {run_dir}/results.sqlite"), line
    assert "run the same command: it resumes" in line and not mid_write(run_dir)
    monkeypatch.undo()
    fills.filler.unlink()
    assert not check_whole(run_dir), check_whole(run_dir)  # the database whole, no torn row
    assert _lines(run_dir, table) == _lines(reference, table)[:3]  # the first batch kept, nothing of the second
    if table == "scores":
        assert _lines(run_dir, "explanations") == _lines(reference, "explanations")
    assert main(args(run_dir)) == 0
    assert differences(normalised(reference), normalised(run_dir)) == []


def test_a_commit_that_finds_the_disk_full_is_one_error_and_keeps_every_earlier_reply(tmpfs):
    disk = tmpfs(1024)
    db = ResultsDB(disk / "results.sqlite")
    db.add_replies([(f"k{i}", "generate", {"text": "kept"}) for i in range(10)])
    filler = disk / "filler"
    filler.write_bytes(bytes(shutil.disk_usage(disk).free - 64 * 1024))
    with pytest.raises(DiskFullError, match="results.sqlite"):
        db.add_replies([("big", "generate", {"text": "x" * 512 * 1024})])  # one batch, larger than the room left
    filler.unlink()
    again = ResultsDB(db.path)  # as the next command opens it
    assert again.count_replies() == 10 and again.replies(["k3", "big"]) == {"k3": {"text": "kept"}}
    again.add_replies([("big", "generate", {"text": "x" * 512 * 1024})])
    assert again.count_replies() == 11


class FullAt:
    """``os.fsync`` that raises ENOSPC at the first file write of each site not yet failed (``failed``)."""

    def __init__(self):
        self.failed: dict[str, str] = {}
        self.armed = True
        self.real = os.fsync

    def __call__(self, fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if self.armed and os.path.isfile(path) and site(path) not in self.failed:
            self.failed[site(path)] = path
            self.armed = False  # one failure per command
            raise OSError(errno.ENOSPC, "No space left on device")
        self.real(fd)


@pytest.mark.reliability  # about a minute on 2 busy cores: one resumed run per write site
def test_enospc_at_every_write_site_is_one_line_and_the_resumed_run_equals_an_uninterrupted_one(
    tmp_path, model, server, monkeypatch, capsys, record_property
):
    server.reply = scripted_reply
    reference = tmp_path / "reference"
    assert main(tiny_run_args(reference, model, server.base_url)) == 0
    run_dir = tmp_path / "run"
    full = FullAt()
    monkeypatch.setattr(os, "fsync", full)
    for _ in range(30):
        full.armed = True
        code = main(tiny_run_args(run_dir, model, server.base_url))
        err = capsys.readouterr().err
        if code == 0:
            break
        assert code == 2
        path = list(full.failed.values())[-1]
        line = _error_line(err)
        assert line.startswith("error: No space left on the device writing "), line
        assert "free there" in line and "run the same command: it resumes" in line
        assert not mid_write(run_dir), f"a partial file or line after ENOSPC at {path}"
    else:
        pytest.fail("the run never finished")
    assert set(full.failed) >= {
        "config", "token windows", "coder description", "shard", "shard sidecar", "statistics", "statistics totals",
        "summary", "plot", "lock holder", "latent offset index",
    }  # fmt: skip
    assert differences(normalised(reference), normalised(run_dir)) == []
    out = tmp_path / "published"
    publish = ["publish", str(run_dir), "me/features", "--dry-run", "--out", str(out), "--quiet"]
    for _ in range(5):
        full.armed = True
        if main(publish) == 0:
            break
        assert "No space left on the device writing " in _error_line(capsys.readouterr().err)
        assert not any(out.rglob(".*.tmp"))
    assert {"published table", "dataset card"} <= set(full.failed)
    monkeypatch.undo()
    record_property("enospc_sites", ", ".join(sorted(full.failed)))
    print(f"ENOSPC at {len(full.failed)} write sites: {', '.join(sorted(full.failed))}")
    assert main([*publish[:-3], "--out", str(tmp_path / "again"), "--quiet"]) == 0
    again = {p.relative_to(tmp_path / "again"): p.read_bytes() for p in (tmp_path / "again").rglob("*") if p.is_file()}
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == again
    assert json.loads((run_dir / "summary.json").read_text())["scores"]
