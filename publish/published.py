"""Reading published explanations back, to browse them and compare them with a run's.

Three sources, all returned as ``{config: Dataset}`` in the schema of ``publish.dataset``:

* a dataset published by interp: a folder written by ``interp publish`` (or ``--dry-run``), or
  a Hub dataset id, which is downloaded first;
* the JSON layout of EleutherAI/auto_interp_explanations: explanation files
  ``<Model>/<size>/<site>/<hookpoint>_feature.json`` holding ``{latent: explanation}``, and score
  files ``scores/<model>/<size>/<site>/<scorer>_layer_<N>.json`` holding ``{latent: score}``.
  A score file belongs to the explanation file with the same (case-insensitive) folder and
  layer. Those files do not say which metric a score is, so its ``metric`` is ``score``;
* a results folder of EleutherAI delphi (``publish.delphi_results``): explanations and per-example
  score files, scored again with our metrics.
"""

import json
import re
from pathlib import Path

from datasets import Dataset, load_dataset
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, OfflineModeIsEnabled

from .dataset import (
    FEATURES,
    FLOAT_METRICS,
    INT_METRICS,
    SCHEMA_VERSION,
    SPLIT,
    PublishError,
    without_record,
    without_search,
)
from .delphi_results import is_delphi_results, read_delphi
from .hub import CARD, hub_endpoint

IMPORTED_EXPLAINER = "eleuther"
"""The explainer name given to explanations read from the EleutherAI layout."""
SCORES_DIR = "scores"
EXPLANATION_FILE = re.compile(r"^(?P<hookpoint>.+)_feature\.json$")
SCORE_FILE = re.compile(r"^(?P<scorer>.+)_layer_(?P<layer>\d+)\.json$")
LAYER = re.compile(r"layers?[._](\d+)")


def load_folder(folder: str | Path, *, cache_dir: str | None = None) -> dict[str, Dataset]:
    """Every config of a dataset folder written by interp, read with ``datasets.load_dataset``."""
    folder = Path(folder)
    card = DatasetCard.load(folder / CARD)
    version = (card.data.get("interp") or {}).get("schema_version")
    if version is None:
        raise PublishError(f"{folder / CARD} has no interp.schema_version: this is not a dataset published by interp.")
    if version not in (SCHEMA_VERSION, BEFORE_SEARCH):
        raise PublishError(
            f"{folder} uses schema {version}; this interp reads {SCHEMA_VERSION} and {BEFORE_SEARCH}. Upgrade interp "
            "to read it."
        )
    configs = MetadataConfigs.from_dataset_card_data(card.data)
    # Rebuilt on every load: datasets keys its cache of a local folder by the folder's name and configs, not by its
    # files, so a second folder of the same name (another run published to `dataset/`) read back the first's rows.
    tables = {
        name: load_dataset(str(folder), name, split=SPLIT, cache_dir=cache_dir, download_mode="force_redownload")
        for name in configs
    }
    return tables if version == SCHEMA_VERSION else {name: _with_search(t) for name, t in tables.items()}


BEFORE_SEARCH = "interp-explanations/1"
"""The schema before the search columns: its rows are read with no search and no candidates."""


def _with_search(table: Dataset) -> Dataset:
    """A table of schema 1 in today's schema: the search columns empty, as for an explanation no search chose."""
    return table.map(
        lambda _: {**without_search(), "schema_version": SCHEMA_VERSION}, features=FEATURES, desc="schema 1 to 2"
    )


def _latent(key: str, path: Path) -> int:
    try:
        return int(key)
    except ValueError:
        raise PublishError(f"{path}: key {key!r} is not a latent index; expected {{latent: value}}.") from None


