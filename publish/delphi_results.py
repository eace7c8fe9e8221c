"""Reading EleutherAI delphi's results folder into the schema of ``publish.dataset``.

delphi writes, under ``results/<name>/``:

* ``explanations/<module>_latent<N>.txt``: the explanation, a JSON string;
* ``scores/<scorer>/<module>_latent<N>.txt`` (``/`` in the name written ``--``): a JSON list of the
  scorer's per-example outputs. The classifiers (``detection``, ``fuzz``) write delphi's
  ``ClassifierOutput`` per example (``str_tokens``, ``activations``, ``distance``, ``activating``,
  ``prediction``, ``probability``, ``correct``); ``simulation`` writes ``ScoredSimulation`` groups
  of per-sequence ``true_activations`` and simulated ``expected_activations``;
* ``run_config.json``: the delphi run's configuration (its ``model`` and ``explainer_model``).

The scores are recomputed with our own metrics from those per-example outputs: accuracy, balanced
accuracy, precision, recall and F1 of the predictions (unparsed replies, ``prediction: null``, count as
failed), AUROC of the probabilities where delphi had log-probs, and for simulation the Pearson
correlation pooled over every token of every sequence, as our simulation scorer reports it. Each
module (hookpoint) becomes one config.
"""

import json
import re
from pathlib import Path

from datasets import Dataset

from interp.scoring.metrics import classification, correlation

from .dataset import FEATURES, FLOAT_METRICS, INT_METRICS, SCHEMA_VERSION, PublishError, without_record

EXPLAINER = "delphi"
"""The explainer name given to explanations read from a delphi results folder."""
EXPLANATIONS_DIR, SCORES_DIR = "explanations", "scores"
LATENT_FILE = re.compile(r"^(?P<module>.+)_latent(?P<index>\d+)\.txt$")
SCORER_NAMES = {"fuzz": "fuzzing"}
"""delphi's scorer folders under the names of our scorers that do the same."""
CLASSIFIER_FIELDS = {"activating", "prediction", "probability"}


def is_delphi_results(folder: str | Path) -> bool:
    """Whether ``folder`` holds delphi's ``explanations/`` or ``scores/<scorer>/`` latent files."""
    folder = Path(folder)
    found = [*folder.glob(f"{EXPLANATIONS_DIR}/*_latent*.txt"), *folder.glob(f"{SCORES_DIR}/*/*_latent*.txt")]
    return any(LATENT_FILE.match(p.name) for p in found)


def _read(path: Path):
    try:
        return json.loads(path.read_bytes())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PublishError(f"Cannot read delphi file {path}: {e}") from None


def _latent_files(folder: Path) -> dict[tuple[str, int], Path]:
    out = {}
    for path in sorted(folder.glob("*.txt")) if folder.is_dir() else []:
        m = LATENT_FILE.match(path.name)
        if m:
            out[(m.group("module").replace("--", "/"), int(m.group("index")))] = path
    return out


def _classifier_metrics(outputs: list, path: Path) -> tuple[str, dict]:
    if not all(isinstance(o, dict) and CLASSIFIER_FIELDS <= o.keys() for o in outputs):
        fields = ", ".join(sorted(CLASSIFIER_FIELDS))
        raise PublishError(f"{path}: expected a list of delphi ClassifierOutput objects (with {fields}).")
    probabilities = [o["probability"] for o in outputs]
    has_probabilities = any(p is not None for p in probabilities)
    metrics = classification(
        [bool(o["activating"]) for o in outputs],
        [o["prediction"] for o in outputs],
        probabilities if has_probabilities else None,
    ).to_dict()
    return ("-logprob" if has_probabilities else ""), metrics


def _simulation_metrics(groups: list, path: Path) -> dict:
    """Pooled Pearson over every simulated sequence: the overall group (delphi's distance 0) where there is one."""
    try:
        overall = [g for g in groups if g["distance"] == 0] or groups
        sequences = [s for g in overall for s in g["scored_sequence_simulations"]]
        true = [float(a) for s in sequences for a in s["true_activations"]]
        predicted = [float(a) for s in sequences for a in s["simulation"]["expected_activations"]]
    except (KeyError, TypeError, ValueError):
        raise PublishError(f"{path}: expected delphi's ScoredSimulation groups.") from None
    if len(true) != len(predicted):
        raise PublishError(f"{path}: a sequence has {len(true)} true and {len(predicted)} simulated activations.")
    pooled = correlation(true, predicted)
    return {"n": len(sequences), "correlation": pooled["pearson"], "spearman": pooled["spearman"]}


