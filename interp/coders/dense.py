"""Coders whose encoder is a dense affine map and a ReLU, JumpReLU, TopK or gate: SAELens and Gemma Scope.

Their activations are sparse after the nonlinearity; ``encode`` keeps only the active ones.
Every SAELens config field that changes encoding is either applied exactly (folded into the
weights where SAELens applies it at run time) or refused with an error naming the field.
"""

import json
import logging
import re
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from ..errors import CoderFormatError
from ..hooks import TL_NAMES, TL_SIDES, Reads, tl_hook
from .base import Latents, SparseCoder, active_rows
from .source import fetch

log = logging.getLogger(__name__)

ACTIVATIONS = ("relu", "jumprelu", "topk")


def _frozen(t: torch.Tensor | None) -> nn.Parameter | None:
    return None if t is None else nn.Parameter(t.float(), requires_grad=False)


class DenseEncoderCoder(SparseCoder):
    """``acts = f(W_enc (x - b_dec·apply) + b_enc)`` with f one of ReLU, JumpReLU(threshold), TopK(k).

    Decodes to ``acts @ W_dec + b_dec``; a transcoder's decoder may be wider or narrower than its
    input, and a skip transcoder's reconstruction adds ``W_skip x``.
    """

    def __init__(
        self,
        *,
        W_enc: torch.Tensor,
        b_enc: torch.Tensor,
        W_dec: torch.Tensor,
        b_dec: torch.Tensor,
        activation: str,
        hookpoint: str,
        reads: Reads,
        source: str,
        kind: str,
        threshold: torch.Tensor | None = None,
        k: int | None = None,
        apply_b_dec_to_input: bool = False,
        transcode: bool = False,
        W_skip: torch.Tensor | None = None,
    ):
        d_in, n = W_enc.shape
        super().__init__(hookpoint=hookpoint, reads=reads, num_latents=n, d_in=d_in, source=source)
        if activation not in ACTIVATIONS:
            raise CoderFormatError(f"Unsupported activation {activation!r}; supported: {', '.join(ACTIVATIONS)}.")
        if activation == "jumprelu" and threshold is None:
            raise CoderFormatError(f"JumpReLU coder {source!r} has no threshold parameter.")
        if activation == "topk" and not k:
            raise CoderFormatError(f"TopK coder {source!r} does not say its k.")
        _check_shapes(
            source, W_enc, b_enc, W_dec, b_dec, threshold, W_skip, same_width=apply_b_dec_to_input or not transcode
        )
        self.kind = kind
        self.activation = activation
        self.k = k
        self.apply_b_dec_to_input = apply_b_dec_to_input
        self.transcode = transcode
        self.W_enc = _frozen(W_enc)
        self.b_enc = _frozen(b_enc)
        self.W_dec = _frozen(W_dec)
        self.b_dec = _frozen(b_dec)
        self.threshold = _frozen(threshold)
        self.W_skip = _frozen(W_skip)

    def sae_in(self, x: torch.Tensor) -> torch.Tensor:
        """What the encoder's matrices multiply: ``x`` in float32, less ``b_dec`` if the coder subtracts it."""
        x = x.to(self.W_enc.dtype)
        return x - self.b_dec if self.apply_b_dec_to_input else x

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder output before the nonlinearity, ``[tokens, num_latents]``."""
        return self.sae_in(x) @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> Latents:
        pre = self.pre_acts(x)
        if self.activation == "topk":
            values, indices = pre.topk(self.k, dim=-1, sorted=False)
            return Latents(values.relu(), indices)
        if self.activation == "jumprelu":
            pre = pre * (pre > self.threshold)
        return active_rows(pre.relu())

    def decoder_weight(self) -> torch.Tensor:
        return self.W_dec

    def decoder_bias(self) -> torch.Tensor:
        return self.b_dec

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        out = self.decode(self.encode(x))
        return out if self.W_skip is None else out + x.to(self.W_skip.dtype) @ self.W_skip.T

    def describe(self) -> dict:
        return {**super().describe(), "activation": self.activation, "k": self.k, "transcode": self.transcode}


def _check_tensors(w: dict[str, torch.Tensor], needed: set[str], optional: set[str], where: str) -> None:
    """A ``CoderFormatError`` if a needed tensor is missing, or if there is one this coder has no use for
    (ignoring it could change the latents)."""
    missing, unused = needed - set(w), set(w) - needed - optional
    if missing:
        raise CoderFormatError(f"{where} lacks {', '.join(sorted(missing))}.")
    if unused:
        raise CoderFormatError(
            f"{where} holds {', '.join(sorted(unused))}, which this coder does not use; it is not supported."
        )


def _check_shapes(source: str, W_enc, b_enc, W_dec, b_dec, threshold, W_skip, *, same_width: bool) -> None:
    """A ``CoderFormatError`` listing every shape unless the weights fit together."""
    (d_in, n), d_out = W_enc.shape, W_dec.shape[-1]
    ok = (
        W_dec.shape == (n, d_out)
        and b_enc.shape == (n,)
        and b_dec.shape == (d_out,)
        and (threshold is None or threshold.shape == (n,))
        and (W_skip is None or W_skip.shape == (d_out, d_in))
        and (d_out == d_in or not same_width)
    )
    if not ok:
        shapes = {
            "W_enc": W_enc,
            "W_dec": W_dec,
            "b_enc": b_enc,
            "b_dec": b_dec,
            "threshold": threshold,
            "W_skip": W_skip,
        }
        listed = ", ".join(f"{name} {tuple(t.shape)}" for name, t in shapes.items() if t is not None)
        raise CoderFormatError(f"Inconsistent shapes in {source!r}: {listed}.")


class GatedCoder(DenseEncoderCoder):
    """SAELens' gated SAE: latent i is active where ``(W_enc x + b_gate)_i > 0``.

    Its value is then ``ReLU((W_enc·exp(r_mag)) x + b_mag)_i``. ``b_enc`` holds the gate bias ``b_gate``.
    """

    def __init__(self, *, b_gate: torch.Tensor, r_mag: torch.Tensor, b_mag: torch.Tensor, **kwargs):
        super().__init__(b_enc=b_gate, activation="relu", **kwargs)
        if r_mag.shape != b_gate.shape or b_mag.shape != b_gate.shape:
            raise CoderFormatError(
                f"Inconsistent shapes in {self.source!r}: b_gate {tuple(b_gate.shape)}, r_mag {tuple(r_mag.shape)}, "
                f"b_mag {tuple(b_mag.shape)}."
            )
        self.W_mag = _frozen(self.W_enc * r_mag.float().exp())
        self.b_mag = _frozen(b_mag)

    def encode(self, x: torch.Tensor) -> Latents:
        x = self.sae_in(x)
        gate = (x @ self.W_enc + self.b_enc) > 0
        return active_rows((x @ self.W_mag + self.b_mag).relu() * gate)

    def describe(self) -> dict:
        return {**super().describe(), "activation": "gated"}


# --------------------------------------------------------------------------- SAELens

SAELENS_ACTIVATIONS = {
    "standard": "relu",
    "gated": "relu",
    "jumprelu": "jumprelu",
    "topk": "topk",
    "transcoder": "relu",
    "skip_transcoder": "relu",
    "jumprelu_transcoder": "jumprelu",
    "jumprelu_skip_transcoder": "jumprelu",
}
"""SAELens architectures interp applies, and the nonlinearity of each."""

SAELENS_REFUSED = {
    "abstopk": "keeps the k largest pre-activations by magnitude with their sign; negative latents are not supported.",
    "batchtopk": "is a training checkpoint whose top k is taken over a whole batch; load the SAE that "
    "save_inference_model writes from it (a jumprelu SAE).",
    "matryoshka_batchtopk": "is a training checkpoint whose top k is taken over a whole batch; load the SAE that "
    "save_inference_model writes from it (a jumprelu SAE).",
    "matching_pursuit": "encodes by iterative matching pursuit, which is not supported.",
    "temporal": "encodes each token with attention over earlier tokens, which is not supported.",
}
"""SAELens architectures interp refuses, and why."""

SAELENS_REFUSED_NORMALIZATIONS = {
    "layer_norm": "standardises each input and un-standardises its reconstruction by that input's own mean and "
    "std, which one decoder direction per latent cannot express; not supported.",
    "constant_norm_rescale": "rescales each input to norm sqrt(d_in) and its reconstruction back by that input's own "
    "norm, which one decoder direction per latent cannot express; not supported.",
    "covariance_whitening": "marks a training checkpoint whose whitening is not yet folded into the weights; load the "
    "SAE that training saves at its end, where it is.",
}
"""SAELens ``normalize_activations`` modes interp refuses, and why."""


def _refusal(source: str, field: str, value, why: str) -> CoderFormatError:
    return CoderFormatError(f"SAELens coder {source!r}: {field}={value!r} {why}")


def _cfg_field(cfg: dict, *names: str):
    """The first of ``names`` set in ``cfg`` or its ``metadata``.

    SAELens 6 keeps hook names under ``metadata``; before 6 they sat at the top level, some
    under other names (``hook_point``, ``activation_fn_str``).
    """
    metadata = cfg.get("metadata") or {}
    return next((where[n] for n in names for where in (cfg, metadata) if where.get(n) is not None), None)


def _saelens_architecture(cfg: dict, source: str) -> tuple[str, int | None]:
    """The architecture and top-k ``k``; SAELens before 6 said TopK with ``activation_fn``."""
    fn = _cfg_field(cfg, "activation_fn", "activation_fn_str")
    if fn not in (None, "relu", "topk"):
        raise _refusal(source, "activation_fn", fn, "is not supported (relu and topk are).")
    architecture = "topk" if fn == "topk" else cfg.get("architecture") or "standard"
    if architecture in SAELENS_REFUSED:
        raise _refusal(source, "architecture", architecture, SAELENS_REFUSED[architecture])
    if architecture not in SAELENS_ACTIVATIONS:
        raise _refusal(
            source, "architecture", architecture, f"is not one interp knows: {', '.join(SAELENS_ACTIVATIONS)}."
        )
    return architecture, cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")


def _scaling_factor(cfg: dict, folder: Path, source: str, registered: float | None = None) -> float | None:
    """The factor SAELens multiplies inputs by before encoding, or None when it does not normalise them.

    ``expected_average_only_in`` (``true`` before SAELens 6) is applied when the factor is at hand:
    a SAELens registry entry's ``norm_scaling_factor`` (``registered``), or, for a training checkpoint,
    ``activation_scaler.json``; a finished SAE has it folded in and says ``none``.
    """
    mode = cfg.get("normalize_activations", "none")
    if mode in ("none", None, False):
        return None
    if mode in SAELENS_REFUSED_NORMALIZATIONS:
        raise _refusal(source, "normalize_activations", mode, SAELENS_REFUSED_NORMALIZATIONS[mode])
    if mode not in ("expected_average_only_in", True):
        raise _refusal(
            source, "normalize_activations", mode, "is not a mode interp knows (none, expected_average_only_in)."
        )
    factor = registered or _saved_scaling_factor(folder / "activation_scaler.json")
    if factor is None:
        raise _refusal(
            source,
            "normalize_activations",
            mode,
            "needs the input scaling factor, which SAELens saves in activation_scaler.json "
            f"beside a training checkpoint, and {folder} has none; "
            "fold it in with SAE.fold_activation_norm_scaling_factor and save_model, then load that.",
        )
    return factor


def _saved_scaling_factor(path: Path) -> float | None:
    """The positive ``scaling_factor`` in SAELens' ``activation_scaler.json``; None if there is no
    such file or number.
    """
    try:
        factor = json.loads(path.read_text()).get("scaling_factor")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    valid = isinstance(factor, (int, float)) and not isinstance(factor, bool) and factor > 0
    return float(factor) if valid else None


def _saelens_site(cfg: dict, source: str, hookpoint: str | None, transcode: bool) -> tuple[str, Reads, bool | None]:
    """The hookpoint (a module, or a TransformerLens name for ``load_coder`` to resolve), the side read,
    and whether the coder reads the concatenated attention heads (None when its config does not say)."""
    tl_name = _cfg_field(cfg, "hook_name", "hook_point")
    head = _cfg_field(cfg, "hook_head_index", "hook_point_head_index")
    if head is not None:
        raise _refusal(
            source,
            "hook_head_index",
            head,
            "reads one attention head's slice of hook_z, which is no module's input or output; not supported.",
        )
    parsed = tl_hook(tl_name)
    reshape = cfg.get("reshape_activations") or "none"
    if reshape not in ("none", "hook_z"):
        raise _refusal(source, "reshape_activations", reshape, "is not one interp knows (none, hook_z).")
    if reshape == "hook_z" and not str(tl_name).endswith("hook_z"):
        raise _refusal(
            source,
            "reshape_activations",
            reshape,
            f"flattens attention heads, but hook_name={tl_name!r} is not a hook_z.",
        )
    if parsed is None and hookpoint is None:
        raise CoderFormatError(
            f"Cannot map SAELens hook_name={tl_name!r} to a module (supported: {TL_NAMES}); "
            f"give it as saelens:{source}@MODULE[:input|:output]."
        )
    reads: Reads = "input" if transcode else TL_SIDES[parsed[1]] if parsed else "output"
    return hookpoint or tl_name, reads, None if parsed is None else parsed[1] == "attn.hook_z"


def _saelens_weights(folder: Path, cfg: dict, architecture: str, source: str) -> dict[str, torch.Tensor]:
    """The weights, with ``log_threshold`` exponentiated; a ``scaling_factor`` of all ones is
    dropped as SAELens drops it.

    They are upcast to float32 and encode in it, whatever the config's ``dtype``: a float16 or
    bfloat16 SAE encodes as SAELens encodes it when loaded with ``dtype="float32"`` (the default
    of its ``from_pretrained``), not with SAELens' rounding in that dtype.
    """
    w = {name: t.float() for name, t in load_file(folder / "sae_weights.safetensors").items()}
    if "log_threshold" in w and "threshold" not in w:
        w["threshold"] = w.pop("log_threshold").exp()
    scale = w.pop("scaling_factor", None)
    if scale is not None and not torch.allclose(scale, torch.ones_like(scale)):
        raise _refusal(
            source,
            "finetuning_scaling_factor",
            cfg.get("finetuning_scaling_factor"),
            "with a scaling_factor other than 1 is not supported.",
        )
    needed = {"W_enc", "W_dec", "b_dec"} | ({"b_gate", "b_mag", "r_mag"} if architecture == "gated" else {"b_enc"})
    needed |= {"W_skip"} if "skip" in architecture else set()
    optional = {"threshold"} if SAELENS_ACTIVATIONS[architecture] == "jumprelu" else set()
    _check_tensors(w, needed, optional, f"SAELens weights at {folder} (architecture={architecture!r})")
    for field, size in (
        ("d_in", w["W_enc"].shape[0]),
        ("d_sae", w["W_enc"].shape[-1]),
        ("d_out", w["W_dec"].shape[-1]),
    ):
        if cfg.get(field) is not None and cfg[field] != size:
            raise _refusal(source, field, cfg[field], f"but its weights have {size}.")
    return w


def _rescales_by_decoder_norm(cfg: dict, architecture: str, source: str) -> bool:
    """Whether a TopK SAE ranks and scales its latents by their decoder norms (``rescale_acts_by_decoder_norm``)."""
    rescale = cfg.get("rescale_acts_by_decoder_norm") or False
    if rescale and architecture != "topk":
        raise _refusal(
            source, "rescale_acts_by_decoder_norm", rescale, f"is a TopK option, but architecture={architecture!r}."
        )
    return bool(rescale)


def _fold_scaling_factor(w: dict[str, torch.Tensor], factor: float) -> None:
    """SAELens' ``fold_activation_norm_scaling_factor``: encoding ``x`` then equals encoding ``factor · x`` before."""
    w["W_enc"] = w["W_enc"] * factor
    w["W_dec"] = w["W_dec"] / factor
    w["b_dec"] = w["b_dec"] / factor


