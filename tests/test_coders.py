"""Sparse coders: every on-disk format loads into one interface and encodes like its reference.

Each format is written to a temporary folder exactly as its own tool lays it out (sparsify's
``save_to_disk``, SAELens' ``cfg.json`` + ``sae_weights.safetensors``, Gemma Scope's
``params.npz``), loaded through a ``KIND:SOURCE@HOOKPOINT`` spec against a tiny random Llama,
and run on that model's real activations.
"""

import json
import sys

import pytest
import sparsify
import torch
from safetensors.torch import save_file
from sparsify import SaeConfig

from interp.coders import CoderSpec, Latents, load_coder
from interp.errors import CoderFormatError, CoderShapeError, UnknownHookpointError
from interp.hooks import Site, capture_tokens, site_widths
from tests.helpers.coders import D_SAE, random_dense_weights, write_gemmascope, write_saelens
from tests.helpers.models import D_MLP, D_MODEL, TEXT, tiny_gemma2

# --------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True, scope="module")
def one_cpu_thread():
    """These tensors are tiny: with several intra-op threads on a busy CPU, thread hand-offs
    (~20 ms per matmul) dominate and this module takes ~30 s instead of ~4 s."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def load(spec: str, lm, **kwargs):
    return load_coder(CoderSpec.parse(spec), lm.model, **kwargs)


def activations(lm, *sites: Site) -> list[torch.Tensor]:
    """``[tokens, width]`` activations of the tiny model on TEXT at each site."""
    ids = lm.tokenizer(TEXT, return_tensors="pt").input_ids
    found = capture_tokens(lm.model, ids, sites)
    return [found[s].flatten(0, 1).float() for s in sites]


def active_entries(latents: Latents) -> dict[tuple[int, int], float]:
    """``{(token, latent): value}`` for every strictly positive activation; a latent at most once per token."""
    out: dict[tuple[int, int], float] = {}
    for t, (acts, indices) in enumerate(zip(latents.acts.tolist(), latents.indices.tolist(), strict=True)):
        for a, i in zip(acts, indices, strict=True):
            if a > 0:
                assert (t, i) not in out, f"latent {i} listed twice for token {t}"
                out[(t, i)] = a
    return out


def dense_entries(dense: torch.Tensor) -> dict[tuple[int, int], float]:
    return {(t, i): dense[t, i].item() for t, i in dense.nonzero().tolist()}


def random_sparsify(d_in: int = D_MODEL, *, seed: int = 0, **cfg) -> sparsify.SparseCoder:
    """A sparsify coder with every parameter (biases included) drawn at random."""
    torch.manual_seed(seed)
    sae = sparsify.SparseCoder(d_in, SaeConfig(expansion_factor=4, k=8, **cfg))
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_(0, 0.5)
    return sae.requires_grad_(False)


def reference_pre_acts(w, x, *, apply_b_dec_to_input=True):
    if apply_b_dec_to_input:
        x = x - w["b_dec"]
    return x @ w["W_enc"] + w["b_enc"]


def reference_acts(w, x, architecture, *, k=None, apply_b_dec_to_input=True) -> torch.Tensor:
    """The dense ``[tokens, d_sae]`` activations, computed here by hand."""
    pre = reference_pre_acts(w, x, apply_b_dec_to_input=apply_b_dec_to_input)
    if architecture == "standard":
        return pre.relu()
    if architecture == "jumprelu":
        return pre.relu() * (pre > w["threshold"])
    values, indices = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(1, indices, values.relu())


# --------------------------------------------------------------------------- specs


@pytest.mark.parametrize(
    "text, kind, source, hookpoint",
    [
        ("sparsify:EleutherAI/sae-x@layers.6", "sparsify", "EleutherAI/sae-x", "layers.6"),
        ("sparsify:EleutherAI/sae-x", "sparsify", "EleutherAI/sae-x", None),
        ("sparsify:/runs/demo/coders/model.layers.6", "sparsify", "/runs/demo/coders/model.layers.6", None),
        ("saelens:./my sae@model.layers.2", "saelens", "./my sae", "model.layers.2"),
        (
            "gemmascope:google/gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82",
            "gemmascope",
            "google/gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82",
            None,
        ),
        # the hookpoint is what follows the *last* '@', so a source may contain '@' when a hookpoint is given
        ("saelens:/data/user@host/sae@model.layers.1", "saelens", "/data/user@host/sae", "model.layers.1"),
        # a source may contain ':' (only the first one separates the kind)
        ("sparsify:C:/saes/x@layers.1", "sparsify", "C:/saes/x", "layers.1"),
        ("neurons@model.layers.6.mlp", "neurons", None, "model.layers.6.mlp"),
        ("topk-neurons@model.layers.6.mlp", "topk-neurons", None, "model.layers.6.mlp"),
        ("default", "default", None, None),
    ],
)
def test_spec_parses_kind_source_and_hookpoint(text, kind, source, hookpoint):
    assert CoderSpec.parse(text) == CoderSpec(kind, source, hookpoint)


@pytest.mark.parametrize(
    "text, message",
    [
        ("sae:EleutherAI/sae-x@layers.6", "Unknown coder kind 'sae'"),
        ("Sparsify:EleutherAI/sae-x", "Unknown coder kind"),
        ("", "Unknown coder kind"),
        ("sparsify", "need a source"),
        ("sparsify@layers.6", "need a source"),
        ("saelens:", "need a source"),
        ("gemmascope@model.layers.2", "need a source"),
        ("neurons", "needs the MLP module"),
        ("topk-neurons", "needs the MLP module"),
        ("neurons:model.layers.1.mlp", "needs the MLP module"),
    ],
)
def test_malformed_specs_are_format_errors_that_say_what_to_write(text, message):
    with pytest.raises(CoderFormatError, match=message):
        CoderSpec.parse(text)


def test_the_default_kind_is_not_loaded_from_files(tiny_lm):
    with pytest.raises(CoderFormatError, match="not loaded from files"):
        load("default", tiny_lm)


# --------------------------------------------------------------------------- sparsify


def test_sparsify_sae_encodes_and_reconstructs_exactly_like_sparsify(tiny_lm, tmp_path):
    sae = random_sparsify()
    folder = tmp_path / "model.layers.2"
    sae.save_to_disk(folder)

    coder = load(f"sparsify:{folder}@model.layers.2", tiny_lm)
    assert coder.site == Site("model.layers.2", "output")
    assert (coder.kind, coder.num_latents, coder.d_in) == ("sparsify", 4 * D_MODEL, D_MODEL)
    assert coder.describe() | {"source": None} == {
        "kind": "sparsify",
        "source": None,
        "hookpoint": "model.layers.2",
        "reads": "output",
        "num_latents": 128,
        "d_in": 32,
        "k": 8,
        "transcode": False,
    }

    (x,) = activations(tiny_lm, coder.site)
    latents = coder.encode(x)
    ref = sae.encode(x)
    assert latents.acts.shape == latents.indices.shape == (len(x), 8)
    assert latents.indices.sort(dim=-1).values.equal(ref.top_indices.sort(dim=-1).values)
    assert active_entries(latents) == pytest.approx(active_entries(Latents(ref.top_acts, ref.top_indices)))
    assert len(active_entries(latents)) > 0
    torch.testing.assert_close(coder.reconstruct(x), sae(x).sae_out)


def test_sparsify_hookpoint_defaults_to_the_folder_name(tiny_lm, tmp_path):
    random_sparsify().save_to_disk(tmp_path / "model.layers.2")
    assert load(f"sparsify:{tmp_path / 'model.layers.2'}", tiny_lm).site == Site("model.layers.2", "output")


def test_a_sparsify_folder_named_for_no_module_asks_for_one(tiny_lm, tmp_path):
    random_sparsify().save_to_disk(tmp_path / "my-sae")
    with pytest.raises(
        UnknownHookpointError, match=r"\('my-sae' is a guess from its files\): add @MODULE, e\.g\. sparsify:"
    ):
        load(f"sparsify:{tmp_path / 'my-sae'}", tiny_lm)
    assert load(f"sparsify:{tmp_path / 'my-sae'}@model.layers.2", tiny_lm).hookpoint == "model.layers.2"


@pytest.mark.parametrize("hookpoint", ["layers.2", "model.layers.2"])
def test_sparsify_parent_folder_picks_the_hookpoint_subfolder(tiny_lm, tmp_path, hookpoint):
    # sparsify names each coder's folder by the hookpoint relative to the base model
    wanted, other = random_sparsify(seed=2), random_sparsify(seed=3)
    wanted.save_to_disk(tmp_path / "sae" / "layers.2")
    other.save_to_disk(tmp_path / "sae" / "layers.3")

    coder = load(f"sparsify:{tmp_path / 'sae'}@{hookpoint}", tiny_lm)
    assert coder.site == Site("model.layers.2", "output")
    (x,) = activations(tiny_lm, coder.site)
    torch.testing.assert_close(coder.reconstruct(x), wanted(x).sae_out)


def test_sparsify_parent_folder_without_that_hookpoint_lists_the_available_ones(tiny_lm, tmp_path):
    random_sparsify().save_to_disk(tmp_path / "layers.2")
    random_sparsify().save_to_disk(tmp_path / "layers.3")
    with pytest.raises(CoderFormatError, match=r"hookpoint 'layers\.1'; available: layers\.2, layers\.3"):
        load(f"sparsify:{tmp_path}@layers.1", tiny_lm)


def test_sparsify_transcoder_reads_the_module_input_and_matches_sparsify(tiny_lm, tmp_path):
    sae = random_sparsify(transcode=True, skip_connection=True, seed=1)
    folder = tmp_path / "layers.1.mlp"
    sae.save_to_disk(folder)

    coder = load(f"sparsify:{tmp_path}@model.layers.1.mlp", tiny_lm)
    assert coder.site == Site("model.layers.1.mlp", "input")
    assert coder.describe()["transcode"] is True

    (x,) = activations(tiny_lm, coder.site)
    ref = sae.encode(x)
    latents = coder.encode(x)
    assert active_entries(latents) == pytest.approx(active_entries(Latents(ref.top_acts, ref.top_indices)))
    # the skip connection is part of the reconstruction
    torch.testing.assert_close(coder.reconstruct(x), sae(x).sae_out)
    assert not torch.allclose(coder.reconstruct(x), coder.decode(latents))


# --------------------------------------------------------------------------- SAELens


@pytest.mark.parametrize("architecture, k", [("standard", None), ("jumprelu", None), ("topk", 6)])
@pytest.mark.parametrize("apply_b_dec_to_input", [True, False])
def test_saelens_encode_and_decode_match_a_dense_reference(tiny_lm, tmp_path, architecture, k, apply_b_dec_to_input):
    (x,) = activations(tiny_lm, Site("model.layers.2", "output"))
    w = random_dense_weights(x, threshold=architecture == "jumprelu")
    write_saelens(tmp_path / "sae", w, architecture=architecture, k=k, apply_b_dec_to_input=apply_b_dec_to_input)

    coder = load(f"saelens:{tmp_path / 'sae'}", tiny_lm)
    assert coder.site == Site("model.layers.2", "output")
    assert (coder.kind, coder.num_latents, coder.d_in) == ("saelens", D_SAE, D_MODEL)

    dense = reference_acts(w, x, architecture, k=k, apply_b_dec_to_input=apply_b_dec_to_input)
    latents = coder.encode(x)
    assert 0 < (dense > 0).sum() < dense.numel() / 2  # the reference is neither empty nor dense
    assert active_entries(latents) == pytest.approx(dense_entries(dense), rel=1e-5, abs=1e-6)
    if architecture == "topk":
        assert latents.acts.shape == (len(x), k)
    if architecture == "jumprelu":
        pre = reference_pre_acts(w, x, apply_b_dec_to_input=apply_b_dec_to_input)
        assert ((pre > 0) & (pre <= w["threshold"])).any(), "some latents must be cut by the threshold"
    torch.testing.assert_close(coder.decode(latents), dense @ w["W_dec"] + w["b_dec"])


def test_saelens_log_threshold_is_exponentiated(tiny_lm, tmp_path):
    (x,) = activations(tiny_lm, Site("model.layers.2", "output"))
    w = random_dense_weights(x, threshold=True)
    on_disk = {name: t for name, t in w.items() if name != "threshold"} | {"log_threshold": w["threshold"].log()}
    write_saelens(tmp_path / "sae", on_disk, architecture="jumprelu")
    coder = load(f"saelens:{tmp_path / 'sae'}", tiny_lm)
    assert active_entries(coder.encode(x)) == pytest.approx(dense_entries(reference_acts(w, x, "jumprelu")), rel=1e-5)


@pytest.mark.parametrize(
    "hook_name, site",
    [
        ("blocks.2.hook_resid_post", Site("model.layers.2", "output")),
        ("blocks.2.hook_resid_pre", Site("model.layers.2", "input")),
        ("blocks.1.hook_mlp_out", Site("model.layers.1.mlp", "output")),
        ("blocks.3.hook_attn_out", Site("model.layers.3.self_attn", "output")),
    ],
)
def test_saelens_transformerlens_hook_names_map_to_llama_modules(tiny_lm, tmp_path, hook_name, site):
    (x,) = activations(tiny_lm, Site("model.layers.2", "output"))
    write_saelens(tmp_path / "sae", random_dense_weights(x), hook_name=hook_name)
    coder = load(f"saelens:{tmp_path / 'sae'}", tiny_lm)
    assert coder.site == site
    (at_site,) = activations(tiny_lm, coder.site)
    assert coder.encode(at_site).acts.shape[0] == len(at_site)


MLP_NORM = {"llama": "post_attention_layernorm", "gemma2": "pre_feedforward_layernorm"}
"""The norm in front of each block's MLP, whose input is TransformerLens' resid_mid."""

TL_MEANING = {
    "hook_attn_out": lambda pre, mid, post: mid - pre,
    "hook_mlp_out": lambda pre, mid, post: post - mid,
    "hook_mlp_in": lambda pre, mid, post: mid,
    "hook_resid_mid": lambda pre, mid, post: mid,
    "hook_resid_pre": lambda pre, mid, post: pre,
    "hook_resid_post": lambda pre, mid, post: post,
}
"""What TransformerLens hooks read, in terms of block 1's residual stream before, between and after."""


