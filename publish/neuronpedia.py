"""A run (or a delphi results folder) as Neuronpedia upload batches: the body of ``POST /api/feature/upload-batch``.

Neuronpedia's self-serve upload (``apps/webapp/app/api/feature/upload-batch/route.tsx``; its Python
client is ``FeatureRequest.upload_batch``) takes ``{modelId, source, features}``, each feature
``{index, density, topLogits, bottomLogits, explanations, activations}``. One JSON file per batch of at
most 128 features is written under ``OUT/<source>/``, each exactly a request body, after every
constraint the route enforces has been checked here (``check_batch``), so a bad feature is one line
naming it and its field rather than a 400 halfway through an upload.

From a run: ``density`` is the latent's firing frequency over the cached tokens, ``topLogits`` and
``bottomLogits`` its promoted and suppressed tokens (at most 20), ``explanations`` every explainer's
``ok`` explanation (``methodName`` the explainer, ``modelName`` its LLM, each renamed through
``names`` to a name Neuronpedia knows), ``activations`` its top examples and then its quantile-spread
test examples with the quantile's bounds (the weakest and strongest peak among the examples of that
quantile) and share (1 / the number of quantiles: they hold equal shares of the activating examples).
"""

import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path

from interp.atomic import write_atomic
from interp.explain import TokenText
from interp.models import LoadedModel, load_model
from interp.records import LatentRecord
from interp.subject import open_coders

from .dataset import RECORD_CHUNK, PublishError, read_run
from .delphi_results import activating_examples, read_delphi

MAX_FEATURES = 128
MAX_LOGITS = 20
MAX_EXPLANATION = 512
MAX_TOKENS = 1024
MAX_INDEX = 10_000_000
MAX_QUANTILE = 99_999_999
"""The limits of Neuronpedia's upload-batch schema (yup, in the route)."""


class NeuronpediaError(PublishError):
    """A feature Neuronpedia would refuse, or an upload it refused."""


def _fail(source: str, index, field: str, why: str):
    raise NeuronpediaError(f"Neuronpedia source {source!r}, feature {index}: {field} {why}.")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_logits(source: str, index, field: str, logits) -> None:
    if logits is None:
        return
    if len(logits) > MAX_LOGITS:
        _fail(source, index, field, f"has {len(logits)} tokens; at most {MAX_LOGITS}")
    for i, logit in enumerate(logits):
        if not isinstance(logit.get("token"), str) or not logit["token"]:
            _fail(source, index, f"{field}[{i}].token", "is empty")
        if not _number(logit.get("value")):
            _fail(source, index, f"{field}[{i}].value", f"is {logit.get('value')!r}, not a number")


def _check_activation(source: str, index, i: int, activation: dict) -> None:
    tokens, values = activation.get("tokens") or [], activation.get("values") or []
    where = f"activations[{i}]"
    if len(tokens) != len(values):
        _fail(source, index, f"{where}.tokens", f"has {len(tokens)} tokens but {len(values)} values")
    if not 1 <= len(tokens) <= MAX_TOKENS:
        _fail(source, index, f"{where}.tokens", f"has {len(tokens)} tokens; 1 to {MAX_TOKENS}")
    empty = next((j for j, t in enumerate(tokens) if not isinstance(t, str) or not t), None)
    if empty is not None:
        _fail(source, index, f"{where}.tokens[{empty}]", "is empty (Neuronpedia requires every token's text)")
    bad = next((j for j, v in enumerate(values) if not _number(v)), None)
    if bad is not None:
        _fail(source, index, f"{where}.values[{bad}]", f"is {values[bad]!r}, not a number")
    for key in ("quantileMin", "quantileMax"):
        value = activation.get(key)
        if value is not None and (not _number(value) or value > MAX_QUANTILE):
            _fail(source, index, f"{where}.{key}", f"is {value!r}; a number at most {MAX_QUANTILE}")
    fraction = activation.get("quantileFraction")
    if fraction is not None and (not _number(fraction) or not 0 <= fraction <= 1):
        _fail(source, index, f"{where}.quantileFraction", f"is {fraction!r}; 0 to 1")


def check_feature(source: str, feature: dict) -> None:
    """Refuse, in one line naming the feature and field, what the upload-batch route would refuse."""
    index = feature.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= MAX_INDEX:
        _fail(source, index, "index", f"is {index!r}; an integer from 0 to {MAX_INDEX}")
    density = feature.get("density")
    if density is not None and (not _number(density) or not 0 <= density <= 1):
        _fail(source, index, "density", f"is {density!r}; 0 to 1")
    _check_logits(source, index, "topLogits", feature.get("topLogits"))
    _check_logits(source, index, "bottomLogits", feature.get("bottomLogits"))
    for i, explanation in enumerate(feature.get("explanations") or []):
        text = explanation.get("text")
        if not isinstance(text, str) or not 1 <= len(text) <= MAX_EXPLANATION:
            length = len(text) if isinstance(text, str) else type(text).__name__
            _fail(source, index, f"explanations[{i}].text", f"has {length} characters; 1 to {MAX_EXPLANATION}")
    activations = feature.get("activations") or []
    if not activations:
        _fail(source, index, "activations", "is empty; Neuronpedia needs at least one example")
    for i, activation in enumerate(activations):
        _check_activation(source, index, i, activation)


