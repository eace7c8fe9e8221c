"""Hook sites: a module's input can be named, TransformerLens names and Gemma Scope paths map to the right tensors.

Every test reads the tiny random Llama through ``interp``'s coders and compares with a forward
hook written here, so a site that is guessed wrong shows as different numbers, not a different name.
"""

import logging
from pathlib import Path

import pytest
import torch

from interp.coders import CoderSpec, load_coder
from interp.errors import CoderFormatError, CoderShapeError, UnknownHookpointError
from interp.hooks import Site, capture_tokens, hooks_removed, site_widths
from interp.steer import Edit, steer, writes
from tests.helpers.coders import random_dense_weights, write_gemmascope, write_saelens
from tests.helpers.models import D_MODEL, TEXT, tiny_gemma2

GOLDEN = Path(__file__).parent / "golden" / "saelens"
"""SAELens-written coders: ``hook_z`` reads blocks.2.attn.hook_z, ``standard`` blocks.2.hook_resid_post."""


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_cpu_thread):
    """Tiny tensors: one intra-op thread is fastest on a busy CPU."""


def load(spec: str, lm):
    return load_coder(CoderSpec.parse(spec), lm.model)


def ids(lm) -> torch.Tensor:
    return lm.tokenizer(TEXT, return_tensors="pt").input_ids


def read(lm, site: Site) -> torch.Tensor:
    """``[tokens, width]`` at ``site``, as ``interp`` captures it."""
    return capture_tokens(lm.model, ids(lm), [site])[site].flatten(0, 1)


def hooked(lm, module: str) -> dict[str, torch.Tensor]:
    """The input and output of ``module`` over TEXT, seen by plain PyTorch forward hooks."""
    seen = {}

    def before(mod, args, kwargs):
        seen["input"] = args[0] if args else kwargs["hidden_states"]

    def after(mod, args, out):
        seen["output"] = out[0] if isinstance(out, tuple) else out

    mod = lm.model.get_submodule(module)
    handles = [mod.register_forward_pre_hook(before, with_kwargs=True), mod.register_forward_hook(after)]
    with hooks_removed(handles), torch.inference_mode():
        lm.model(input_ids=ids(lm), use_cache=False)
    return {side: t.flatten(0, 1) for side, t in seen.items()}


# --------------------------------------------------------------------------- hook_z


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_a_hook_z_coder_reads_exactly_the_input_of_the_attention_output_projection(tiny_lm, arch):
    lm = tiny_lm if arch == "llama" else tiny_gemma2(tiny_lm.tokenizer)
    coder = load(f"saelens:{GOLDEN / 'hook_z'}", lm)
    assert coder.site == Site("model.layers.2.self_attn.o_proj", "input")

    heads = read(lm, coder.site)
    o_proj = hooked(lm, "model.layers.2.self_attn.o_proj")
    torch.testing.assert_close(heads, o_proj["input"], rtol=0, atol=0)
    # it is what the projection turns into the attention output: the concatenated heads
    torch.testing.assert_close(o_proj["output"], hooked(lm, "model.layers.2.self_attn")["output"], rtol=0, atol=0)
    assert heads.shape[-1] == coder.d_in == 4 * 8  # heads × head_dim
    assert coder.encode(heads).acts.shape[0] == len(heads)


def test_a_module_input_can_be_named_with_a_side(tiny_lm):
    spec = f"saelens:{GOLDEN / 'hook_z'}@model.layers.1.self_attn.o_proj:input"
    coder = load(spec, tiny_lm)
    assert coder.site == Site("model.layers.1.self_attn.o_proj", "input")
    torch.testing.assert_close(read(tiny_lm, coder.site), hooked(tiny_lm, "model.layers.1.self_attn.o_proj")["input"])
    # a residual SAE can read an MLP's input or output when told to
    assert load(f"saelens:{GOLDEN / 'standard'}@layers.1.mlp:input", tiny_lm).site == Site(
        "model.layers.1.mlp", "input"
    )
    assert load(f"saelens:{GOLDEN / 'standard'}@layers.1.mlp:output", tiny_lm).site == Site(
        "model.layers.1.mlp", "output"
    )