def _fold_decoder_norms(w: dict[str, torch.Tensor]) -> None:
    """Fold ``rescale_acts_by_decoder_norm`` into the weights, as SAELens' ``save_inference_model`` does.

    SAELens multiplies each pre-activation by its latent's decoder norm before the top k and
    divides it back out when decoding; scaling ``W_enc`` and ``b_enc`` by the norms and
    normalising ``W_dec``'s rows gives the same active set, values and reconstruction.
    """
    norms = w["W_dec"].norm(dim=-1)
    w["W_enc"] = w["W_enc"] * norms
    w["b_enc"] = w["b_enc"] * norms
    w["W_dec"] = w["W_dec"] / torch.where(norms > 0, norms, 1).unsqueeze(-1)


def _read_cfg(folder: Path) -> dict:
    if not (folder / "cfg.json").is_file() or not (folder / "sae_weights.safetensors").is_file():
        raise CoderFormatError(f"No SAELens coder at {folder}: expected cfg.json and sae_weights.safetensors.")
    try:
        return json.loads((folder / "cfg.json").read_text())
    except json.JSONDecodeError as e:
        raise CoderFormatError(f"Cannot read {folder / 'cfg.json'}: {e}.") from e


def load_saelens(
    source: str,
    hookpoint: str | None = None,
    *,
    cfg_overrides: dict | None = None,
    norm_scaling_factor: float | None = None,
) -> DenseEncoderCoder:
    """Load a SAELens folder (``cfg.json`` + ``sae_weights.safetensors``), as saved by SAELens 5 or 6.

    The hookpoint comes from ``hookpoint`` (a module) or from the config's TransformerLens hook
    name, which ``load_coder`` resolves against the model. Inputs are normalised and decoder
    norms applied exactly as SAELens does, folded into the weights. A SAELens registry entry's
    ``config_overrides`` are set over ``cfg.json`` and its ``norm_scaling_factor`` is the input
    scaling, as SAELens' ``from_pretrained`` applies them.
    """
    folder = fetch(source)
    cfg = {**_read_cfg(folder), **(cfg_overrides or {})}
    architecture, k = _saelens_architecture(cfg, source)
    transcode = "transcoder" in architecture
    apply_b_dec = cfg.get("apply_b_dec_to_input", True)
    if transcode and apply_b_dec:
        raise _refusal(
            source, "apply_b_dec_to_input", apply_b_dec, "cannot apply to a transcoder (SAELens refuses it too)."
        )
    factor = _scaling_factor(cfg, folder, source, norm_scaling_factor)
    site, reads, heads = _saelens_site(cfg, source, hookpoint, transcode)
    w = _saelens_weights(folder, cfg, architecture, source)
    if factor is not None:
        _fold_scaling_factor(w, factor)
    if _rescales_by_decoder_norm(cfg, architecture, source):
        _fold_decoder_norms(w)
    common = dict(
        W_enc=w["W_enc"],
        W_dec=w["W_dec"],
        b_dec=w["b_dec"],
        apply_b_dec_to_input=bool(apply_b_dec),
        transcode=transcode,
        W_skip=w.get("W_skip"),
        hookpoint=site,
        reads=reads,
        source=source,
        kind="saelens",
    )
    if architecture == "gated":
        coder = GatedCoder(b_gate=w["b_gate"], r_mag=w["r_mag"], b_mag=w["b_mag"], **common)
    else:
        coder = DenseEncoderCoder(
            b_enc=w["b_enc"], threshold=w.get("threshold"), activation=SAELENS_ACTIVATIONS[architecture], k=k, **common
        )
    coder.reads_heads = heads
    coder.writes_at = _cfg_field(cfg, "hook_name_out") if transcode and hookpoint is None else None
    return coder


