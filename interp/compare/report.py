"""Compare two coders by meaning: match their latents one-to-one by explanation and by decoder direction.

Explanations are embedded (the embedded all-MiniLM-L6-v2 by default) and matched with the
Hungarian algorithm on cosine similarity; where both coders write vectors of the same width,
their decoder directions are matched the same way. The report gives the matched similarity,
its distribution, how often the two matchings agree, and the same figures for a shuffled
baseline: the same latents paired at random.
"""

from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..atomic import write_json_atomic
from ..rundir import RunDir
from ..scoring.embedding import load_embedder
from . import DEFAULT_MAX_LATENTS
from .matching import Matching, agreement, cosine_matrix, describe, hungarian, random_pairing
from .plots import plot_matching
from .sides import Decoder, Side, load_decoders


class Comparison(NamedTuple):
    """A comparison's report (what ``compare.json`` holds) and the matrices behind its figure."""

    report: dict
    similarity: np.ndarray
    """``[latents of A, latents of B]`` explanation similarity."""

    matching: Matching
    """The Hungarian matching of explanations."""

    shuffled: Matching
    decoder_matching: Matching | None


def embed(embedder, texts: list[str], *, progress: bool = False) -> np.ndarray:
    """Unit-length sentence embeddings of ``texts``, ``[len(texts), dim]`` float32."""
    return embedder.encode(
        texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=progress
    )


def _side_info(side: Side, decoder: Decoder | None) -> dict:
    info = {
        "run": str(side.run_dir),
        "coder": side.coder,
        "explainer": side.explainer,
        "explained": side.explained,
        "compared": len(side.latents),
    }
    if decoder is not None:
        info.update(hookpoint=decoder.hookpoint, kind=decoder.kind, d_out=int(decoder.rows.shape[1]))
    return info


def compare_sides(
    a: Side,
    b: Side,
    *,
    embedder=None,
    embedder_name: str | None = None,
    decoders: bool = True,
    max_latents: int = DEFAULT_MAX_LATENTS,
    seed: int = 0,
    progress: bool = True,
) -> Comparison:
    """Match the latents of ``a`` and ``b`` by explanation (and decoder direction), against a shuffled baseline.

    Each side keeps at most ``max_latents`` latents (a seeded sample, stated in the report).
    """
    if max_latents < 1:
        raise ValueError("max_latents must be at least 1")
    a, b = a.sample(max_latents, seed), b.sample(max_latents, seed + 1)
    embedder = embedder or load_embedder(embedder_name)
    sim = cosine_matrix(
        embed(embedder, a.explanations, progress=progress), embed(embedder, b.explanations, progress=progress)
    )
    by_text = hungarian(sim)
    shuffled = random_pairing(sim, seed)
    dec_a, dec_b = load_decoders([a, b]) if decoders else (None, None)
    report = {
        "a": _side_info(a, dec_a),
        "b": _side_info(b, dec_b),
        "embedder": embedder_name or "all-MiniLM-L6-v2 (embedded)",
        "max_latents": max_latents,
        "seed": seed,
        "explanation_matching": {"pairs": len(by_text.rows), "similarity": describe(by_text.scores)},
        "shuffled": {"pairs": len(shuffled.rows), "similarity": describe(shuffled.scores)},
        "decoder_matching": None,
        "agreement": None,
        "decoder_note": None,
    }
    by_decoder, dsim = None, None
    if dec_a is None:
        report["decoder_note"] = "decoder matching skipped (--no-decoders)"
    elif dec_a.rows.shape[1] != dec_b.rows.shape[1]:
        report["decoder_note"] = (
            "no decoder matching: the coders write vectors of different widths "
            f"({dec_a.rows.shape[1]} at {dec_a.hookpoint}, {dec_b.rows.shape[1]} at {dec_b.hookpoint}), "
            "so they live in different spaces"
        )
    else:
        dsim = cosine_matrix(dec_a.rows, dec_b.rows)
        by_decoder = hungarian(dsim)
        same = dec_a.hookpoint == dec_b.hookpoint
        report["decoder_note"] = f"both decoders write {dec_a.rows.shape[1]}-wide vectors" + (
            ""
            if same
            else f" (coders at {dec_a.hookpoint} and {dec_b.hookpoint}: "
            "cosines mean something when both write to one space, e.g. the residual stream)"
        )
        report["decoder_matching"] = {
            "pairs": len(by_decoder.rows),
            "cosine": describe(by_decoder.scores),
            "explanation_similarity": describe(sim[by_decoder.rows, by_decoder.cols]),
        }
        report["explanation_matching"]["decoder_cosine"] = describe(dsim[by_text.rows, by_text.cols])
        report["shuffled"]["decoder_cosine"] = describe(dsim[shuffled.rows, shuffled.cols])
        report["agreement"] = agreement(by_text, by_decoder)
        report["shuffled"]["agreement"] = agreement(shuffled, by_decoder)
    report["pairs"] = _pairs(a, b, by_text, by_decoder, dsim)
    return Comparison(report, sim, by_text, shuffled, by_decoder)