@pytest.mark.parametrize(
    "hookpoint",
    [
        "model.layers.2",  # resid_pre: the same width as the heads, by accident
        "model.layers.2.self_attn.o_proj:output",
    ],
)
def test_a_hook_z_coder_off_the_heads_is_refused_though_its_width_matches(tiny_lm, hookpoint):
    with pytest.raises(CoderShapeError, match=r"concatenated attention heads \(hook_z\).*only by accident"):
        load(f"saelens:{GOLDEN / 'hook_z'}@{hookpoint}", tiny_lm)
    assert (
        site_widths(tiny_lm.model, [Site("model.layers.2", "input")], "cpu")[Site("model.layers.2", "input")]
        == D_MODEL
    )


def test_a_residual_coder_on_the_heads_is_refused_though_its_width_matches(tiny_lm):
    with pytest.raises(CoderShapeError, match=r"not trained on attention heads.*only by accident"):
        load(f"saelens:{GOLDEN / 'standard'}@model.layers.2.self_attn.o_proj:input", tiny_lm)


# --------------------------------------------------------------------------- resid_mid


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_resid_mid_and_mlp_in_are_one_tensor_the_residual_stream_between_attention_and_mlp(tiny_lm, tmp_path, arch):
    lm = tiny_lm if arch == "llama" else tiny_gemma2(tiny_lm.tokenizer)
    w = random_dense_weights(torch.ones(1, D_MODEL))
    mid = load(f"saelens:{write_saelens(tmp_path / 'mid', w, hook_name='blocks.1.hook_resid_mid')}", lm)
    mlp_in = load(f"saelens:{write_saelens(tmp_path / 'in', w, hook_name='blocks.1.hook_mlp_in')}", lm)
    assert mid.site == mlp_in.site

    block = hooked(lm, "model.layers.1")
    attn_out = hooked(lm, "model.layers.1.self_attn")["output"]
    if arch == "gemma2":  # Gemma normalises the attention output before adding it
        attn_out = hooked(lm, "model.layers.1.post_attention_layernorm")["output"]
    torch.testing.assert_close(read(lm, mid.site), block["input"] + attn_out, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- Gemma Scope transcoders


def test_a_gemma_scope_transcoder_path_reads_the_mlp_input_and_writes_its_output(tiny_lm, tmp_path, caplog):
    folder = write_gemmascope(
        tmp_path / "gemma-scope-2b-pt-transcoders" / "layer_1" / "width_16k" / "average_l0_10",
        random_dense_weights(torch.ones(1, D_MODEL), threshold=True),
    )
    with caplog.at_level(logging.INFO, logger="interp.coders.dense"):
        coder = load(f"gemmascope:{folder}", tiny_lm)
    assert coder.site == Site("model.layers.1.mlp", "input")
    assert coder.describe()["transcode"] is True and writes(coder) == "output"
    (line,) = [r.getMessage() for r in caplog.records]
    assert "\n" not in line
    assert "guessed" in line.lower() and "blocks.1.mlp.hook_in" in line and "transcoder" in line

    mlp = hooked(tiny_lm, "model.layers.1.mlp")
    torch.testing.assert_close(read(tiny_lm, coder.site), mlp["input"], rtol=0, atol=0)
    assert coder.decode(coder.encode(mlp["input"])).shape == mlp["output"].shape

    # steering a latent adds exactly its decoder row to the MLP's output
    clean = hooked(tiny_lm, "model.layers.2")["input"]
    with steer(tiny_lm.model, coder, [Edit(7, "add", 2.0)]):
        steered = hooked(tiny_lm, "model.layers.2")["input"]
    torch.testing.assert_close(
        steered - clean, (2.0 * coder.decoder_weight()[7]).expand_as(clean), rtol=1e-4, atol=1e-5
    )


def test_a_gemma_scope_transcoder_refuses_to_read_an_output(tiny_lm, tmp_path):
    folder = write_gemmascope(
        tmp_path / "gemma-scope-2b-pt-transcoders" / "layer_1" / "width_16k" / "average_l0_10",
        random_dense_weights(torch.ones(1, D_MODEL), threshold=True),
    )
    assert load(f"gemmascope:{folder}@model.layers.2.mlp", tiny_lm).site == Site("model.layers.2.mlp", "input")
    with pytest.raises(CoderFormatError, match="reads its module's input and writes its output; drop ':output'"):
        load(f"gemmascope:{folder}@model.layers.2.mlp:output", tiny_lm)


def test_a_path_without_a_release_is_guessed_residual_and_says_so(tiny_lm, tmp_path, caplog):
    folder = write_gemmascope(
        tmp_path / "saes" / "layer_2" / "width_16k" / "average_l0_10",
        random_dense_weights(torch.ones(1, D_MODEL), threshold=True),
    )
    with caplog.at_level(logging.INFO, logger="interp.coders.dense"):
        assert load(f"gemmascope:{folder}", tiny_lm).site == Site("model.layers.2", "output")
    (line,) = [r.getMessage() for r in caplog.records]
    assert "blocks.2.hook_resid_post" in line and "names no Gemma Scope release" in line


def test_an_unknown_gemma_scope_release_is_not_guessed(tiny_lm, tmp_path):
    folder = write_gemmascope(
        tmp_path / "gemma-scope-2b-pt-embeddings" / "layer_2" / "width_16k" / "average_l0_10",
        random_dense_weights(torch.ones(1, D_MODEL), threshold=True),
    )
    with pytest.raises(
        CoderFormatError, match=r"Cannot tell what Gemma Scope release 'gemma-scope-2b-pt-embeddings' reads"
    ):
        load(f"gemmascope:{folder}", tiny_lm)


def test_a_gemma_scope_attention_coder_must_read_the_heads(tiny_lm, tmp_path):
    folder = write_gemmascope(
        tmp_path / "gemma-scope-2b-pt-att" / "layer_1" / "width_16k" / "average_l0_10",
        random_dense_weights(torch.ones(1, D_MODEL), threshold=True),
    )
    with pytest.raises(CoderShapeError, match="only by accident"):
        load(f"gemmascope:{folder}@model.layers.1", tiny_lm)


# --------------------------------------------------------------------------- bad names


@pytest.mark.parametrize(
    "spec, error, message",
    [
        (
            "saelens:{golden}/standard@model.layers.2:inptu",
            UnknownHookpointError,
            r"is not MODULE, MODULE:input or MODULE:output",
        ),
        (
            "saelens:{golden}/standard@model.layers.9:input",
            UnknownHookpointError,
            r"Valid hookpoints: .*model\.layers\.\{0\.\.3\}\.mlp",
        ),
        (
            "saelens:{golden}/standard@blocks.2.attn.hook_pattern",
            UnknownHookpointError,
            r"'blocks\.2\.attn\.hook_pattern' is no Hugging Face module's input or output; "
            r"supported: blocks\.N\.\{hook_resid_pre, .*attn\.hook_z",
        ),
        (
            "saelens:{golden}/standard@blocks.9.hook_resid_post",
            UnknownHookpointError,
            r"names layer 9, but the model has 4 \(0-3\)",
        ),
        (
            "saelens:{golden}/standard@blocks.2.hook_resid_pre:output",
            CoderFormatError,
            r"already says what it reads; drop ':output'",
        ),
        ("neurons@model.layers.1.mlp:input", CoderFormatError, r"takes the MLP module without a side"),
    ],
)
def test_bad_hookpoints_are_one_line_errors_that_list_what_is_valid(tiny_lm, spec, error, message):
    with pytest.raises(error, match=message) as raised:
        load(spec.format(golden=GOLDEN), tiny_lm)
    assert "\n" not in str(raised.value)
