"""What more than one test module needs, as plain code: import it, ``from tests.helpers.models import tiny_llama``.

Fixtures are not here but in ``tests/conftest.py``, which builds them from these helpers.

- ``models``: tiny random Llama and Gemma 2 models on the embedded tokenizer, in memory or saved as a model folder.
- ``coders``: random coder weights written in SAELens' and Gemma Scope's layouts, a random sparsify SAE,
  a coder planted on one word.
- ``scoring``: a latent planted on cats (its texts and examples) and what a scripted judge needs.
- ``pipeline``: a whole ``interp run`` in seconds: a deterministic LLM's replies and the run's arguments.
- ``openai_server``: a real OpenAI-compatible HTTP server on 127.0.0.1, scriptable to misbehave.
- ``hub_server``: a small Hugging Face Hub on 127.0.0.1 that the real ``huggingface_hub`` client talks to.
- ``text``: what an explanation read from an LLM's reply must be (one plain line).
- ``app``: the app's test workspace (a small real run) and the app served from it.
"""
