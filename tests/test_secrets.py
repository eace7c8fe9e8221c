"""Secrets and weights: tokens never leave the Authorization header, weights never go through pickle,
and remote code runs only when asked for.

The token test runs the real CLI in subprocesses with fake, recognisable keys in the environment,
against the local OpenAI-compatible server (which echoes the Authorization header back in its
400 errors, as careless servers do), then greps everything they produced: every file of the run
directory (publish folder and Neuronpedia batches, pushed to the local Neuronpedia service, included), stdout and
stderr (where the logs go).
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from interp.cli import build_parser
from interp.cli_args import with_args
from interp.config import ModelConfig, RunConfig
from interp.errors import ModelLoadError
from interp.models import load_model, model_load_kwargs
from tests.helpers.models import save_tiny_model
from tests.helpers.neuronpedia_server import FakeNeuronpedia, serving
from tests.helpers.pipeline import scripted_reply, tiny_run_args
from tests.helpers.results import explanation_lines, score_lines

ROOT = Path(__file__).resolve().parents[1]
OPENAI_KEY = "sk-INTERPFAKE-" + "0123456789abcdef" * 16  # long: a server message cut at 200 characters cuts through it
HF_KEY = "hf_INTERPFAKEhubtoken" + "9f3a7c" * 6
NP_KEY = "np-INTERPFAKE-" + "5e1d2c" * 8


def fragments(secret: str, size: int = 12) -> set[str]:
    """Every ``size``-character piece of ``secret``: a leak of part of a key counts as a leak."""
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


def leaks(text: str) -> list[str]:
    marks = (
        fragments(OPENAI_KEY.removeprefix("sk-INTERPFAKE-"))
        | fragments(HF_KEY.removeprefix("hf_INTERPFAKE"))
        | fragments(NP_KEY.removeprefix("np-INTERPFAKE-"))
        | {"INTERPFAKE"}
    )
    return sorted(m for m in marks if m in text)[:3]


@pytest.mark.slow
def test_api_keys_and_hub_tokens_appear_in_no_output(tmp_path, server, smollm_tokenizer):
    model_dir = save_tiny_model(tmp_path / "model", smollm_tokenizer)
    server.reply = scripted_reply
    server.script = ["ok", "400", "ok", "400", "400", "400"] * 3  # some explanations fail with the key echoed back
    env = {
        **os.environ,
        "OPENAI_API_KEY": OPENAI_KEY,
        "HF_TOKEN": HF_KEY,
        "NEURONPEDIA_API_KEY": NP_KEY,
        "HF_HUB_OFFLINE": "1",
    }
    run_dir = tmp_path / "run"
    neuronpedia = FakeNeuronpedia(NP_KEY, owned={("tiny", "1-neurons")}, methods={"short"}, models={"scripted"})
    np_server = serving(neuronpedia)
    to_neuronpedia = ["publish", str(run_dir), "--neuronpedia", str(run_dir / "np"), "--np-model", "tiny"]
    to_neuronpedia += ["--np-source", "1-neurons", "--push", "--np-url", neuronpedia.url]
    outputs = []
    for argv in (
        tiny_run_args(run_dir, model_dir, server.base_url) + ["--neuron-k", "4", "--max-retries", "0"],
        ["publish", str(run_dir), "someone/interp-test", "--dry-run", "--quiet"],
        to_neuronpedia,
    ):
        done = subprocess.run(
            [sys.executable, "-m", "interp", *argv], env=env, capture_output=True, text=True, cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr[-2000:]
        outputs += [done.stdout, done.stderr]

    notes = [r["note"] for r in explanation_lines(run_dir) if r["note"]]
    assert any('HTTP 400: {"error": "bad key Bearer ***' in n for n in notes)  # the echo happened, and was redacted
    assert (run_dir / "publish" / "README.md").is_file()
    np_server.shutdown()
    assert neuronpedia.features and all(r.headers["x-api-key"] == NP_KEY for r in neuronpedia.requests)
    headers = [{k.lower(): v for k, v in r["headers"].items()} for r in server.requests]
    assert all(h["authorization"] == f"Bearer {OPENAI_KEY}" for h in headers)  # the key was sent, where it belongs
    files = sorted(p for p in run_dir.rglob("*") if p.is_file())
    assert len(files) > 15
    for p in files:
        assert not leaks(p.read_bytes().decode("latin-1")), p
    for line in explanation_lines(run_dir) + score_lines(run_dir):  # score examples are stored compressed: read them
        assert not leaks(json.dumps(line, ensure_ascii=False)), line
    for text in outputs:
        assert not leaks(text)


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            owner = getattr(func.value, "id", None) if isinstance(func, ast.Attribute) else None
            yield node, owner, name, {k.arg: k.value for k in node.keywords}


def library_sources() -> list[Path]:
    return sorted([*(ROOT / "interp").rglob("*.py"), *(ROOT / "publish").rglob("*.py"), ROOT / "app.py"])


def test_weights_are_never_unpickled():
    """No torch.load without weights_only=True, no np.load with allow_pickle=True, no pickle at all."""
    found = []
    for path in library_sources():
        tree = ast.parse(path.read_text())
        rel = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + (
                    [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
                )
                found += [
                    f"{rel}:{node.lineno}: imports {n}"
                    for n in names
                    if n.split(".")[0] in ("pickle", "cPickle", "dill", "joblib", "cloudpickle")
                ]
        for node, owner, name, kw in _calls(tree):
            if name == "load" and owner == "torch":
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                found += [] if ok else [f"{rel}:{node.lineno}: torch.load without weights_only=True"]
            if name == "load" and owner in ("np", "numpy"):
                bad = not (
                    isinstance(kw.get("allow_pickle", ast.Constant(False)), ast.Constant)
                    and kw.get("allow_pickle", ast.Constant(False)).value is False
                )
                found += [f"{rel}:{node.lineno}: np.load that may allow pickle"] if bad else []
            if (
                name == "from_pretrained"
                and isinstance(kw.get("use_safetensors"), ast.Constant)
                and kw["use_safetensors"].value is False
            ):
                found.append(f"{rel}:{node.lineno}: from_pretrained(use_safetensors=False)")
    assert not found, found


def test_remote_code_is_never_trusted_by_a_literal():
    """trust_remote_code is only ever passed on from the user's setting, never written as True."""
    found = []
    for path in library_sources():
        for node, _, name, kw in _calls(ast.parse(path.read_text())):
            value = kw.get("trust_remote_code")
            if isinstance(value, ast.Constant) and value.value is True:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}(trust_remote_code=True)")
    assert not found, found


