"""Where coder weights come from: a local path, or a Hugging Face repo (optionally a subfolder)."""

from pathlib import Path

from ..errors import CoderFormatError


def fetch(source: str, subfolder: str | None = None) -> Path:
    """A local path for ``source``: itself if it exists, else a Hub snapshot.

    Hub sources are ``owner/repo`` or ``owner/repo/sub/folder``; only the subfolder (and
    ``subfolder`` below it, if given) is downloaded.
    """
    path = Path(source).expanduser()
    if path.exists():
        return path / subfolder if subfolder else path
    parts = source.strip("/").split("/")
    if len(parts) < 2 or source.startswith((".", "/", "~")):
        raise CoderFormatError(f"Coder source not found: {source!r} is neither a local path nor a Hub repo id.")
    repo, sub = "/".join(parts[:2]), "/".join(parts[2:] + ([subfolder] if subfolder else []))
    from huggingface_hub import snapshot_download

    try:
        root = Path(snapshot_download(repo, allow_patterns=[f"{sub}/*"] if sub else None))
    except Exception as e:  # the hub client raises many types; all mean "not reachable"
        raise CoderFormatError(
            f"Cannot fetch coder {source!r} from the Hub ({type(e).__name__}). "
            "Check the repo id, your network, or download it and pass the local folder."
        ) from e
    return root / sub if sub else root
