"""Steering: only the chosen latents change, by exactly their decoder contribution, for every coder format.

Coders are built in memory at known sites of a tiny random Llama (an output-reading TopK SAE, an
input-reading resid_pre SAE, a sparsify transcoder, MLP neurons raw and top-k). On the embedded
SmolLM2 a planted latent whose decoder direction is the embedding of " cat" shows what steering
does to real text, and the KL search is checked against a KL computed here by hand.
"""

import json

import pytest
import sparsify
import torch
from sparsify import SaeConfig

from interp.cli import main
from interp.coders.dense import DenseEncoderCoder
from interp.coders.neurons import load_neurons
from interp.coders.sparsify_coder import SparsifyCoder
from interp.config import CoderConfig, ModelConfig, RunConfig
from interp.errors import UnknownHookpointError
from interp.hooks import Site, capture_tokens
from interp.steer import Edit, SteeringError, steer, writes
from interp.steer_effects import (
    calibrate_strength,
    continue_prompts,
    encode_prompts,
    load_steer_prompts,
    next_token_logprobs,
)
from interp.steer_side_by_side import generate_side_by_side, pick_coder
from tests.helpers.coders import planted_word_coder
from tests.helpers.models import D_MODEL, TEXT

N_LATENTS = 128


pytestmark = pytest.mark.usefixtures("one_cpu_thread")


# --------------------------------------------------------------------------- coders at known sites


def site_input(lm, site: Site) -> torch.Tensor:
    ids = lm.tokenizer(TEXT, return_tensors="pt").input_ids
    return capture_tokens(lm.model, ids, [site])[site].flatten(0, 1).float()


def dense_sae(lm, hookpoint: str, reads: str, activation: str, k: int | None = None) -> DenseEncoderCoder:
    """Random SAE weights scaled so that pre-activations at the site are O(1)."""
    g = torch.Generator().manual_seed(0)
    scale = site_input(lm, Site(hookpoint, reads)).norm(dim=-1).mean()
    return DenseEncoderCoder(
        W_enc=torch.randn(D_MODEL, N_LATENTS, generator=g) / scale,
        b_enc=torch.randn(N_LATENTS, generator=g) * 0.3,
        W_dec=torch.randn(N_LATENTS, D_MODEL, generator=g) * 0.2,
        b_dec=torch.randn(D_MODEL, generator=g) * 0.1,
        activation=activation,
        k=k,
        hookpoint=hookpoint,
        reads=reads,
        source="test",
        kind="saelens",
    )


def transcoder() -> SparsifyCoder:
    torch.manual_seed(1)
    sae = sparsify.SparseCoder(D_MODEL, SaeConfig(expansion_factor=4, k=8, transcode=True, skip_connection=True))
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_(0, 0.5)
    return SparsifyCoder(sae.requires_grad_(False), hookpoint="model.layers.1.mlp", source="test")


CODERS = {
    "sae-output-topk": lambda lm: dense_sae(lm, "model.layers.1", "output", "topk", k=4),
    "sae-resid-pre-relu": lambda lm: dense_sae(lm, "model.layers.2", "input", "relu"),
    "transcoder": lambda lm: transcoder(),
    "neurons": lambda lm: load_neurons(lm.model, "model.layers.1.mlp", None),
    "topk-neurons": lambda lm: load_neurons(lm.model, "model.layers.1.mlp", 8),
}


def dense_code(coder, x: torch.Tensor) -> torch.Tensor:
    """``[tokens, num_latents]``: the coder's code of ``x``, densified here (neurons: ``x`` itself,
    every neuron exact).
    """
    if coder.kind in ("neurons", "topk-neurons"):
        return x
    code = coder.encode(x)
    return torch.zeros(len(x), coder.num_latents).scatter_add(1, code.indices, code.acts.float())


def written(lm, coder, ids, edits=None) -> torch.Tensor:
    """``[tokens, d]``: the tensor the coder writes, with ``edits`` applied (or clean)."""
    site = Site(coder.hookpoint, writes(coder))
    if edits is None:
        return capture_tokens(lm.model, ids, [site])[site].flatten(0, 1).float()
    with steer(lm.model, coder, edits):
        return capture_tokens(lm.model, ids, [site])[site].flatten(0, 1).float()


