"""SAELens coders written by SAELens itself: we encode and decode exactly as SAELens does, or refuse.

Each folder under ``tests/golden/saelens`` was written by sae-lens 6.x's own save methods
(``save_model``, ``save_inference_model``, ``ActivationScaler.save``) with seeded random weights;
``inputs.safetensors`` holds seeded inputs with SAELens's own ``encode`` and ``decode`` of them
(see ``golden/saelens/README.md`` and each folder's ``golden.json`` for the version and method).
The script that wrote them needs sae-lens, which this project does not depend on, so it lives
outside the repository; it builds each SAE with SAELens's config classes and saves it as above.
"""

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from interp.coders import CoderSpec, Latents, load_coder
from interp.errors import CoderFormatError
from interp.hooks import Site

GOLDEN = Path(__file__).parent / "golden" / "saelens"
RTOL, ATOL = 1e-5, 1e-5
"""Our float32 encode folds SAELens's runtime rescalings into the weights: equal up to rounding."""

RESID, MLP_IN = Site("model.layers.2", "output"), Site("model.layers.1.mlp", "input")
APPLIED = {
    "standard": RESID,
    "standard_no_b_dec": RESID,
    "standard_bfloat16": RESID,
    "jumprelu": RESID,
    "jumprelu_training_checkpoint": RESID,
    "topk": RESID,
    "topk_rescale": RESID,
    "topk_training_checkpoint": RESID,
    "topk_inference_export": RESID,
    "topk_expected_average_checkpoint": RESID,
    "gated": RESID,
    "hook_z": Site("model.layers.2.self_attn.o_proj", "input"),
    "transcoder": MLP_IN,
    "skip_transcoder": MLP_IN,
    "jumprelu_transcoder": MLP_IN,
    "jumprelu_skip_transcoder": MLP_IN,
}
"""Golden coders we apply exactly, and the site each one reads on the tiny Llama."""

REFUSED = {
    "abstopk": r"architecture='abstopk'",
    "batchtopk_training_checkpoint": r"architecture='batchtopk'",
    "matching_pursuit": r"architecture='matching_pursuit'",
    "layer_norm": r"normalize_activations='layer_norm'",
    "constant_norm_rescale": r"normalize_activations='constant_norm_rescale'",
    "covariance_whitening_checkpoint": r"normalize_activations='covariance_whitening'",
    "expected_average_without_scaler": r"normalize_activations='expected_average_only_in'.*activation_scaler\.json",
    "hook_head_index": r"hook_head_index=1",
    "transcoder_from_resid_mid": r"hook_name='blocks\.1\.hook_mlp_in'.*hook_name_out='blocks\.1\.hook_mlp_out'",
}
"""Golden coders we refuse, and what the one-line error must name (the field and its value)."""


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_cpu_thread):
    """Tiny tensors: one intra-op thread is fastest on a busy CPU."""


def load(name: str, lm):
    return load_coder(CoderSpec.parse(f"saelens:{GOLDEN / name}"), lm.model)


def entries(latents: Latents) -> dict[tuple[int, int], float]:
    """``{(row, latent): value}`` of every nonzero activation."""
    return {
        (row, i): a
        for row, (acts, indices) in enumerate(zip(latents.acts.tolist(), latents.indices.tolist(), strict=True))
        for a, i in zip(acts, indices, strict=True)
        if a != 0
    }


def dense_entries(dense: torch.Tensor) -> dict[tuple[int, int], float]:
    return {(row, i): dense[row, i].item() for row, i in dense.nonzero().tolist()}


def test_every_golden_folder_is_either_applied_or_refused_as_its_writer_says():
    folders = {p.name for p in GOLDEN.iterdir() if p.is_dir()}
    assert folders == set(APPLIED) | set(REFUSED)
    for name in folders:
        info = json.loads((GOLDEN / name / "golden.json").read_text())
        assert info["written_by"].startswith("sae-lens 6.")
        assert info["expect"] == ("match" if name in APPLIED else "refuse"), name


@pytest.mark.parametrize("name", sorted(APPLIED))
def test_encode_and_decode_equal_saelens_own(tiny_lm, name):
    coder = load(name, tiny_lm)
    assert coder.site == APPLIED[name]
    ref = load_file(GOLDEN / name / "inputs.safetensors")
    x = ref["inputs"].flatten(1)  # hook_z inputs are [rows, heads, d_head]; the model gives them concatenated

    latents = coder.encode(x)
    expected = dense_entries(ref["encoded"])
    assert len(expected) > len(x), "the reference must have active latents"
    assert entries(latents).keys() == expected.keys(), "a different active set than SAELens"
    assert entries(latents) == pytest.approx(expected, rel=RTOL, abs=ATOL)
    torch.testing.assert_close(coder.decode(latents), ref["decoded"].flatten(1), rtol=RTOL, atol=ATOL)
    if "forward" in ref:  # skip transcoders add W_skip x to the decoded latents
        torch.testing.assert_close(coder.reconstruct(x), ref["forward"], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", sorted(APPLIED))
def test_transcoders_say_so_and_saes_do_not(tiny_lm, name):
    assert load(name, tiny_lm).describe()["transcode"] == ("transcoder" in name)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_unsupported_configs_are_refused_in_one_line_naming_the_field(tiny_lm, name):
    with pytest.raises(CoderFormatError) as error:
        load(name, tiny_lm)
    message = str(error.value)
    assert "\n" not in message
    assert re.search(REFUSED[name], message), message