def _score_entry(scorer: str, outputs, path: Path) -> dict:
    """One score entry of our schema from one delphi score file."""
    if not isinstance(outputs, list) or not outputs:
        raise PublishError(f"{path}: expected a non-empty JSON list of per-example outputs.")
    name = SCORER_NAMES.get(scorer, scorer)
    if all(isinstance(o, dict) and "scored_sequence_simulations" in o for o in outputs):
        metrics, metric = _simulation_metrics(outputs, path), "correlation"
    else:
        suffix, metrics = _classifier_metrics(outputs, path)
        name += suffix
        metric = "auroc" if suffix else "balanced_accuracy"
    typed = {k: None if metrics.get(k) is None else int(metrics[k]) for k in INT_METRICS}
    typed.update({k: None if metrics.get(k) is None else float(metrics[k]) for k in FLOAT_METRICS})
    return {
        "scorer": name,
        "explainer": EXPLAINER,
        "metric": metric,
        "value": typed[metric],
        "baseline_value": None,
        "baseline_explanation": None,
        "metrics": typed,
        "other_metrics": "{}",
    }


def _row(model: str, llm: str | None, module: str, latent: int, text: str | None, scores: list[dict]) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "model": model,
        "hookpoint": module,
        "coder": module,
        "coder_kind": EXPLAINER,
        "coder_source": module,
        "latent": latent,
        "status": "ok" if text else None,
        "explanation": text,
        "explainer": EXPLAINER if text else None,
        "explanations": [{"explainer": EXPLAINER, "explanation": text, "status": "ok", "llm": llm, "note": None}]
        if text
        else [],
        "scores": sorted(scores, key=lambda s: s["scorer"]),
        **without_record(),
    }


def _run_config(folder: Path) -> tuple[str, str | None]:
    """The subject model and the explainer LLM, from delphi's ``run_config.json`` ("" and None without one)."""
    path = folder / "run_config.json"
    config = _read(path) if path.is_file() else {}
    if not isinstance(config, dict):
        return "", None
    return str(config.get("model") or ""), config.get("explainer_model") or None


def read_delphi(folder: str | Path) -> dict[str, Dataset]:
    """A delphi results folder as ``{module: Dataset}``, one row per latent with an explanation or a score."""
    folder = Path(folder)
    if not is_delphi_results(folder):
        raise PublishError(
            f"{folder} is not a delphi results folder: it has no {EXPLANATIONS_DIR}/<module>_latent<N>.txt "
            f"nor {SCORES_DIR}/<scorer>/<module>_latent<N>.txt files."
        )
    explanations = {}
    for key, path in _latent_files(folder / EXPLANATIONS_DIR).items():
        text = _read(path)
        if not isinstance(text, str):
            raise PublishError(f"{path} holds a {type(text).__name__}; delphi writes an explanation as a JSON string.")
        explanations[key] = text
    scores: dict[tuple[str, int], list[dict]] = {}
    for scorer_dir in sorted(p for p in (folder / SCORES_DIR).glob("*") if p.is_dir()):
        for key, path in _latent_files(scorer_dir).items():
            scores.setdefault(key, []).append(_score_entry(scorer_dir.name, _read(path), path))
    model, llm = _run_config(folder)
    keys = sorted(set(explanations) | set(scores))
    return {
        module: Dataset.from_list(
            [_row(model, llm, m, i, explanations.get((m, i)), scores.get((m, i), [])) for m, i in keys if m == module],
            features=FEATURES,
        )
        for module in dict.fromkeys(m for m, _ in keys)
    }


def activating_examples(folder: str | Path) -> dict[tuple[str, int], list[dict]]:
    """(module, latent) -> the activating examples delphi's classifier scorers showed (``str_tokens``,
    ``activations``, quantile ``distance``), each example once though several scorers showed it."""
    out: dict[tuple[str, int], dict[str, dict]] = {}
    for scorer_dir in sorted(p for p in (Path(folder) / SCORES_DIR).glob("*") if p.is_dir()):
        for key, path in _latent_files(scorer_dir).items():
            outputs = _read(path)
            for o in outputs if isinstance(outputs, list) else []:
                if isinstance(o, dict) and o.get("activating") and o.get("str_tokens"):
                    out.setdefault(key, {}).setdefault(json.dumps([o["str_tokens"], o.get("activations")]), o)
    return {key: list(shown.values()) for key, shown in out.items()}