# --------------------------------------------------------------------------- exactness


def test_each_coder_writes_where_its_decoder_points(tiny_lm):
    sides = {name: (make(tiny_lm).reads, writes(make(tiny_lm))) for name, make in CODERS.items()}
    assert sides == {
        "sae-output-topk": ("output", "output"),
        "sae-resid-pre-relu": ("input", "input"),  # a resid_pre SAE rebuilds the block's input
        "transcoder": ("input", "output"),  # reads the MLP's input, writes its output
        "neurons": ("input", "output"),
        "topk-neurons": ("input", "output"),
    }


@pytest.mark.parametrize("name", CODERS)
def test_strength_zero_reproduces_the_clean_logits_and_generation_exactly(tiny_lm, name):
    coder = CODERS[name](tiny_lm)
    ids = encode_prompts(tiny_lm, ["The quick brown fox", "Sparse autoencoders find"])
    clean_next, clean_text = next_token_logprobs(tiny_lm, ids), continue_prompts(tiny_lm, ids, 8)
    with steer(tiny_lm.model, coder, [Edit(3, "add", 0.0), Edit(7, "add", 0.0)]):
        assert torch.equal(next_token_logprobs(tiny_lm, ids), clean_next)
        assert continue_prompts(tiny_lm, ids, 8) == clean_text
    with steer(tiny_lm.model, coder, [Edit(3, "add", 4.0)]):
        assert not torch.equal(next_token_logprobs(tiny_lm, ids), clean_next)  # and the hook does act


def test_prompts_continued_together_continue_as_they_would_alone(tiny_lm):
    short, long = encode_prompts(tiny_lm, ["Hi", "The quick brown fox jumps over the lazy dog again"])
    together = continue_prompts(tiny_lm, [short, long], 8)
    assert together == [continue_prompts(tiny_lm, [short], 8)[0], continue_prompts(tiny_lm, [long], 8)[0]]
    assert next_token_logprobs(tiny_lm, [short, long])[0] == pytest.approx(
        next_token_logprobs(tiny_lm, [short])[0], abs=1e-5
    )


@pytest.mark.parametrize("name", CODERS)
@pytest.mark.parametrize("mode, value", [("ablate", 0.0), ("clamp", 2.5), ("add", -1.5)])
def test_an_edit_changes_the_written_tensor_by_exactly_the_latent_change_times_its_decoder_row(
    tiny_lm, name, mode, value
):
    coder = CODERS[name](tiny_lm)
    ids = tiny_lm.tokenizer(TEXT, return_tensors="pt").input_ids
    x = site_input(tiny_lm, coder.site)
    code = dense_code(coder, x)
    latent = int(code.max(dim=0).values.argmax())  # the most active latent: ablating it matters
    current = code[:, latent : latent + 1]
    assert (current != 0).any()
    new = {"ablate": torch.zeros_like(current), "clamp": torch.full_like(current, value), "add": current + value}[mode]
    expected = (new - current) * coder.decoder_weight()[latent].float()
    change = written(tiny_lm, coder, ids, [Edit(latent, mode, value)]) - written(tiny_lm, coder, ids)
    torch.testing.assert_close(change, expected, atol=1e-5, rtol=1e-4)


def test_clamping_a_topk_latent_outside_the_active_set_adds_the_full_value(tiny_lm):
    coder = CODERS["sae-output-topk"](tiny_lm)
    ids = tiny_lm.tokenizer(TEXT, return_tensors="pt").input_ids
    code = dense_code(coder, site_input(tiny_lm, coder.site))
    latent = int((code == 0).sum(0).argmax())  # inactive on the most tokens
    inactive = code[:, latent] == 0
    assert inactive.sum() > len(code) // 2
    change = written(tiny_lm, coder, ids, [Edit(latent, "clamp", 3.0)]) - written(tiny_lm, coder, ids)
    torch.testing.assert_close(
        change[inactive], 3.0 * coder.decoder_weight()[latent].expand(int(inactive.sum()), -1), atol=1e-5, rtol=1e-4
    )