@pytest.mark.parametrize(
    "arch, hook",
    [
        ("llama", "hook_resid_pre"),
        ("llama", "hook_resid_post"),
        ("llama", "hook_attn_out"),
        ("llama", "hook_mlp_out"),
        ("llama", "hook_mlp_in"),
        ("llama", "hook_resid_mid"),
        ("gemma2", "hook_resid_pre"),
        ("gemma2", "hook_resid_post"),
        ("gemma2", "hook_attn_out"),
        ("gemma2", "hook_mlp_out"),
        ("gemma2", "hook_mlp_in"),
        ("gemma2", "hook_resid_mid"),
    ],
)
def test_saelens_coders_read_what_their_transformerlens_hook_read(tiny_lm, tmp_path, arch, hook):
    lm = tiny_lm if arch == "llama" else tiny_gemma2(tiny_lm.tokenizer)
    pre, mid, post = (
        Site("model.layers.1", "input"),
        Site(f"model.layers.1.{MLP_NORM[arch]}", "input"),
        Site("model.layers.1"),
    )
    write_saelens(tmp_path / "sae", random_dense_weights(torch.ones(1, D_MODEL)), hook_name=f"blocks.1.{hook}")
    coder = load(f"saelens:{tmp_path / 'sae'}", lm)

    read, *stream = activations(lm, coder.site, pre, mid, post)
    torch.testing.assert_close(read, TL_MEANING[hook](*stream), rtol=1e-4, atol=1e-5)


