"""The app's workspace: the one folder it reads and writes in.

Every path that comes from the browser (a run directory, a local model folder) is resolved
here, symbolic links included, and refused if it leaves the workspace. The operator's own
configuration (the command line, the environment) decides where the workspace is.
"""

import os
import re
from pathlib import Path

from ..errors import InterpError
from ..rundir import CONFIG, RunDir, not_a_run

SEARCH_DEPTH = 3
"""How deep below the workspace run directories are listed."""
MAX_PATH_CHARS = 1024
"""Longest path the page may name: a clear refusal, where the system's own limit would be an unreadable error."""
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class WorkspaceError(InterpError, ValueError):
    """A path that leaves the workspace, or a run directory that is not there."""


class Workspace:
    """Resolves user-supplied paths inside ``root`` and lists the run directories in it."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise WorkspaceError(f"The workspace {self.root} is not a folder: create it or give another --workspace.")

    def resolve(self, path: str | Path) -> Path:
        """``path`` (relative to the workspace, or absolute inside it) as an absolute path inside the workspace.

        >>> Workspace("/w").resolve("runs/demo")   # /w/runs/demo
        >>> Workspace("/w").resolve("../etc")      # WorkspaceError
        """
        text = str(path).strip()
        if not text:
            raise WorkspaceError("No path given: type a folder inside the workspace, e.g. runs/demo.")
        if "\x00" in text:
            raise WorkspaceError("A path cannot contain a NUL character.")
        if len(text) > MAX_PATH_CHARS:
            raise WorkspaceError(f"A path of {len(text):,} characters is too long: the limit is {MAX_PATH_CHARS:,}.")
        candidate = Path(os.path.expanduser(text)) if text.startswith("~") else Path(text)
        try:
            full = (candidate if candidate.is_absolute() else self.root / candidate).resolve()
            full.exists()  # a name longer than the file system allows fails here, not later in a check
        except OSError as e:
            raise WorkspaceError(f"Cannot use the path {text!r}: {e.strerror or e}.") from None
        if full != self.root and self.root not in full.parents:
            raise WorkspaceError(
                f"{text!r} is outside the workspace {self.root}; give a path inside it, e.g. runs/demo."
            )
        return full

    def relative(self, path: Path) -> str:
        """How the user names ``path`` (inside the workspace): relative to it, '.' for the root itself."""
        return str(Path(path).relative_to(self.root)) if Path(path) != self.root else "."

    def run_dir(self, path: str | Path) -> Path:
        """The run directory ``path`` inside the workspace; a clear error when it is missing or not a run."""
        full = self.resolve(path)
        if not full.is_dir():
            raise WorkspaceError(f"There is no run directory {path!r} in the workspace: {self._hint()}")
        if not RunDir(full).is_run():
            raise WorkspaceError(not_a_run(repr(path), self._hint()))
        return full

    def runs(self) -> list[str]:
        """Run directories (folders holding a config.json) up to ``SEARCH_DEPTH`` levels down, as relative paths."""
        found = []
        for top, dirs, files in os.walk(self.root):
            depth = len(Path(top).relative_to(self.root).parts)
            if CONFIG in files and Path(top) != self.root:
                found.append(self.relative(Path(top)))
                dirs[:] = []  # a run's own folders (cache, coders) hold no runs
            elif depth >= SEARCH_DEPTH:
                dirs[:] = []
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        return sorted(found)

    def model_source(self, name: str) -> str:
        """A model named in the app: a Hub id as it is, or a folder/file inside the workspace as an absolute path."""
        text = name.strip()
        inside = self.root / text
        try:
            local = (
                inside.exists() or Path(text).exists()
            )  # transformers would read a folder of that name, wherever it is
        except OSError:  # no such file can exist (a name too long): not a local model
            local = False
        if text and not text.startswith(("/", "~", ".")) and not local and HUB_ID.match(text) and ".." not in text:
            return text
        return str(self.resolve(text))

    def _hint(self) -> str:
        runs = self.runs()
        listing = f"the runs here are {', '.join(runs[:10])}" if runs else "there are no runs here yet"
        return f"make one with `interp run --run-dir RUN` inside {self.root}; {listing}."