def check_batch(body: dict) -> None:
    """Refuse a batch the route would refuse: 1 to 128 features of unique indices, each as ``check_feature``."""
    source = body.get("source") or ""
    if not body.get("modelId") or not source:
        raise NeuronpediaError("A Neuronpedia batch needs a modelId and a source.")
    features = body.get("features") or []
    if not 1 <= len(features) <= MAX_FEATURES:
        raise NeuronpediaError(
            f"Neuronpedia source {source!r}: a batch holds 1 to {MAX_FEATURES} features, not {len(features)}."
        )
    seen = set()
    for feature in features:
        check_feature(source, feature)
        if feature["index"] in seen:
            _fail(source, feature["index"], "index", "appears twice in one batch")
        seen.add(feature["index"])


def parse_names(pairs: list[str] | None) -> dict[str, str]:
    """``FROM=TO`` pairs (``--np-name``): our explainer and LLM names -> names Neuronpedia knows."""
    names = {}
    for pair in pairs or []:
        ours, sep, theirs = pair.partition("=")
        if not sep or not ours or not theirs:
            raise NeuronpediaError(f"--np-name takes FROM=TO (e.g. short=np_acts-logits-general), not {pair!r}.")
        names[ours] = theirs
    return names


def _name(value: str | None, names: dict[str, str]) -> str | None:
    """Neuronpedia lowercases method and model names; so do we, after renaming."""
    return None if value is None else names.get(value, value).lower()


def _logits(pairs: list[tuple[int, float]], text: TokenText) -> list[dict]:
    pairs = pairs[:MAX_LOGITS]
    return [{"token": t, "value": float(v)} for t, (_, v) in zip(text([i for i, _ in pairs]), pairs, strict=True)]


def _quantile_bounds(record: LatentRecord) -> dict[int, tuple[float, float]]:
    peaks: dict[int, list[float]] = {}
    for example, q in zip(record.test, record.test_quantiles, strict=True):
        peaks.setdefault(q, []).append(example.max_act)
    return {q: (min(v), max(v)) for q, v in peaks.items()}


def record_feature(record: LatentRecord, explanations: list[dict], text: TokenText, names: dict[str, str]) -> dict:
    """One feature of an upload batch from a latent's record and its explanation lines."""
    bounds = _quantile_bounds(record)
    activations = [{"tokens": text(ex.tokens), "values": [float(a) for a in ex.acts]} for ex in record.top] + [
        {
            "tokens": text(ex.tokens),
            "values": [float(a) for a in ex.acts],
            "quantileMin": bounds[q][0],
            "quantileMax": bounds[q][1],
            "quantileFraction": 1 / len(bounds),
        }
        for ex, q in zip(record.test, record.test_quantiles, strict=True)
    ]
    return {
        "index": record.latent,
        "density": float(record.stats.frequency),
        "topLogits": _logits(record.promoted, text),
        "bottomLogits": _logits(record.suppressed, text),
        "explanations": [
            {
                "text": r["explanation"],
                "methodName": _name(r["explainer"], names),
                "modelName": _name(r.get("model"), names),
            }
            for r in sorted(explanations, key=lambda r: r["explainer"])
            if r.get("status") == "ok" and isinstance(r.get("explanation"), str)
        ],
        "activations": activations,
    }


def run_features(
    run_dir: str | Path, names: dict[str, str], *, lm: LoadedModel | None = None
) -> dict[str, tuple[dict, list[dict]]]:
    """Coder name -> (its ``coder.json``, the upload features of its explained latents that have examples).

    Dead and rare latents have no examples to show, which Neuronpedia requires: they are left out.
    """
    run = read_run(run_dir)
    cfg = run.config
    lm = lm or load_model(cfg.model)
    coders = open_coders(cfg, lm, run.run)
    text = TokenText(lm.tokenizer)
    out = {}
    for name, description in run.coders.items():
        builder = run.run.record_builder(name, cfg, lm, coders[name])
        features = []
        with run.run.reading() as db:
            latents = db.explained_latents(name).tolist()
            for i in range(0, len(latents), RECORD_CHUNK):  # a chunk's explanation lines at a time
                chunk = latents[i : i + RECORD_CHUNK]
                lines: dict[int, list[dict]] = {}
                for r in db.explanations_of(name, chunk):
                    lines.setdefault(r["latent"], []).append(r)
                features += [
                    record_feature(record, lines[record.latent], text, names)
                    for record in builder.build(name, chunk)
                    if record.top
                ]
        out[name] = (description, features)
    return out