def test_saelens_explicit_hookpoint_overrides_the_module_but_keeps_the_side(tiny_lm, tmp_path):
    (x,) = activations(tiny_lm, Site("model.layers.2", "output"))
    write_saelens(tmp_path / "sae", random_dense_weights(x), hook_name="blocks.2.hook_resid_pre")
    assert load(f"saelens:{tmp_path / 'sae'}@layers.1", tiny_lm).site == Site("model.layers.1", "input")


def test_saelens_unknown_hook_name_needs_an_explicit_hookpoint(tiny_lm, tmp_path):
    (x,) = activations(tiny_lm, Site("model.layers.2", "output"))
    write_saelens(tmp_path / "sae", random_dense_weights(x), hook_name="blocks.2.attn.hook_pattern")
    with pytest.raises(CoderFormatError, match=r"hook_name='blocks\.2\.attn\.hook_pattern'.*attn\.hook_z.*@MODULE"):
        load(f"saelens:{tmp_path / 'sae'}", tiny_lm)
    assert load(f"saelens:{tmp_path / 'sae'}@model.layers.2.self_attn.o_proj:input", tiny_lm).site == Site(
        "model.layers.2.self_attn.o_proj", "input"
    )
    # without a side an SAE reads its module's output
    assert load(f"saelens:{tmp_path / 'sae'}@model.layers.2.mlp", tiny_lm).site == Site("model.layers.2.mlp", "output")


