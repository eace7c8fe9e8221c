"""Model loading and hookpoint names."""

import pytest
import torch

from interp.config import ModelConfig
from interp.errors import ModelLoadError, UnknownHookpointError
from interp.hooks import Site, capture_tokens, site_widths
from interp.models import layer_hookpoints, load_model, model_load_kwargs, resolve_hookpoint


def test_hookpoints_accept_full_and_base_relative_names(tiny_lm):
    assert resolve_hookpoint(tiny_lm.model, "model.layers.2") == "model.layers.2"
    assert resolve_hookpoint(tiny_lm.model, "layers.2.mlp") == "model.layers.2.mlp"
    assert layer_hookpoints(tiny_lm.model) == [f"model.layers.{i}" for i in range(4)]


def test_wrong_hookpoint_lists_the_valid_ones(tiny_lm):
    with pytest.raises(UnknownHookpointError) as e:
        resolve_hookpoint(tiny_lm.model, "model.layer.2")
    msg = str(e.value)
    assert "Did you mean model.layers.2" in msg
    assert "model.layers.{0..3}.mlp" in msg and "lm_head" in msg


def test_quantization_builds_bitsandbytes_configs_for_cuda_and_refuses_cpu():
    four = model_load_kwargs(ModelConfig(quantization="4bit"), cuda=True)
    assert four["quantization_config"].load_in_4bit and four["device_map"] == "auto"
    assert four["dtype"] == torch.bfloat16
    assert model_load_kwargs(ModelConfig(quantization="8bit"), cuda=True)["quantization_config"].load_in_8bit
    assert "device_map" not in model_load_kwargs(ModelConfig(), cuda=False)
    with pytest.raises(ModelLoadError, match="needs CUDA"):
        model_load_kwargs(ModelConfig(quantization="4bit"), cuda=False)
    with pytest.raises(ModelLoadError, match="Unknown quantization"):
        model_load_kwargs(ModelConfig(quantization="3bit"), cuda=True)


def test_missing_models_fail_with_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="GGUF file not found"):
        load_model(ModelConfig(model=str(tmp_path / "x.gguf")))
    with pytest.raises(ModelLoadError, match="Model folder not found"):
        load_model(ModelConfig(model="./no/such/folder"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="Cannot load model"):
        load_model(ModelConfig(model=str(tmp_path / "empty")))


@pytest.mark.slow
def test_embedded_model_loads_and_exposes_its_layers(smollm):
    assert smollm.model.config.num_hidden_layers == 30
    ids = smollm.tokenizer("To be, or not to be", return_tensors="pt").input_ids
    widths = site_widths(
        smollm.model, [Site("model.layers.6"), Site("model.layers.6.mlp.down_proj", "input")], smollm.device
    )
    assert widths == {Site("model.layers.6"): 576, Site("model.layers.6.mlp.down_proj", "input"): 1536}
    out = smollm.model(input_ids=ids).logits[0, -1]
    assert torch.isfinite(out).all()
    early = capture_tokens(smollm.model, ids, [Site("model.layers.6")])[Site("model.layers.6")]
    full = smollm.model(input_ids=ids, output_hidden_states=True).hidden_states[7]
    assert torch.equal(early, full)  # stopping early changes nothing before the stop


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_embedded_model_loads_in_4bit_on_cuda():
    lm = load_model(ModelConfig(quantization="4bit"))
    ids = lm.tokenizer("Hello", return_tensors="pt").input_ids.to(lm.device)
    assert torch.isfinite(lm.model(input_ids=ids).logits).all()