def delphi_features(folder: str | Path, names: dict[str, str]) -> dict[str, tuple[dict, list[dict]]]:
    """Module -> ({}, upload features) of a delphi results folder: its explanations, and as activations the
    activating examples its classifier scorers showed, with their quantile (delphi's ``distance``) bounds."""
    tables = read_delphi(folder)
    examples = activating_examples(folder)
    out = {}
    for module, table in tables.items():
        features = []
        for row in table:
            shown = examples.get((module, row["latent"]), [])
            if not shown:
                continue
            peaks: dict[int, list[float]] = {}
            for ex in shown:
                peaks.setdefault(ex["distance"], []).append(max(ex["activations"]))
            features.append(
                {
                    "index": row["latent"],
                    "explanations": [
                        {
                            "text": e["explanation"],
                            "methodName": _name(e["explainer"], names),
                            "modelName": _name(e["llm"], names),
                        }
                        for e in row["explanations"]
                    ],
                    "activations": [
                        {
                            "tokens": ex["str_tokens"],
                            "values": [float(a) for a in ex["activations"]],
                            "quantileMin": min(peaks[ex["distance"]]),
                            "quantileMax": max(peaks[ex["distance"]]),
                            "quantileFraction": 1 / len(peaks),
                        }
                        for ex in shown
                    ],
                }
            )
        out[module] = ({}, features)
    return out


def _target(
    coder: str, description: dict, model_id: str | None, source: str | None, several: list[str]
) -> tuple[str, str]:
    """The (modelId, source) a coder's features go to: the flags, else the coder's own Neuronpedia id."""
    known = (description.get("neuronpedia") or "").partition("/")
    if source is not None and several:
        raise NeuronpediaError(
            f"--np-source names one Neuronpedia source, but there are several coders; upload one with --np-coder "
            f"(one of {', '.join(several)}), or give coders with their own Neuronpedia ids (saelens:RELEASE/ID)."
        )
    model_id, source = model_id or known[0] or None, source or known[2] or None
    if not model_id or not source:
        raise NeuronpediaError(
            f"Coder {coder!r} has no Neuronpedia id: give --np-model and --np-source "
            "(a source set you created on neuronpedia.org)."
        )
    return model_id.lower(), source.lower()


def batches(model_id: str, source: str, features: list[dict]) -> Iterator[dict]:
    """Request bodies of at most ``MAX_FEATURES`` features each, in latent order."""
    ordered = sorted(features, key=lambda f: f["index"])
    for i in range(0, len(ordered), MAX_FEATURES):
        yield {"modelId": model_id, "source": source, "features": ordered[i : i + MAX_FEATURES]}


def batch_name(i: int) -> str:
    """The file of the ``i``-th batch of a source."""
    return f"batch-{i:05d}.json"


def write_batches(
    coders: dict[str, tuple[dict, list[dict]]],
    out_dir: str | Path,
    *,
    model_id: str | None = None,
    source: str | None = None,
    only: str | None = None,
) -> dict[str, int]:
    """Check every batch, then write them under ``out_dir/<source>/``; returns source -> features written.

    A source's folder is rewritten whole, so it holds exactly these batches.
    """
    if only is not None:
        if only not in coders:
            raise NeuronpediaError(f"No coder {only!r} to upload; there are {', '.join(coders)}.")
        coders = {only: coders[only]}
    several = list(coders) if len(coders) > 1 else []
    planned: dict[str, list[dict]] = {}
    for coder, (description, features) in coders.items():
        target_model, target_source = _target(coder, description, model_id, source, several)
        if not features:
            raise NeuronpediaError(f"Coder {coder!r} has no explained latent with examples to upload.")
        bodies = list(batches(target_model, target_source, features))
        for body in bodies:
            check_batch(body)
        if target_source in planned:
            raise NeuronpediaError(f"Two coders go to Neuronpedia source {target_source!r}: give each its own.")
        planned[target_source] = bodies
    out = Path(out_dir)
    for target_source, bodies in planned.items():
        folder = out / target_source
        if folder.is_dir():
            shutil.rmtree(folder)
        for i, body in enumerate(bodies):
            write_atomic(folder / batch_name(i), lambda p, b=body: p.write_text(json.dumps(b), encoding="utf-8"))
    return {s: sum(len(b["features"]) for b in bodies) for s, bodies in planned.items()}