@pytest.mark.parametrize(
    "cfg_change, message",
    [
        (
            {"normalize_activations": "expected_average_only_in"},
            r"normalize_activations='expected_average_only_in'.*activation_scaler\.json",
        ),
        ({"normalize_activations": True}, r"normalize_activations=True.*activation_scaler\.json"),
        ({"normalize_activations": "layer_norm"}, "normalize_activations='layer_norm'"),
        ({"architecture": "abstopk", "k": 4}, "architecture='abstopk'"),
        ({"architecture": "sparse_pca"}, "architecture='sparse_pca' is not one interp knows"),
        ({"activation_fn_str": "tanh-relu"}, "activation_fn='tanh-relu'"),
        (
            {"rescale_acts_by_decoder_norm": True},
            r"rescale_acts_by_decoder_norm=True is a TopK option, but architecture='standard'",
        ),
        ({"reshape_activations": "hook_z"}, r"reshape_activations='hook_z'.*hook_name='blocks\.2\.hook_resid_post'"),
        ({"hook_point_head_index": 2}, "hook_head_index=2"),
        ({"d_sae": 99}, "d_sae=99 but its weights have 128"),
        ({"architecture": "topk"}, "does not say its k"),
        ({"architecture": "jumprelu"}, "no threshold"),
        (
            {"architecture": "transcoder", "apply_b_dec_to_input": True},
            "apply_b_dec_to_input=True cannot apply to a transcoder",
        ),
    ],
)
def test_saelens_unsupported_configs_are_one_line_format_errors_naming_the_field(
    tiny_lm, tmp_path, cfg_change, message
):
    (x,) = activations(tiny_lm, Site("model.layers.2", "output"))
    write_saelens(tmp_path / "sae", random_dense_weights(x))
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text()) | cfg_change
    (tmp_path / "sae" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(CoderFormatError, match=message) as error:
        load(f"saelens:{tmp_path / 'sae'}", tiny_lm)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("kind", ["saelens", "gemmascope"])
def test_weights_a_coder_would_not_use_are_refused_not_ignored(tiny_lm, tmp_path, kind):
    (x,) = activations(tiny_lm, Site("model.layers.2", "output"))
    w = random_dense_weights(x, threshold=kind == "gemmascope") | {"W_skip": torch.zeros(D_MODEL, D_MODEL)}
    folder = (write_saelens if kind == "saelens" else write_gemmascope)(
        tmp_path / "gemma-scope-2b-pt-res" / "layer_2", w
    )
    with pytest.raises(CoderFormatError, match="holds W_skip, which this coder does not use"):
        load(f"{kind}:{folder}", tiny_lm)


def test_saelens_applies_b_dec_to_the_input_unless_the_config_says_not(tiny_lm, tmp_path):
    # SAELens' own default for a config without the field is True
    (x,) = activations(tiny_lm, Site("model.layers.2", "output"))
    w = random_dense_weights(x)
    write_saelens(tmp_path / "sae", w)
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    del cfg["apply_b_dec_to_input"]
    (tmp_path / "sae" / "cfg.json").write_text(json.dumps(cfg))
    coder = load(f"saelens:{tmp_path / 'sae'}", tiny_lm)
    assert active_entries(coder.encode(x)) == pytest.approx(
        dense_entries(reference_acts(w, x, "standard")), rel=1e-5, abs=1e-6
    )


def test_saelens_5_configs_name_hooks_and_topk_their_own_way(tiny_lm, tmp_path):
    (x,) = activations(tiny_lm, Site("model.layers.2", "output"))
    w = random_dense_weights(x)
    (tmp_path / "sae").mkdir()
    cfg = {
        "d_in": D_MODEL,
        "d_sae": D_SAE,
        "hook_point": "blocks.2.hook_resid_pre",
        "hook_point_head_index": None,
        "activation_fn_str": "topk",
        "activation_fn_kwargs": {"k": 5},
        "normalize_activations": False,
        "apply_b_dec_to_input": False,
        "finetuning_scaling_factor": False,
        "sae_lens_training_version": "3.5.0",
    }
    (tmp_path / "sae" / "cfg.json").write_text(json.dumps(cfg))
    save_file(w | {"scaling_factor": torch.ones(D_SAE)}, tmp_path / "sae" / "sae_weights.safetensors")

    coder = load(f"saelens:{tmp_path / 'sae'}", tiny_lm)
    assert coder.site == Site("model.layers.2", "input")
    assert (coder.activation, coder.k) == ("topk", 5)
    dense = reference_acts(w, x, "topk", k=5, apply_b_dec_to_input=False)
    assert active_entries(coder.encode(x)) == pytest.approx(dense_entries(dense), rel=1e-5, abs=1e-6)

    # a fine-tuning scaling factor other than 1 would change the latents: refused
    save_file(w | {"scaling_factor": torch.full((D_SAE,), 2.0)}, tmp_path / "sae" / "sae_weights.safetensors")
    with pytest.raises(CoderFormatError, match="finetuning_scaling_factor=False with a scaling_factor other than 1"):
        load(f"saelens:{tmp_path / 'sae'}", tiny_lm)


def test_saelens_inconsistent_weight_shapes_are_format_errors(tiny_lm, tmp_path):
    (x,) = activations(tiny_lm, Site("model.layers.2", "output"))
    w = random_dense_weights(x)
    write_saelens(tmp_path / "sae", w | {"W_dec": w["W_dec"].T})
    with pytest.raises(CoderFormatError, match="Inconsistent shapes"):
        load(f"saelens:{tmp_path / 'sae'}", tiny_lm)


# --------------------------------------------------------------------------- Gemma Scope


def test_gemmascope_guesses_the_layer_from_its_folder_and_encodes_jumprelu(tiny_lm, tmp_path):
    (x,) = activations(tiny_lm, Site("model.layers.2", "output"))
    w = random_dense_weights(x, threshold=True)
    folder = write_gemmascope(tmp_path / "gemma-scope-2b-pt-res" / "layer_2" / "width_16k" / "average_l0_10", w)

    coder = load(f"gemmascope:{folder}", tiny_lm)
    assert coder.site == Site("model.layers.2", "output")
    assert (coder.kind, coder.num_latents, coder.d_in) == ("gemmascope", D_SAE, D_MODEL)

    # Gemma Scope does not subtract b_dec before encoding
    dense = reference_acts(w, x, "jumprelu", apply_b_dec_to_input=False)
    latents = coder.encode(x)
    assert 0 < len(dense_entries(dense))
    assert active_entries(latents) == pytest.approx(dense_entries(dense), rel=1e-5, abs=1e-6)
    torch.testing.assert_close(coder.decode(latents), dense @ w["W_dec"] + w["b_dec"])

    # the params.npz file itself is an accepted source too
    assert load(f"gemmascope:{folder / 'params.npz'}", tiny_lm).site == coder.site


def test_gemmascope_explicit_hookpoint_wins_over_the_folder_name(tiny_lm, tmp_path):
    (x,) = activations(tiny_lm, Site("model.layers.2", "output"))
    folder = write_gemmascope(
        tmp_path / "layer_2" / "width_16k" / "average_l0_10", random_dense_weights(x, threshold=True)
    )
    assert load(f"gemmascope:{folder}@model.layers.1", tiny_lm).site == Site("model.layers.1", "output")


def test_gemmascope_mlp_release_reads_the_mlp_output(tiny_lm, tmp_path):
    (x,) = activations(tiny_lm, Site("model.layers.2", "output"))
    folder = write_gemmascope(
        tmp_path / "gemma-scope-2b-pt-mlp" / "layer_3" / "width_16k" / "average_l0_10",
        random_dense_weights(x, threshold=True),
    )
    assert load(f"gemmascope:{folder}", tiny_lm).site == Site("model.layers.3.mlp", "output")


def test_gemmascope_without_a_layer_in_its_path_needs_an_explicit_hookpoint(tiny_lm, tmp_path):
    (x,) = activations(tiny_lm, Site("model.layers.2", "output"))
    folder = write_gemmascope(tmp_path / "my_sae", random_dense_weights(x, threshold=True))
    with pytest.raises(CoderFormatError, match="Cannot tell the layer"):
        load(f"gemmascope:{folder}", tiny_lm)


def test_gemmascope_without_a_threshold_is_a_format_error(tiny_lm, tmp_path):
    (x,) = activations(tiny_lm, Site("model.layers.2", "output"))
    folder = write_gemmascope(tmp_path / "layer_2" / "width_16k" / "average_l0_10", random_dense_weights(x))
    with pytest.raises(CoderFormatError, match="lacks threshold"):
        load(f"gemmascope:{folder}", tiny_lm)


def test_gemmascope_layer_guess_uses_the_folder_nearest_the_file(tiny_lm, tmp_path):
    (x,) = activations(tiny_lm, Site("model.layers.2", "output"))
    folder = write_gemmascope(
        tmp_path / "layer_1_sweeps" / "gemma-scope-2b-pt-res" / "layer_2" / "width_16k" / "average_l0_10",
        random_dense_weights(x, threshold=True),
    )
    assert load(f"gemmascope:{folder}", tiny_lm).site == Site("model.layers.2", "output")


def test_gemmascope_attention_release_reads_the_input_of_the_output_projection(tiny_lm, tmp_path):
    (x,) = activations(tiny_lm, Site("model.layers.2", "output"))
    folder = write_gemmascope(
        tmp_path / "gemma-scope-2b-pt-att" / "layer_1" / "width_16k" / "average_l0_10",
        random_dense_weights(x, threshold=True),
    )
    assert load(f"gemmascope:{folder}", tiny_lm).site == Site("model.layers.1.self_attn.o_proj", "input")


# --------------------------------------------------------------------------- neurons


def test_neurons_read_the_input_of_the_mlp_output_projection(tiny_lm):
    coder = load("neurons@model.layers.1.mlp", tiny_lm)
    assert coder.site == Site("model.layers.1.mlp.down_proj", "input")
    assert (coder.kind, coder.num_latents, coder.d_in) == ("neurons", D_MLP, D_MLP)
    assert coder.describe()["k"] is None
    # base-relative module names work as for every other hookpoint
    assert load("topk-neurons@layers.1.mlp", tiny_lm).site == coder.site


def test_raw_neurons_keep_every_positive_neuron_and_only_a_dense_decode_rebuilds_the_mlp_output(tiny_lm):
    coder = load("neurons@model.layers.1.mlp", tiny_lm)
    h, mlp_out = activations(tiny_lm, coder.site, Site("model.layers.1.mlp", "output"))
    assert (h < 0).any() and (h > 0).any()  # SiLU-gated neurons take both signs

    latents = coder.encode(h)
    assert (latents.acts >= 0).all()
    assert active_entries(latents) == pytest.approx(dense_entries(h.clamp_min(0)))
    # dropping the negative neurons changes the MLP output ...
    assert not torch.allclose(coder.decode(latents), mlp_out, atol=1e-4)
    # ... while all neurons with their signed values rebuild it (Llama's down_proj has no bias)
    assert coder.decoder_bias() is None
    every = Latents(h, torch.arange(D_MLP).expand(len(h), D_MLP))
    torch.testing.assert_close(coder.decode(every), mlp_out, rtol=1e-4, atol=1e-6)


def test_topk_neurons_keep_exactly_the_k_largest_per_token(tiny_lm):
    coder = load("topk-neurons@model.layers.1.mlp", tiny_lm, neuron_k=5)
    assert coder.kind == "topk-neurons" and coder.describe()["k"] == 5
    (h,) = activations(tiny_lm, coder.site)

    latents = coder.encode(h)
    assert latents.acts.shape == latents.indices.shape == (len(h), 5)
    for row, acts, indices in zip(h, latents.acts, latents.indices, strict=True):
        assert len(set(indices.tolist())) == 5
        torch.testing.assert_close(acts, row[indices])
        dropped = torch.ones(D_MLP, dtype=torch.bool)
        dropped[indices] = False
        assert acts.min() >= row[dropped].max()


def test_neurons_need_a_module_with_an_mlp_output_projection(tiny_lm):
    with pytest.raises(CoderFormatError, match="no MLP output projection"):
        load("neurons@model.layers.1.self_attn", tiny_lm)


# --------------------------------------------------------------------------- bad input


def test_width_mismatch_names_both_widths(tiny_lm, tmp_path):
    random_sparsify(d_in=16).save_to_disk(tmp_path / "model.layers.2")
    coder = load(f"sparsify:{tmp_path / 'model.layers.2'}", tiny_lm)
    width = site_widths(tiny_lm.model, [coder.site], "cpu")[coder.site]
    assert width == D_MODEL
    with pytest.raises(CoderShapeError, match=r"d_in=16.*model\.layers\.2.*'tiny-llama'.*width 32"):
        coder.check_width(width, tiny_lm.name)

    neurons = load("neurons@model.layers.1.mlp", tiny_lm)
    neurons.check_width(site_widths(tiny_lm.model, [neurons.site], "cpu")[neurons.site], tiny_lm.name)


@pytest.mark.parametrize("kind", ["sparsify", "saelens", "gemmascope"])
def test_a_folder_without_coder_files_is_a_format_error(tiny_lm, tmp_path, kind):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CoderFormatError, match=r"No .*(cfg\.json|params\.npz)|No Gemma Scope"):
        load(f"{kind}:{tmp_path / 'empty'}@model.layers.2", tiny_lm)