def test_trust_remote_code_is_off_by_default_everywhere():
    assert ModelConfig().trust_remote_code is False and RunConfig().model.trust_remote_code is False
    for command in ("run", "cache", "explain", "score", "steer"):
        argv = [command] + (["a prompt", "--latent", "0"] if command == "steer" else [])
        assert with_args(RunConfig(), build_parser().parse_args(argv)).model.trust_remote_code is False
        assert (
            with_args(RunConfig(), build_parser().parse_args(argv + ["--trust-remote-code"])).model.trust_remote_code
            is True
        )
    assert model_load_kwargs(ModelConfig(), cuda=False)["trust_remote_code"] is False
    assert model_load_kwargs(ModelConfig(trust_remote_code=True), cuda=False)["trust_remote_code"] is True


CUSTOM_CODE = '''
from transformers import LlamaConfig, LlamaForCausalLM


class MarkedConfig(LlamaConfig):
    model_type = "marked-llama"


class MarkedLlama(LlamaForCausalLM):
    """Remote code that leaves a mark: proof that it ran."""

    config_class = MarkedConfig
    ran_remote_code = True
'''


@pytest.fixture
def remote_code_model(tmp_path, smollm_tokenizer) -> Path:
    """A model folder whose config names custom code (``auto_map``), as a Hub repo with remote code does."""
    folder = save_tiny_model(tmp_path / "custom", smollm_tokenizer)
    (folder / "modeling_marked.py").write_text(CUSTOM_CODE)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "marked-llama"
    config["auto_map"] = {
        "AutoConfig": "modeling_marked.MarkedConfig",
        "AutoModelForCausalLM": "modeling_marked.MarkedLlama",
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_remote_code_runs_only_when_trust_remote_code_is_set(remote_code_model):
    with pytest.raises(
        ModelLoadError, match="contains custom code, which must run to load it and runs only with --trust-remote-code"
    ):
        load_model(ModelConfig(model=str(remote_code_model)))
    lm = load_model(ModelConfig(model=str(remote_code_model), trust_remote_code=True))
    assert type(lm.model).__name__ == "MarkedLlama" and lm.model.ran_remote_code