# --------------------------------------------------------------------------- Gemma Scope

GEMMASCOPE_RELEASES = {
    "res": "hook_resid_post",
    "mlp": "hook_mlp_out",
    "att": "attn.hook_z",
    "transcoders": "mlp.hook_in",
}
"""What the coders of each Gemma Scope release (``gemma-scope-2b-pt-<suffix>``) read, as a TransformerLens hook.

Attention SAEs read the concatenated heads: the input of ``o_proj``. Transcoders read the
MLP's input and write its output.
"""


def _gemmascope_release(source: str) -> tuple[str | None, str | None]:
    """The Gemma Scope release folder in ``source``'s path and its suffix (res, mlp, att, transcoders).

    Either is None when the path names no release, or a release with some other suffix.
    """
    parts = re.split(r"[/\\]", source)
    release = next((p for p in reversed(parts) if "gemma-scope" in p), None)
    m = re.fullmatch(r"gemma-scope-.*?-(res|mlp|att|transcoders)(-canonical)?", release or "")
    return release, m.group(1) if m else None


def _gemmascope_layer(source: str) -> int:
    """The layer of a Gemma Scope path: its last ``layer_N`` folder."""
    layers = [int(m.group(1)) for p in re.split(r"[/\\]", source) if (m := re.fullmatch(r"layer_(\d+)", p))]
    if not layers:
        raise CoderFormatError(f"Cannot tell the layer of {source!r}; give it as gemmascope:{source}@model.layers.N.")
    return layers[-1]