def test_a_saelens_folder_given_as_sparsify_says_to_use_saelens(tiny_lm, tmp_path):
    (x,) = activations(tiny_lm, Site("model.layers.2", "output"))
    folder = write_saelens(tmp_path / "sae", random_dense_weights(x))
    with pytest.raises(CoderFormatError, match="no sae.safetensors.*saelens:"):
        load(f"sparsify:{folder}", tiny_lm)


@pytest.mark.parametrize(
    "spec",
    [
        "sparsify:{tmp}/model.layers.2@model.layers.9",
        "saelens:{tmp}/sae@model.layers.9",
        "neurons@model.layers.9.mlp",
        "topk-neurons@model.mlp",
    ],
)
def test_a_wrong_hookpoint_lists_the_valid_ones(tiny_lm, tmp_path, spec):
    random_sparsify().save_to_disk(tmp_path / "model.layers.2")
    (x,) = activations(tiny_lm, Site("model.layers.2", "output"))
    write_saelens(tmp_path / "sae", random_dense_weights(x))
    with pytest.raises(UnknownHookpointError, match=r"Valid hookpoints: .*model\.layers\.\{0\.\.3\}\.mlp"):
        load(spec.format(tmp=tmp_path), tiny_lm)


@pytest.fixture
def no_hub(monkeypatch):
    """Make any attempt to reach the Hugging Face Hub fail loudly with ImportError."""
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)


@pytest.mark.parametrize("kind", ["sparsify", "saelens", "gemmascope"])
@pytest.mark.parametrize(
    "path", ["/no/such/coder", "./no/such/coder", "../no/such", "~/no/such/interp-coder", "nosuchfolder"]
)
def test_a_missing_local_path_is_a_format_error_without_touching_the_hub(tiny_lm, no_hub, kind, path):
    with pytest.raises(CoderFormatError, match="not found.*neither a local path nor a Hub repo id"):
        load(f"{kind}:{path}@model.layers.2", tiny_lm)


def test_the_no_hub_guard_does_catch_hub_lookups(tiny_lm, no_hub):
    # owner/repo ids are Hub sources; with the Hub client blocked they fail at import, proving the guard works
    with pytest.raises(ImportError):
        load("sparsify:nobody-interp-test/no-such-sae@layers.2", tiny_lm)