def test_several_edits_at_once_add_up(tiny_lm):
    coder = CODERS["transcoder"](tiny_lm)
    ids = tiny_lm.tokenizer(TEXT, return_tensors="pt").input_ids
    clean = written(tiny_lm, coder, ids)
    one = written(tiny_lm, coder, ids, [Edit(5, "add", 2.0)]) - clean
    two = written(tiny_lm, coder, ids, [Edit(9, "clamp", 1.0)]) - clean
    both = written(tiny_lm, coder, ids, [Edit(5, "add", 2.0), Edit(9, "clamp", 1.0)]) - clean
    torch.testing.assert_close(both, one + two, atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------- hooks and bad input


def hooks_of(lm, coder) -> int:
    module = lm.model.get_submodule(coder.hookpoint)
    return len(module._forward_hooks) + len(module._forward_pre_hooks)


@pytest.mark.parametrize("name", ["sae-output-topk", "sae-resid-pre-relu"])
def test_hooks_are_removed_after_an_error_in_the_body_or_in_the_forward_pass(tiny_lm, name):
    coder = CODERS[name](tiny_lm)
    ids = encode_prompts(tiny_lm, [TEXT])
    clean = next_token_logprobs(tiny_lm, ids)
    with pytest.raises(KeyError):
        with steer(tiny_lm.model, coder, [Edit(1, "add", 5.0)]):
            assert hooks_of(tiny_lm, coder) == 1
            raise KeyError("the caller's own bug")
    assert hooks_of(tiny_lm, coder) == 0
    with pytest.raises(SteeringError, match="NaN/inf; use a smaller strength"):
        with steer(tiny_lm.model, coder, [Edit(1, "add", 1e39)]):  # overflows float32
            next_token_logprobs(tiny_lm, ids)
    assert hooks_of(tiny_lm, coder) == 0
    assert torch.equal(next_token_logprobs(tiny_lm, ids), clean)


@pytest.mark.parametrize(
    "edits, message",
    [
        (
            [Edit(N_LATENTS, "add", 1.0)],
            "Latent 128 does not exist: the saelens coder at model.layers.1 has 128 latents (0-127)",
        ),
        ([Edit(-1, "add", 1.0)], "Latent -1 does not exist"),
        ([Edit(1, "boost", 1.0)], "Unknown steering mode 'boost': use add, clamp, ablate"),
        ([Edit(1, "add", float("nan"))], "is not a finite number"),
        ([Edit(1, "add", 1.0), Edit(1, "ablate")], "listed more than once"),
        ([], "Nothing to steer"),
    ],
)
def test_bad_edits_are_clear_errors_and_register_no_hook(tiny_lm, edits, message):
    coder = CODERS["sae-output-topk"](tiny_lm)
    with pytest.raises(SteeringError, match=message.replace("(", r"\(").replace(")", r"\)")):
        with steer(tiny_lm.model, coder, edits):
            pass
    assert hooks_of(tiny_lm, coder) == 0


def test_a_prompt_longer_than_the_context_is_refused_before_any_forward_pass(tiny_lm):
    coder = CODERS["neurons"](tiny_lm)
    long = "word " * 300  # the tiny model's context is 256
    with pytest.raises(SteeringError, match=r"exceeds the model's context of 256"):
        generate_side_by_side(tiny_lm, coder, long, 1, strength=1.0)
    with pytest.raises(SteeringError, match=r"with 40 new tokens"):
        encode_prompts(tiny_lm, ["word " * 220], 40)
    assert hooks_of(tiny_lm, coder) == 0


def test_side_by_side_needs_exactly_one_of_strength_and_target_kl_except_for_ablation(tiny_lm):
    coder = CODERS["neurons"](tiny_lm)
    with pytest.raises(SteeringError, match="either a strength or a target KL"):
        generate_side_by_side(tiny_lm, coder, "Hello", 1)
    with pytest.raises(SteeringError, match="either a strength or a target KL"):
        generate_side_by_side(tiny_lm, coder, "Hello", 1, strength=1.0, target_kl=1.0)
    with pytest.raises(SteeringError, match="Ablation has no strength to calibrate"):
        calibrate_strength(tiny_lm, coder, 1, ["Hello"], 1.0, mode="ablate")
    with pytest.raises(SteeringError, match="target KL must be a positive"):
        calibrate_strength(tiny_lm, coder, 1, ["Hello"], 0.0)
    result = generate_side_by_side(tiny_lm, coder, "Hello there", 1, mode="ablate", max_new_tokens=4)
    assert result.strength == 0.0 and result.kl >= 0.0


def test_pick_coder_by_name_hookpoint_or_mlp_module(tiny_lm):
    coders = {
        "model.layers.1": CODERS["sae-output-topk"](tiny_lm),
        "model.layers.1.mlp.topk-neurons": CODERS["topk-neurons"](tiny_lm),
        "model.layers.1.mlp": CODERS["transcoder"](tiny_lm),
    }
    assert pick_coder(coders, "model.layers.1.mlp.topk-neurons", tiny_lm.model)[0] == "model.layers.1.mlp.topk-neurons"
    assert pick_coder(coders, "layers.1", tiny_lm.model)[0] == "model.layers.1"  # sparsify's base-relative names work
    assert pick_coder(coders, "model.layers.1.mlp.down_proj", tiny_lm.model)[0] == "model.layers.1.mlp.topk-neurons"
    with pytest.raises(SteeringError, match="Several coders read at 'model.layers.1.mlp'"):
        pick_coder(
            {k: v for k, v in coders.items() if k != "model.layers.1.mlp"} | {"tc": coders["model.layers.1.mlp"]},
            "model.layers.1.mlp",
            tiny_lm.model,
        )
    with pytest.raises(SteeringError, match="No coder reads at 'model.layers.3'"):
        pick_coder(coders, "model.layers.3", tiny_lm.model)
    with pytest.raises(SteeringError, match="several coders; choose one"):
        pick_coder(coders, None, tiny_lm.model)
    with pytest.raises(UnknownHookpointError):
        pick_coder(coders, "model.layers.9", tiny_lm.model)


def test_steering_prompts_come_from_the_builtin_file_or_a_users_file(tmp_path):
    builtin = load_steer_prompts()
    assert len(builtin) >= 6 and all(p.strip() == p and p for p in builtin)
    assert load_steer_prompts(None, 3) == builtin[:3]
    path = tmp_path / "prompts.txt"
    path.write_text("First prompt\n\n  Second prompt  \n")
    assert load_steer_prompts(str(path)) == ["First prompt", "Second prompt"]
    path.write_text("\n\n")
    with pytest.raises(SteeringError, match="holds no prompts"):
        load_steer_prompts(str(path))
    with pytest.raises(SteeringError, match="Cannot read steering prompts"):
        load_steer_prompts(str(tmp_path / "missing.txt"))


# --------------------------------------------------------------------------- the real model


def kl_by_hand(lm, coder, latent: int, strength: float, prompts: list[str]) -> float:
    """Mean KL(steered || clean) of the next token, one prompt at a time, with torch's own kl_div."""
    values = []
    for prompt in prompts:
        ids = lm.tokenizer(prompt, return_tensors="pt").input_ids
        with torch.inference_mode():
            clean = lm.model(ids).logits[0, -1].log_softmax(-1)
            with steer(lm.model, coder, [Edit(latent, "add", strength)]):
                steered = lm.model(ids).logits[0, -1].log_softmax(-1)
        values.append(float(torch.nn.functional.kl_div(clean, steered, log_target=True, reduction="sum")))
    return sum(values) / len(values)


@pytest.mark.parametrize("target", [0.5, 2.0])
def test_the_kl_search_hits_its_target_on_the_default_model(smollm, target):
    prompts = load_steer_prompts(None, 4)
    neurons = load_neurons(smollm.model, "model.layers.6.mlp", 32)
    for coder, latent in ((neurons, 100), (planted_word_coder(smollm), 0)):
        cal = calibrate_strength(smollm, coder, latent, prompts, target, tolerance=0.1)
        assert cal.reached and cal.strength > 0 and cal.steps <= 12
        assert abs(kl_by_hand(smollm, coder, latent, cal.strength, prompts) - target) <= 0.1 * target


def test_steering_a_planted_cat_latent_makes_smollm_say_cat(smollm):
    coder = planted_word_coder(smollm)
    r = generate_side_by_side(
        smollm, coder, "My favourite thing about the weekend is", 0, target_kl=2.0, max_new_tokens=12
    )
    assert "cat" not in r.clean.lower() and "cat" in r.steered.lower()
    assert r.top_token_changes[0].token == " cat" and r.top_token_changes[0].delta > 0.1
    assert 1.6 <= r.kl <= 2.4  # calibrated on this very prompt
    unchanged = generate_side_by_side(
        smollm, coder, "My favourite thing about the weekend is", 0, strength=0.0, max_new_tokens=12
    )
    assert unchanged.steered == unchanged.clean == r.clean and unchanged.kl == 0.0


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def tiny_model_dir(tiny_lm, tmp_path):
    folder = tmp_path / "tiny"
    tiny_lm.model.save_pretrained(folder)
    tiny_lm.tokenizer.save_pretrained(folder)
    return folder


def test_cli_prints_clean_and_steered_continuations_side_by_side(tiny_model_dir, capsys):
    base = [
        "steer",
        "The quick brown fox",
        "--coders",
        "topk-neurons@model.layers.1.mlp",
        "--model",
        str(tiny_model_dir),
        "--latent",
        "5",
        "--max-new-tokens",
        "6",
        "--quiet",
    ]
    assert main([*base, "--strength", "0"]) == 0
    out = capsys.readouterr().out
    assert "model.layers.1.mlp.topk-neurons latent 5: add 0, next-token KL 0 nats" in out
    assert "prompt: The quick brown fox" in out
    left, right = out.split("-+-", 1)[1].splitlines()[1].split(" | ")
    assert left.strip() == right.strip() != ""  # strength 0: the same continuation on both sides

    # a tiny random Llama's logits are nearly flat: no push moves its next token by more than ~0.01 nats
    assert main([*base, "--mode", "clamp", "--target-kl", "0.005"]) == 0
    out = capsys.readouterr().out
    kl = float(out.split("next-token KL ", 1)[1].split()[0])
    assert 0.0045 <= kl <= 0.0055 and "latent 5: clamp" in out and "more likely next: '" in out


def test_cli_steers_a_run_directorys_coder_and_errors_are_one_line(tiny_model_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = RunConfig(
        model=ModelConfig(model=str(tiny_model_dir)),
        coders=CoderConfig(["neurons@model.layers.2.mlp", "topk-neurons@model.layers.1.mlp"]),
    )
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict()))
    base = ["steer", "Hello world", "--run-dir", str(run_dir), "--max-new-tokens", "4", "--quiet"]
    assert main([*base, "--hookpoint", "model.layers.2.mlp", "--latent", "3", "--mode", "ablate"]) == 0
    assert "model.layers.2.mlp.neurons latent 3: ablate" in capsys.readouterr().out

    for args, message in [
        (["--latent", "3", "--strength", "1"], "error: There are several coders; choose one by name or hookpoint"),
        (
            ["--hookpoint", "model.layers.1.mlp", "--latent", "64", "--strength", "1"],
            "error: Latent 64 does not exist",
        ),
        (
            ["--hookpoint", "model.layers.1.mlp", "--latent", "3", "--strength", "1e39"],
            "error: Steering (add 1e+39 on latent 3) overflows",
        ),
        (["--hookpoint", "model.layers.1.mlp", "--latent", "3"], "error: Give either a strength or a target KL"),
    ]:
        assert main([*base, *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(message) and "\n" not in err
    assert main(["steer", "Hi", "--run-dir", str(tmp_path / "none"), "--latent", "1", "--strength", "1"]) == 2
    assert "is not a run directory" in capsys.readouterr().err
