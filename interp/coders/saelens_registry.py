"""SAELens release names (``saelens:RELEASE/SAE_ID``) resolved through SAELens' own registry file.

SAELens users name an SAE by a release and an id within it (``gemma-scope-2b-pt-res-canonical`` and
``layer_12/width_16k/canonical``); ``sae_lens/pretrained_saes.yaml``, shipped inside the sae-lens
package, maps each to a Hub repo and folder, the converter that reads it, config overrides, and the
SAE's Neuronpedia id. The file is found with ``importlib.util.find_spec`` and read as YAML, so sae-lens
need not be importable (or its dependencies installed); ``--saelens-registry PATH`` names another copy.
"""

import difflib
import functools
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import CoderFormatError
from .base import SparseCoder
from .dense import load_gemmascope, load_saelens

REGISTRY_FILE = "pretrained_saes.yaml"

CONVERTERS = {None: "saelens", "gemma_2": "gemmascope", "gemma_2_transcoder": "gemmascope"}
"""SAELens ``conversion_func`` values interp reads, and the loader that reads what they convert: none means
SAELens' own folder layout; Gemma Scope's ``params.npz`` is ours too. Other converters are refused."""

NEAR_MISS = 0.85
"""How alike (difflib's ratio) a name must be to a release to be read as a mistyped one rather than a Hub owner."""


@dataclass(frozen=True)
class SaelensEntry:
    """One SAE of a SAELens release, as its registry describes it."""

    release: str
    sae_id: str
    repo_id: str
    path: str
    """The SAE's folder inside ``repo_id``."""
    conversion_func: str | None = None
    model: str | None = None
    neuronpedia: str | None = None
    """Neuronpedia's ``MODEL/SOURCE`` id of this SAE, e.g. ``gemma-2-2b/12-gemmascope-res-16k``."""
    config_overrides: dict = field(default_factory=dict)
    """Set over the SAE's ``cfg.json``, as SAELens' ``from_pretrained`` does."""
    norm_scaling_factor: float | None = None
    """The input scaling SAELens folds in for ``normalize_activations: expected_average_only_in``."""

    @property
    def location(self) -> str:
        """Where the SAE's files are: ``repo_id/path`` (a Hub repo's subfolder, or a local folder)."""
        return f"{self.repo_id.rstrip('/')}/{self.path.strip('/')}"

    def describe(self) -> dict:
        """What the coder's ``coder.json`` records of where it came from."""
        return {
            "saelens_release": self.release,
            "saelens_id": self.sae_id,
            "repo_id": self.repo_id,
            "path": self.path,
            "neuronpedia": self.neuronpedia,
        }


def installed_registry() -> Path | None:
    """The installed sae-lens package's ``pretrained_saes.yaml``, found without importing sae-lens; None if absent."""
    try:
        spec = importlib.util.find_spec("sae_lens")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / REGISTRY_FILE
        if path.is_file():
            return path
    return None


