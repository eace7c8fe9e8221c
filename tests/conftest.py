"""Shared fixtures: a tiny random Llama for speed, the embedded SmolLM2 loaded once per session."""

import pytest
import torch
import transformers
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from openai_server import serving

from interp.config import ModelConfig
from interp.models import LoadedModel, embedded_model_dir, load_model


@pytest.fixture(scope="session")
def smollm_tokenizer():
    """The embedded model's real tokenizer (cheap once the GGUF has been converted)."""
    return AutoTokenizer.from_pretrained(embedded_model_dir())


def tiny_llama(tokenizer, seed: int = 0, layers: int = 4, hidden: int = 32) -> LoadedModel:
    """A randomly initialised 4-layer Llama sharing the embedded model's tokenizer."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
    )
    model = LlamaForCausalLM(cfg).eval().requires_grad_(False)
    return LoadedModel(model=model, tokenizer=tokenizer, name="tiny-llama")


@pytest.fixture
def tiny_lm(smollm_tokenizer) -> LoadedModel:
    return tiny_llama(smollm_tokenizer)


@pytest.fixture(scope="session")
def smollm() -> LoadedModel:
    """The embedded SmolLM2-135M-Instruct; converted from GGUF on first use, then cached."""
    return load_model(ModelConfig())


@pytest.fixture
def loads(monkeypatch) -> list[str]:
    """What every model load of a test's commands loaded (subject model or LLM), in order."""
    seen: list[str] = []
    original = transformers.AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, source, *args, **kwargs):
        seen.append(str(source))
        return original(cls, source, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    return seen


@pytest.fixture
def server():
    """A real OpenAI-compatible server on 127.0.0.1 for the duration of one test."""
    srv = serving()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def one_cpu_thread():
    """Tiny tensors on a busy 2-core CPU: thread hand-offs would cost more than the maths."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
