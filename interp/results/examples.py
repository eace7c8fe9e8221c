"""A score line's examples as one compact blob: typed columns, not a JSON object per example.

A score line keeps what the scorer made of each of its ~31 held-out examples (``scoring.base.ScoredExample``). As
JSON objects they were 5 KB a line; here they are fixed-width columns (index, label, prediction, score, kind,
quantile) and the per-token ``values`` of the scorers that make them, about 27 bytes an example before zlib. A
reader of metrics never decodes them. Examples that do not fit the columns (a field added by hand, a kind not known
here) are kept as JSON instead, so nothing is lost.
"""

import json
import zlib

import numpy as np

KINDS = ("test", "negative", "hard_negative", "steered", "clean")
"""The kinds of example the scorers write, coded by position."""
FIELDS = ("index", "label", "prediction", "score", "kind", "quantile", "values")
COLUMNS = np.dtype(
    [
        ("index", "<i8"),
        ("label", "u1"),
        ("prediction", "i1"),
        ("score", "<f8"),
        ("kind", "u1"),
        ("quantile", "<i4"),
        ("nvalues", "<i4"),
    ]
)
TYPED, AS_JSON = b"C", b"J"
"""The first byte of a blob: typed columns, or a JSON list."""


def encode_examples(examples: list[dict]) -> bytes:
    """``examples`` (dicts of ``ScoredExample`` fields) as a compressed blob that ``decode_examples`` reverses."""
    try:
        body = TYPED + _columns(examples)
    except (KeyError, TypeError, ValueError, OverflowError):
        body = AS_JSON + json.dumps(examples, ensure_ascii=False).encode("utf-8")
    return zlib.compress(body, 6)


def decode_examples(blob: bytes) -> list[dict]:
    """The examples ``encode_examples`` stored, as the dicts it was given."""
    body = zlib.decompress(blob)
    if body[:1] == AS_JSON:
        return json.loads(body[1:])
    n = int.from_bytes(body[1:5], "little")
    cols = np.frombuffer(body, COLUMNS, count=n, offset=5)
    values = np.frombuffer(body, "<f8", offset=5 + n * COLUMNS.itemsize)
    out, at = [], 0
    for c in cols.tolist():
        index, label, prediction, score, kind, quantile, nvalues = c
        row = {
            "index": index,
            "label": bool(label),
            "prediction": None if prediction < 0 else bool(prediction),
            "score": None if score != score else score,
            "kind": KINDS[kind],
            "quantile": None if quantile < 0 else quantile,
            "values": None if nvalues < 0 else values[at : at + nvalues].tolist(),
        }
        at += max(nvalues, 0)
        out.append(row)
    return out


def _columns(examples: list[dict]) -> bytes:
    """The typed form; a ``ValueError`` where an example does not fit it exactly."""
    cols = np.zeros(len(examples), COLUMNS)
    values: list[float] = []
    for i, e in enumerate(examples):
        if set(e) != set(FIELDS) or not _fits(e):
            raise ValueError("not a ScoredExample")
        v = e["values"]
        cols[i] = (
            e["index"],
            e["label"],
            -1 if e["prediction"] is None else e["prediction"],
            float("nan") if e["score"] is None else e["score"],
            KINDS.index(e["kind"]),
            -1 if e["quantile"] is None else e["quantile"],
            -1 if v is None else len(v),
        )
        values += v or []
    return len(examples).to_bytes(4, "little") + cols.tobytes() + np.asarray(values, "<f8").tobytes()


def _fits(e: dict) -> bool:
    """Whether each field of ``e`` has a type its column gives back exactly."""
    score, quantile, values = e["score"], e["quantile"], e["values"]
    return (
        type(e["index"]) is int
        and type(e["label"]) is bool
        and (e["prediction"] is None or type(e["prediction"]) is bool)
        and (score is None or (type(score) is float and score == score))
        and e["kind"] in KINDS
        and (quantile is None or (type(quantile) is int and 0 <= quantile < 2**31))
        and (values is None or (isinstance(values, list) and all(type(x) is float for x in values)))
    )