def _pairs(a: Side, b: Side, by_text, by_decoder, dsim) -> list[dict]:
    """The explanation-matched pairs, most similar first, each with its decoder cosine and decoder partner if known."""
    partner = (
        dict(zip(by_decoder.rows.tolist(), by_decoder.cols.tolist(), strict=True)) if by_decoder is not None else {}
    )
    pairs = []
    for i, j, s in sorted(
        zip(by_text.rows.tolist(), by_text.cols.tolist(), by_text.scores.tolist(), strict=True), key=lambda p: -p[2]
    ):
        pair = {
            "latent_a": a.latents[i],
            "latent_b": b.latents[j],
            "similarity": s,
            "explanation_a": a.explanations[i],
            "explanation_b": b.explanations[j],
        }
        if dsim is not None:
            pair["decoder_cosine"] = float(dsim[i, j])
            pair["decoder_partner_b"] = b.latents[partner[i]] if i in partner else None
        pairs.append(pair)
    return pairs


def write_comparison(comparison: Comparison, out_dir: Path) -> tuple[Path, Path]:
    """``compare.json`` (the report, every matched pair) and ``compare.png`` (heat map + histograms) in ``out_dir``."""
    out_dir = Path(out_dir)
    json_path, png_path = out_dir / "compare.json", out_dir / "compare.png"
    write_json_atomic(json_path, comparison.report)
    r = comparison.report
    decoder_matched = None
    if comparison.decoder_matching is not None:
        d = comparison.decoder_matching
        decoder_matched = comparison.similarity[d.rows, d.cols]
    plot_matching(
        comparison.similarity,
        comparison.matching,
        comparison.shuffled.scores,
        decoder_matched,
        png_path,
        title=f"{r['a']['coder']} vs {r['b']['coder']}",
    )
    return json_path, png_path


def default_out_dir(a: Side, b: Side) -> Path:
    """``RUN_A/compare/CODER_A--CODER_B`` (run B's folder name is added when it is another run)."""
    other = b.coder if a.run_dir.resolve() == b.run_dir.resolve() else f"{b.run_dir.resolve().name}.{b.coder}"
    return RunDir(a.run_dir).compare_dir(a.coder, other)


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _stats(d: dict | None) -> str:
    return (
        "n/a"
        if not d or not d.get("n")
        else f"mean {d['mean']:.3f}, median {d['median']:.3f} (p10 {d['p10']:.3f}, p90 {d['p90']:.3f})"
    )


def format_report(report: dict, *, top: int = 10, width: int = 48) -> str:
    """The figures and the best and worst matched pairs, as printed by ``interp compare``."""
    a, b = report["a"], report["b"]
    lines = [
        f"A: {a['run']}:{a['coder']} — {a['compared']} of {a['explained']} explained latents ({a['explainer']})",
        f"B: {b['run']}:{b['coder']} — {b['compared']} of {b['explained']} explained latents ({b['explainer']})",
    ]
    if a["compared"] < a["explained"] or b["compared"] < b["explained"]:
        lines.append(
            f"   (a seeded sample of at most {report['max_latents']} latents per side; seed {report['seed']})"
        )
    e, s = report["explanation_matching"], report["shuffled"]
    lines.append(
        f"explanation matching ({e['pairs']} pairs, {report['embedder']}): similarity {_stats(e['similarity'])}"
    )
    lines.append(f"  shuffled baseline (random pairs):   similarity {_stats(s['similarity'])}")
    lines.append(f"decoders: {report['decoder_note']}")
    d = report["decoder_matching"]
    if d:
        lines.append(f"decoder matching ({d['pairs']} pairs): cosine {_stats(d['cosine'])}")
        lines.append(f"  shuffled baseline:                  cosine {_stats(s['decoder_cosine'])}")
        lines.append(f"  explanation similarity of decoder-matched pairs: {_stats(d['explanation_similarity'])}")
        lines.append(f"  decoder cosine of explanation-matched pairs:     {_stats(e['decoder_cosine'])}")
        lines.append(
            f"agreement of explanation and decoder matching: {100 * report['agreement']:.1f}% of pairs "
            f"[shuffled: {100 * s['agreement']:.1f}%]"
        )
    pairs = report["pairs"]
    top = min(top, len(pairs) // 2 or len(pairs))
    for title, chosen in (("best matched pairs", pairs[:top]), ("worst matched pairs", pairs[len(pairs) - top :])):
        lines.append(
            f"{title}:  similarity{'  dec.cos' if d else ''}  A latent: explanation  |  B latent: explanation"
        )
        for p in chosen:
            dec = f"  {p['decoder_cosine']:+.2f}  " if d else ""
            lines.append(
                f"  {p['similarity']:.3f}{dec}  #{p['latent_a']}: {_short(p['explanation_a'], width)}  |  "
                f"#{p['latent_b']}: {_short(p['explanation_b'], width)}"
            )
    return "\n".join(lines)