@functools.lru_cache(maxsize=4)
def _parse(text: str):
    """YAML of a registry; libyaml's loader where present: SAELens' own file (1 MB, 13,000 SAEs) takes seconds
    with the pure-Python one."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def read_registry(path: str | Path) -> dict[str, dict]:
    """Release name -> its registry entry, from a file in SAELens' schema.

    Recent SAELens files list releases at the top level; older ones (before 4) under ``SAE_LOOKUP``.
    """
    path = Path(path).expanduser()
    try:
        data = _parse(path.read_text())
    except OSError as e:
        raise CoderFormatError(f"Cannot read the SAELens registry {path}: {e.strerror or e}.") from None
    except yaml.YAMLError as e:
        raise CoderFormatError(f"The SAELens registry {path} is not valid YAML: {' '.join(str(e).split())}") from None
    if isinstance(data, dict) and isinstance(data.get("SAE_LOOKUP"), dict):
        data = data["SAE_LOOKUP"]
    if not isinstance(data, dict) or not all(isinstance(v, dict) and "saes" in v for v in data.values()):
        raise CoderFormatError(
            f"{path} is not a SAELens registry: expected release names mapping to repo_id, model and saes."
        )
    return data


def _closest(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.4)
    return f"closest: {', '.join(close)}" if close else f"{len(names)} in all, e.g. {', '.join(names[:5])}"


def resolve(release: str, sae_id: str, releases: dict[str, dict], where: str) -> SaelensEntry:
    """The registry entry of ``sae_id`` in ``release``; an unknown one names the closest (``where``: the file)."""
    if release not in releases:
        raise CoderFormatError(f"No SAELens release {release!r} in {where} ({_closest(release, sorted(releases))}).")
    value = releases[release]
    saes = {str(s.get("id")): s for s in value.get("saes") or [] if isinstance(s, dict)}
    if not sae_id:
        raise CoderFormatError(
            f"SAELens release {release!r} needs an SAE id: saelens:{release}/SAE_ID ({_closest('', sorted(saes))})."
        )
    if sae_id not in saes:
        ids = sorted(saes)
        raise CoderFormatError(
            f"No SAE {sae_id!r} in SAELens release {release!r} ({_closest(sae_id, ids)}); "
            f"give it as saelens:{release}/SAE_ID."
        )
    sae = saes[sae_id]
    if not value.get("repo_id") or not sae.get("path"):
        raise CoderFormatError(f"SAELens release {release!r} in {where} gives no repo_id or path for {sae_id!r}.")
    overrides = value.get("config_overrides") or {}
    return SaelensEntry(
        release=release,
        sae_id=sae_id,
        repo_id=str(value["repo_id"]),
        path=str(sae["path"]),
        conversion_func=value.get("conversion_func"),
        model=value.get("model"),
        neuronpedia=sae.get("neuronpedia"),
        config_overrides=dict(overrides) if isinstance(overrides, dict) else {},
        norm_scaling_factor=sae.get("norm_scaling_factor"),
    )


def lookup(source: str, registry: str | Path | None = None) -> SaelensEntry | None:
    """The registry entry ``source`` (``RELEASE/SAE_ID``) names, or None when it is a local path or a Hub id.

    ``registry`` is a file in SAELens' schema; without it, the installed sae-lens's own (None when
    there is neither). ``source`` is taken for a release name where its first part is one, or comes
    close to one (a typo gets the closest names, not a Hub download of a repo that does not exist),
    or has no ``/`` at all (a Hub id has one).
    """
    if Path(source).expanduser().exists():
        return None
    path = Path(registry) if registry is not None else installed_registry()
    if path is None:
        return None
    releases = read_registry(path)
    release, _, sae_id = source.partition("/")
    near = difflib.get_close_matches(release, list(releases), n=1, cutoff=NEAR_MISS)
    if release in releases or near or "/" not in source:
        return resolve(release, sae_id, releases, str(path))
    return None


def load_registered(entry: SaelensEntry, hookpoint: str | None = None) -> SparseCoder:
    """Load the SAE ``entry`` names with the loader its ``conversion_func`` calls for; its source reads
    ``RELEASE/SAE_ID`` and its description says where it came from."""
    if entry.conversion_func not in CONVERTERS:
        known = ", ".join("none (SAELens folders)" if c is None else c for c in CONVERTERS)
        raise CoderFormatError(
            f"SAELens release {entry.release!r} is read by SAELens' {entry.conversion_func!r} converter, "
            f"which interp does not reimplement (it reads conversion_func: {known})."
        )
    if CONVERTERS[entry.conversion_func] == "gemmascope":
        coder = load_gemmascope(entry.location, hookpoint)
    else:
        coder = load_saelens(
            entry.location,
            hookpoint,
            cfg_overrides=entry.config_overrides,
            norm_scaling_factor=entry.norm_scaling_factor,
        )
    coder.source = f"{entry.release}/{entry.sae_id}"
    coder.origin = entry.describe()
    return coder
