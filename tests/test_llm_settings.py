"""A local explainer/scorer LLM's own load settings (--llm-dtype, --llm-quantization, --llm-device-map): what reaches
``from_pretrained``, what config.json and the explanation lines say, the one-line refusals, and the single load of a
subject model that is its own LLM."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import transformers

from interp.cli import main
from interp.config import ModelConfig
from interp.llm import local
from interp.models import loads_alike
from tests.helpers.models import save_tiny_model
from tests.helpers.results import explanation_lines, score_lines

TINY_RUN = "--num-tokens 1024 --ctx-len 32 --shard-windows 8 --batch-size 8 --quiet".split()
CODER = ["--coders", "topk-neurons@model.layers.1.mlp"]
FEW_EXAMPLES = "--n-train 4 --n-test 4 --n-negatives 2 --n-hard-negatives 2 --min-examples 4".split()


@pytest.fixture
def loaded(monkeypatch) -> list[tuple[str, dict]]:
    """(source, keyword arguments) of every model load, in order."""
    seen: list[tuple[str, dict]] = []
    original = transformers.AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, source, *args, **kwargs):
        seen.append((str(source), kwargs))
        return original(cls, source, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    return seen


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, smollm_tokenizer) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model"), smollm_tokenizer)


@pytest.fixture(scope="module")
def cached_run(tmp_path_factory, tiny_model) -> Path:
    """A cached run of the tiny model, for commands that refuse their LLM."""
    run_dir = tmp_path_factory.mktemp("cached") / "run"
    assert main(["cache", str(run_dir), "--model", str(tiny_model), *TINY_RUN, *CODER]) == 0
    return run_dir


def test_the_llm_settings_reach_from_pretrained_config_json_and_each_explanation(tmp_path, tiny_model, loaded):
    run_dir = tmp_path / "run"
    args = ["run", str(run_dir), "--model", str(tiny_model), *TINY_RUN, *CODER, *FEW_EXAMPLES]
    llm = ["--llm", f"local:{tiny_model}", "--llm-dtype", "bfloat16", "--llm-device-map", "cpu"]
    work = "--latents sample:2 --explain-batch 2 --max-new-tokens 8 --scorers detection".split()
    assert main(args + llm + work) == 0

    assert [source for source, _ in loaded] == [str(tiny_model)] * 2  # the subject's settings are not the LLM's
    subject, explainer = (kwargs for _, kwargs in loaded)
    assert subject["dtype"] == torch.float32 and "device_map" not in subject
    assert explainer["dtype"] == torch.bfloat16 and explainer["device_map"] == "cpu"
    assert explainer["trust_remote_code"] is False and "quantization_config" not in explainer

    saved = json.loads((run_dir / "config.json").read_text())["explain"]
    assert (saved["llm_dtype"], saved["llm_quantization"], saved["llm_device_map"]) == ("bfloat16", "none", "cpu")
    asked = [e for e in explanation_lines(run_dir) if e["status"] not in ("dead", "rare")]
    assert len(asked) == 2 and {e["model"] for e in asked} == {f"{tiny_model} (bfloat16, device_map=cpu)"}
    scores = score_lines(run_dir)
    assert scores and {s["scorer"] for s in scores} == {"detection-logprob"}  # log-prob scoring on the bfloat16 LLM


def test_a_subject_model_that_is_its_own_llm_with_the_same_settings_loads_once(tmp_path, tiny_model, loaded):
    run_dir = tmp_path / "run"
    args = ["run", str(run_dir), "--model", str(tiny_model), *TINY_RUN, *CODER, *FEW_EXAMPLES]
    work = ["--llm", f"local:{tiny_model}", *"--explainer tokens --latents sample:2 --scorers detection".split()]
    assert main(args + work) == 0
    assert [source for source, _ in loaded] == [str(tiny_model)]  # the subject, the detection scorer's LLM too
    assert score_lines(run_dir)


def test_auto_settings_are_resolved_before_two_loads_are_compared(monkeypatch):
    name = "some/model"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert loads_alike(ModelConfig(name), ModelConfig(name, dtype="float32"))  # auto: float32 on the CPU
    assert not loads_alike(ModelConfig(name), ModelConfig(name, device_map="auto"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert not loads_alike(ModelConfig(name), ModelConfig(name, dtype="float32"))  # auto: bfloat16 on CUDA
    assert loads_alike(ModelConfig(name), ModelConfig(name, device_map="auto"))
    assert not loads_alike(ModelConfig(name), ModelConfig(name, quantization="4bit"))
    assert not loads_alike(ModelConfig(name), ModelConfig("other/model"))


def test_a_quantized_llm_without_cuda_is_refused_in_one_line(cached_run, tiny_model, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = ["explain", str(cached_run), "--quiet", "--llm", f"local:{tiny_model}", "--llm-quantization", "4bit"]
    assert main(args) == 2
    assert capsys.readouterr().err == (
        "error: 4bit quantization needs CUDA (bitsandbytes); this machine has none. Use --llm-quantization none.\n"
    )
    assert explanation_lines(cached_run) == []  # refused before anything was explained


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is not None, reason="bitsandbytes is installed")
def test_a_quantized_llm_without_bitsandbytes_is_refused_in_one_line(cached_run, tiny_model, monkeypatch, capsys):
    real = local.load_model

    def on_cuda(cfg, **kwargs):  # CUDA for the LLM's load alone: the subject model loads on this CPU first
        with monkeypatch.context() as m:
            m.setattr(torch.cuda, "is_available", lambda: True)
            return real(cfg, **kwargs)

    monkeypatch.setattr(local, "load_model", on_cuda)
    args = ["explain", str(cached_run), "--quiet", "--llm", f"local:{tiny_model}", "--llm-quantization", "8bit"]
    assert main(args) == 2
    assert capsys.readouterr().err == (
        "error: 8bit quantization needs the bitsandbytes package (the gpu extra): pip install bitsandbytes, or use "
        "--llm-quantization none.\n"
    )