def _read_map(path: Path, kind: type | tuple, what: str) -> dict[int, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise PublishError(f"Cannot read {path}: {e}") from e
    if not isinstance(data, dict):
        raise PublishError(f"{path} holds a {type(data).__name__}; expected {{latent: value}}.")
    bad = [k for k, v in data.items() if v is not None and not isinstance(v, kind)]
    if bad:
        raise PublishError(f"{path}: the value of latent {bad[0]} is not {what}.")
    return {_latent(k, path): v for k, v in data.items()}


def _layer(name: str) -> int | None:
    m = LAYER.search(name)
    return int(m.group(1)) if m else None


def _imported_row(
    model: str, hookpoint: str, coder: str, latent: int, text: str | None, scores: dict[str, float | None]
) -> dict:
    empty = {k: None for k in (*INT_METRICS, *FLOAT_METRICS)}
    return {
        "schema_version": SCHEMA_VERSION,
        "model": model,
        "hookpoint": hookpoint,
        "coder": coder,
        "coder_kind": IMPORTED_EXPLAINER,
        "coder_source": coder,
        "latent": latent,
        "status": "ok" if text else None,
        "explanation": text,
        "explainer": IMPORTED_EXPLAINER if text else None,
        "explanations": [
            {"explainer": IMPORTED_EXPLAINER, "explanation": text, "status": "ok", "llm": None, "note": None}
        ]
        if text
        else [],
        "scores": [
            {
                "scorer": s,
                "explainer": IMPORTED_EXPLAINER,
                "metric": "score",
                "value": v,
                "baseline_value": None,
                "baseline_explanation": None,
                "metrics": empty,
                "other_metrics": "{}",
            }
            for s, v in sorted(scores.items())
        ],
        **without_record(),
    }


def read_eleuther(folder: str | Path) -> dict[str, Dataset]:
    """A folder in the EleutherAI/auto_interp_explanations layout, as one config per explanation file.

    Score files with no explanation file of their own become configs of scores alone, so
    nothing in the folder is dropped.
    """
    folder = Path(folder)
    units: dict[tuple[str, int | None], dict] = {}
    for path in sorted(folder.rglob("*_feature.json")):
        rel = path.relative_to(folder)
        if rel.parts[0] == SCORES_DIR:
            continue
        hookpoint = EXPLANATION_FILE.match(path.name).group("hookpoint")
        site = "/".join(rel.parts[:-1])
        units[(site.lower(), _layer(hookpoint))] = {
            "model": rel.parts[0] if len(rel.parts) > 1 else "",
            "hookpoint": hookpoint,
            "coder": site,
            "config": "_".join([*rel.parts[:-1], hookpoint]),
            "explanations": _read_map(path, str, "a string"),
            "scores": {},
        }
    score_root = folder / SCORES_DIR
    for path in sorted(score_root.rglob("*.json")) if score_root.is_dir() else []:
        m = SCORE_FILE.match(path.name)
        if m is None:
            raise PublishError(f"{path}: score files are named <scorer>_layer_<N>.json.")
        rel = path.relative_to(score_root)
        site, layer = "/".join(rel.parts[:-1]), int(m.group("layer"))
        unit = units.setdefault(
            (site.lower(), layer),
            {
                "model": rel.parts[0] if len(rel.parts) > 1 else "",
                "hookpoint": f"layers.{layer}",
                "coder": site,
                "config": "_".join([*rel.parts[:-1], f"layers.{layer}"]),
                "explanations": {},
                "scores": {},
            },
        )
        unit["scores"][m.group("scorer")] = _read_map(path, (int, float), "a number")
    if not units:
        raise PublishError(
            f"{folder} has no *_feature.json explanation files "
            f"nor {SCORES_DIR}/**/<scorer>_layer_<N>.json score files."
        )
    tables = {}
    for unit in sorted(units.values(), key=lambda u: u["config"]):
        latents = sorted(set(unit["explanations"]).union(*unit["scores"].values()))
        rows = [
            _imported_row(
                unit["model"],
                unit["hookpoint"],
                unit["coder"],
                i,
                unit["explanations"].get(i),
                {s: values[i] for s, values in unit["scores"].items() if i in values},
            )
            for i in latents
        ]
        tables[unit["config"]] = Dataset.from_list(rows, features=FEATURES)
    return tables


def load_published(
    source: str | Path,
    *,
    endpoint: str | None = None,
    token: str | None = None,
    revision: str | None = None,
    allow_patterns: list[str] | None = None,
    cache_dir: str | None = None,
) -> dict[str, Dataset]:
    """Published explanations as ``{config: Dataset}``, from a local folder or a Hub dataset id.

    A folder is read as an interp dataset when it has a card with ``interp.schema_version``,
    else as a delphi results folder when it has delphi's latent files, else as the EleutherAI JSON layout.
    A Hub id is downloaded first (``allow_patterns`` keeps part of a large repository).

    >>> tables = load_published("runs/demo/publish")
    >>> tables = load_published("EleutherAI/auto_interp_explanations", allow_patterns=["Gemma/16k/res/*"])
    """
    path = Path(source)
    if not path.exists():
        if str(source).count("/") != 1:
            raise PublishError(f"{source} is neither a folder nor a Hub dataset id (owner/name).")
        try:
            path = Path(
                snapshot_download(
                    str(source),
                    repo_type="dataset",
                    revision=revision,
                    endpoint=hub_endpoint(endpoint),
                    token=token,
                    allow_patterns=allow_patterns,
                    cache_dir=cache_dir,
                )
            )
        except (HfHubHTTPError, OfflineModeIsEnabled, EntryNotFoundError, ValueError) as e:
            first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
            raise PublishError(f"Cannot download dataset {source}: {first}") from e
    card = path / CARD
    if card.is_file() and (DatasetCard.load(card).data.get("interp") or {}).get("schema_version"):
        return load_folder(path, cache_dir=cache_dir)
    if is_delphi_results(path):
        return read_delphi(path)
    return read_eleuther(path)


def _key(row: dict) -> tuple[str, int]:
    return row["hookpoint"].removeprefix("model."), row["latent"]


def _main_scores(row: dict) -> dict[str, float | None]:
    return {f"{s['scorer']} ({s['explainer']})": s["value"] for s in row["scores"]}


def compare_published(a: Dataset, b: Dataset) -> list[dict]:
    """Latents present in both datasets (same hookpoint, ignoring a leading ``model.``, and index), side by side.

    Each item has ``hookpoint``, ``latent``, then ``a``/``b``: the explanation and the main
    score of each (scorer, explainer) on each side.
    """
    right = {_key(r): r for r in b}
    out = []
    for row in a:
        other = right.get(_key(row))
        if other is not None:
            out.append(
                {
                    "hookpoint": row["hookpoint"],
                    "latent": row["latent"],
                    "a": {"explanation": row["explanation"], "scores": _main_scores(row)},
                    "b": {"explanation": other["explanation"], "scores": _main_scores(other)},
                }
            )
    return out


def browse_rows(tables: dict[str, Dataset]) -> list[dict]:
    """One flat dict per latent (config, hookpoint, latent, status, explanation, then one column per
    scorer), for a table view.
    """
    return [
        {
            "config": name,
            "hookpoint": r["hookpoint"],
            "latent": r["latent"],
            "status": r["status"],
            "explanation": r["explanation"],
            **_main_scores(r),
        }
        for name, table in tables.items()
        for r in table
    ]