def _guess_gemmascope_site(source: str, release: str | None, suffix: str | None) -> str:
    """The TransformerLens hook a Gemma Scope coder reads, guessed from its path and said in one log line."""
    if release and not suffix:
        raise CoderFormatError(
            f"Cannot tell what Gemma Scope release {release!r} reads (known: {', '.join(GEMMASCOPE_RELEASES)}); "
            f"give the site: gemmascope:{source}@MODULE[:input|:output]."
        )
    hook = f"blocks.{_gemmascope_layer(source)}.{GEMMASCOPE_RELEASES[suffix or 'res']}"
    what = f"reads {hook}"
    if suffix == "transcoders":
        what += f" and writes {hook.replace('hook_in', 'hook_out')} (a transcoder)"
    why = f"as its release is {release}" if release else "as its path names no Gemma Scope release"
    log.info("Guessed that Gemma Scope coder %s %s, %s; give @MODULE[:input|:output] if not.", source, what, why)
    return hook


def load_gemmascope(source: str, hookpoint: str | None = None) -> DenseEncoderCoder:
    """Load Gemma Scope JumpReLU parameters (``params.npz`` with W_enc, W_dec, b_enc, b_dec, threshold).

    Without ``hookpoint`` the site is guessed from the path (release and ``layer_N`` folder), and
    logged. Transcoder releases read the MLP's input and write its output.
    """
    path = fetch(source)
    npz = path / "params.npz" if path.is_dir() else path
    if not npz.is_file():
        raise CoderFormatError(f"No Gemma Scope params.npz at {path}.")
    with np.load(npz, allow_pickle=False) as data:
        w = {name: torch.from_numpy(data[name].astype(np.float32)) for name in data.files}
    _check_tensors(w, {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"}, set(), f"Gemma Scope file {npz}")
    release, suffix = _gemmascope_release(source)
    site = hookpoint or _guess_gemmascope_site(source, release, suffix)
    coder = DenseEncoderCoder(
        W_enc=w["W_enc"],
        b_enc=w["b_enc"],
        W_dec=w["W_dec"],
        b_dec=w["b_dec"],
        threshold=w["threshold"],
        activation="jumprelu",
        hookpoint=site,
        reads=TL_SIDES[GEMMASCOPE_RELEASES[suffix or "res"]],
        source=source,
        kind="gemmascope",
        transcode=suffix == "transcoders",
    )
    coder.reads_heads = None if suffix is None else suffix == "att"
    if suffix == "transcoders" and hookpoint is None:
        coder.writes_at = site.replace("mlp.hook_in", "mlp.hook_out")
    return coder
