"""Shared fixtures: a tiny random Llama for speed, the embedded SmolLM2 loaded once per session.

Plain helpers (functions, constants, the fake servers) are in ``tests/helpers/``; the fixtures
here are built from them.
"""

import os
from pathlib import Path

import pytest
import torch
import transformers
from hypothesis import settings
from transformers import AutoTokenizer

from interp.config import ModelConfig
from interp.models import LoadedModel, embedded_model_dir, load_model
from interp.views import HeldOut
from tests.helpers.app import make_workspace
from tests.helpers.models import tiny_llama
from tests.helpers.openai_server import serving
from tests.helpers.scoring import CAT_TEXTS, MONEY_TEXTS, example

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile("ci" if os.environ.get("CI", "").lower() in ("1", "true", "yes") else "dev")
"""CI runs the same property cases every time (derandomized, no example database), so a red run is the code's
doing and replays; a developer's ``make test`` keeps exploring new cases. A case found failing is kept in its
test as an ``@example``."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses the embedded SmolLM2 (the ``smollm`` fixture) is ``slow``, marked or not, so ``make
    test-fast`` leaves out each of them, not only those whose author remembered the mark."""
    for item in items:
        if "smollm" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def smollm_tokenizer():
    """The embedded model's real tokenizer (cheap once the GGUF has been converted)."""
    return AutoTokenizer.from_pretrained(embedded_model_dir())


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


@pytest.fixture
def cat_record(smollm_tokenizer) -> HeldOut:
    """The test split of the latent planted on cats: the cat texts as test examples, the money texts as negatives."""
    test = [example(smollm_tokenizer, t, i) for i, t in enumerate(CAT_TEXTS)]
    assert all(ex.max_act > 0 for ex in test)
    negatives = [example(smollm_tokenizer, t, 100 + i) for i, t in enumerate(MONEY_TEXTS)]
    return HeldOut("sae", 5, "ok", "test", test, [0, 0, 1, 1, 2, 2], negatives)


@pytest.fixture(scope="session")
def workspace(tmp_path_factory, smollm_tokenizer) -> Path:
    """The app tests' shared workspace with the small run at ``tests.helpers.app.RUN``."""
    return make_workspace(tmp_path_factory.getbasetemp() / "app-workspace", smollm_tokenizer)
