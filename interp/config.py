"""Configuration dataclasses, one per stage; ``RunConfig`` holds them all.

Every field has a one-line docstring under it: the CLI builds its flags and help from
these, so a new option is one line in one place.
"""

import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

from .errors import ConfigError
from .jsonl import read_json

Dtype = Literal["auto", "float32", "float16", "bfloat16"]
Quantization = Literal["none", "8bit", "4bit"]
Optimizer = Literal["signum", "adam", "muon"]
TrainSampling = Literal["top", "quantiles"]
Explainer = Literal["short", "default", "activations", "contrastive", "logits", "intervention", "tokens"]
ScorerName = Literal["embedding", "surprisal", "detection", "fuzzing", "intruder", "simulation", "intervention"]
ScoreMode = Literal["logprob", "generative"]
Search = Literal["none", "best-of-k", "refine"]


def at_least(low: int, default):
    """A numeric field whose value must be at least ``low`` (``check_config`` says so otherwise)."""
    return field(default=default, metadata={"min": low})


def positive(default):
    """A numeric field that must be greater than zero when given."""
    return field(default=default, metadata={"positive": True})


@dataclass
class ModelConfig:
    """Which subject model to load, and how."""

    model: str = "embedded"
    """Hugging Face id, local folder, a .gguf file, or 'embedded' (SmolLM2-135M-Instruct)."""

    gguf_file: str | None = None
    """GGUF file name inside the model folder or repo, when the model is stored as GGUF."""

    dtype: Dtype = "auto"
    """Weight dtype: auto (float32 on CPU, bfloat16 on CUDA), float32, float16 or bfloat16."""

    quantization: Quantization = "none"
    """Quantize the subject model with bitsandbytes on CUDA: none, 8bit or 4bit."""

    device_map: str | None = None
    """accelerate device map; None means 'auto' on CUDA and the CPU otherwise."""

    trust_remote_code: bool = False
    """Run model code from the Hub. Off by default: only enable for repositories you trust."""


@dataclass
class CorpusConfig:
    """The text the latents are cached over."""

    corpus: str = "builtin"
    """'builtin' (Shakespeare + Python docs, offline), a Hub dataset id, or a local folder/file."""

    corpus_config: str | None = None
    """Dataset configuration name for Hub datasets that have several."""

    corpus_split: str = "train"
    """Dataset split to read."""

    text_column: str = "text"
    """Column holding the text."""

    streaming: bool = False
    """Stream a Hub dataset instead of downloading it whole."""

    ctx_len: int = at_least(1, 64)
    """Tokens per window (EleutherAI delphi uses 256 for real runs)."""

    num_tokens: int = at_least(1, 100_000)
    """Tokens to cache in total (rounded down to whole windows)."""

    add_bos: bool = True
    """Start every window with the tokenizer's BOS token."""

    shuffle_seed: int = 0
    """Seed for shuffling documents before they are cut into windows."""


@dataclass
class CoderConfig:
    """Which sparse coders to cache, given as specs ``KIND[:SOURCE][@HOOKPOINT]``."""

    coders: list[str] = field(default_factory=lambda: ["default"])
    """Coder specs, e.g. sparsify:EleutherAI/sae-x@layers.6, saelens:DIR, saelens:RELEASE/SAE_ID,
    saelens:DIR@model.layers.2.self_attn.o_proj:input, gemmascope:DIR@model.layers.6, neurons@model.layers.6.mlp,
    topk-neurons@model.layers.6.mlp, default (train a TopK SAE)."""

    neuron_k: int = at_least(1, 32)
    """k for top-k sparsified neurons."""

    saelens_registry: str | None = None
    """A SAELens registry file (pretrained_saes.yaml's schema) for saelens:RELEASE/SAE_ID specs; by default the
    installed sae-lens package's own."""


@dataclass
class TrainConfig:
    """The small TopK SAE that the default run trains with eai-sparsify."""

    train_hookpoint: str = "model.layers.6"
    """Module whose output the default SAE reads."""

    expansion_factor: int = at_least(1, 8)
    """Latents per input dimension."""

    k: int = at_least(1, 32)
    """Active latents per token."""

    train_tokens: int = at_least(0, 200_000)
    """Tokens to train on (the corpus continues past the cached windows)."""

    train_batch_size: int = at_least(1, 16)
    """Windows per training step."""

    train_seed: int = 0
    """Seed for the SAE's initialisation."""

    optimizer: Optimizer = "signum"
    """sparsify optimizer: signum, adam or muon."""

    lr: float | None = positive(2e-3)
    """Learning rate; None lets sparsify pick (tuned for billion-token runs: FVU 0.25 vs 0.16 here at 200k tokens)."""


@dataclass
class CacheConfig:
    """How the latent cache runs."""

    batch_size: int = at_least(1, 16)
    """Windows per forward pass."""

    shard_windows: int = at_least(1, 256)
    """Windows per shard file; a multiple of batch_size keeps batches identical on resume."""


@dataclass
class RecordsConfig:
    """How each latent's examples and statistics are drawn from the cache."""

    example_len: int = at_least(1, 32)
    """Tokens per example; cache windows are cut into examples of this length (EleutherAI delphi uses 32)."""

    n_train: int = at_least(1, 20)
    """Activating examples shown to the explainer."""

    train_sampling: TrainSampling = "top"
    """top: the highest-activating examples; quantiles: spread evenly over activation quantiles."""

    n_test: int = at_least(0, 20)
    """Held-out activating examples for scorers, over activation quantiles, never shown to the explainer."""

    n_quantiles: int = at_least(1, 10)
    """Activation quantiles the test (and quantile-sampled train) examples are spread over."""

    n_negatives: int = at_least(0, 10)
    """Random examples where the latent does not fire."""

    n_hard_negatives: int = at_least(0, 10)
    """Examples that contain the latent's top tokens but where it does not fire."""

    n_valid: int = at_least(0, 20)
    """Activating examples of the validation split, over activation quantiles: what an explanation search chooses on
    (never reported). Drawn after every other split, from what they leave, with a random stream of its own."""

    n_valid_negatives: int = at_least(0, 10)
    """Random non-activating examples of the validation split, none of them a test negative."""

    n_valid_hard_negatives: int = at_least(0, 10)
    """Hard negatives of the validation split (the latent's top tokens, no firing), none of them a test one."""

    n_contrast_negatives: int = at_least(0, 10)
    """Non-activating examples shown to the contrastive explainer (hard ones first): drawn for it alone, none of them
    a scored or a validation example."""

    min_examples: int = at_least(0, 10)
    """Latents with fewer activating examples are marked rare and not explained (EleutherAI delphi: 200 at 10M
    tokens)."""

    skip_bos: bool = True
    """Ignore activations on BOS tokens: attention sinks that many latents fire on regardless of text."""

    n_logit_tokens: int = at_least(0, 10)
    """Promoted and suppressed tokens listed per latent (decoder direction through the unembedding)."""

    records_seed: int = 0
    """Seed for sampling examples; each latent draws from its own stream."""


@dataclass
class ExplainConfig:
    """Which latents to explain, how, and with which LLM."""

    explainer: Explainer = "short"
    """short (made for small models such as the embedded one; served models answer it too), default, activations,
    contrastive, logits, intervention (LLM explainers) or tokens (no LLM). README: Explanation quality."""

    llm: str = "local"
    """'local' (the embedded SmolLM2), 'local:<hub id or folder>', or an OpenAI-compatible base URL (http://host:port/v1)."""

    llm_model: str | None = None
    """Model name to request from an OpenAI-compatible server."""

    llm_dtype: Dtype = "auto"
    """Weight dtype of a local LLM (local, local:...): auto (float32 on CPU, bfloat16 on CUDA), float32, float16 or
    bfloat16."""

    llm_quantization: Quantization = "none"
    """Quantize a local LLM with bitsandbytes on CUDA: none, 8bit or 4bit (a 4-bit 8B model's weights take about 6
    GB)."""

    llm_device_map: str | None = None
    """accelerate device map of a local LLM (auto, cuda:1, ...); None means 'auto' on CUDA and the CPU otherwise."""

    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the server's API key (never written anywhere); empty: send no key."""

    latents: str = "sample:12"
    """Latents to explain: all, sample:N (random latents that fire), a range 0-99, or a list 1,5,9."""

    explain_batch: int = at_least(1, 8)
    """Latents per batched LLM call (local) or in flight together (server: at least --concurrency)."""

    max_new_tokens: int = at_least(1, 40)
    """Most tokens per explanation reply."""

    max_retries: int = at_least(0, 2)
    """Extra attempts for replies that cannot be parsed."""

    concurrency: int = at_least(1, 8)
    """Requests in flight at once to an OpenAI-compatible server."""

    redo: bool = False
    """Explain the chosen latents again where this explainer has already explained them (e.g. with another LLM); the
    new line replaces the old, and its scores are redone."""

    search: Search = "none"
    """none (one explanation per latent), best-of-k (--candidates explanations, the best on the validation split kept)
    or refine (best-of-k, then --rounds rounds that show the explainer what the judge got wrong on validation). The
    test split is never shown nor used to choose. README: Explanation search."""

    candidates: int = at_least(1, 4)
    """Explanations asked per latent and round in a search: the first greedy, the others sampled."""

    temperature: float = at_least(0, 0.7)
    """Sampling temperature of a search's candidates after the first."""

    tokens_candidate: bool = False
    """Add the tokens explainer's explanation (the firing-token list) to a search's first round as a candidate."""

    judge: ScorerName = "embedding"
    """The scorer that chooses among a search's candidates, on the validation split only (detection in logprob mode
    suits a served LLM). Not intervention: it reads no examples, only the steering prompts it scores on."""

    rounds: int = at_least(0, 1)
    """Refinement rounds of --search refine."""


@dataclass
class ScoreConfig:
    """Which scorers judge the explanations, and how."""

    scorers: list[ScorerName] = field(default_factory=lambda: ["embedding", "surprisal"])
    """Scorers to run. The default two need no LLM judge and pass ``interp validate`` with the embedded models; the
    LLM judges (detection, fuzzing, simulation, intruder) want a served model."""

    score_mode: ScoreMode = "logprob"
    """logprob (one forward pass per text, gives AUROC) or generative (parse a list of 0/1 per prompt)."""

    texts_per_prompt: int = at_least(1, 5)
    """Texts per prompt in generative mode (more is cheaper but leaks between texts); the intruder's group size."""

    baseline: bool = True
    """Also score a random explanation (another latent's) on the same examples."""

    embedder: str | None = None
    """Sentence-transformers model for the embedding scorer; None is the embedded all-MiniLM-L6-v2."""


@dataclass
class InterveneConfig:
    """How latents are steered for the intervention explainer and scorer."""

    target_kl: float = positive(1.0)
    """KL divergence (nats) of the next-token distribution that each latent's steering strength is calibrated to."""

    steer_prompts: str | None = None
    """Text file of prompts to steer from, one per line; None uses the builtin neutral prompts."""

    num_steer_prompts: int = at_least(1, 8)
    """Prompts used: the intervention scorer's are the first N, the intervention explainer's the next N (never the
    scorer's); the builtin file holds 16."""

    steer_new_tokens: int = at_least(1, 16)
    """Tokens the intervention scorer generates after each prompt, with and without steering."""

    steer_top_tokens: int = at_least(1, 5)
    """Most-promoted next tokens per prompt shown to the intervention explainer."""


@dataclass
class RunConfig:
    """Everything that produced a run directory; saved as its config.json."""

    model: ModelConfig = field(default_factory=ModelConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    coders: CoderConfig = field(default_factory=CoderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    records: RecordsConfig = field(default_factory=RecordsConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    intervene: InterveneConfig = field(default_factory=InterveneConfig)

    def to_dict(self) -> dict:
        """A JSON-ready dict of every section."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "RunConfig":
        """Rebuild from ``to_dict`` output; unknown sections or keys are ignored.

        A value of the wrong type (a config.json edited by hand) raises ``ConfigError`` naming
        ``source`` and the field, rather than failing later, far from the cause.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"{source} must hold a JSON object of sections, not {type(data).__name__}.")
        kwargs = {}
        for f in fields(cls):
            section_cls = type(f.default_factory())  # type: ignore[misc]
            given = data.get(f.name, {})
            if not isinstance(given, dict):
                raise ConfigError(f"{source}: section {f.name!r} must be a JSON object, not {type(given).__name__}.")
            hints = typing.get_type_hints(section_cls)
            values = {}
            for g in fields(section_cls):
                if g.name in given:
                    if not _fits(given[g.name], hints[g.name]):
                        raise ConfigError(
                            f"{source}: {f.name}.{g.name} must be {_describe(hints[g.name])}, not {given[g.name]!r}."
                        )
                    values[g.name] = given[g.name]
            kwargs[f.name] = section_cls(**values)
        return cls(**kwargs)


def _fits(value, hint) -> bool:
    """Whether a JSON value fits a config field's type (an int is a float; a bool is not a number)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return isinstance(value, list) and all(_fits(v, typing.get_args(hint)[0]) for v in value)
    if typing.get_origin(hint) is Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _describe(hint) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        inner = typing.get_args(hint)[0]
        if typing.get_origin(inner) is Literal:
            return f"a list of {', '.join(map(str, typing.get_args(inner)))}"
        return f"a list of {_describe(inner).removeprefix('a ')}s"
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(hint)))
    return {type(None): "null", bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, hint.__name__
    )


def check_config(cfg: RunConfig) -> None:
    """Raise ``ConfigError`` listing every setting out of range or not among its choices, before any work starts."""
    problems = []
    for section in fields(cfg):
        values = getattr(cfg, section.name)
        hints = typing.get_type_hints(type(values))
        for f in fields(values):
            name, value, hint = f"{section.name}.{f.name}", getattr(values, f.name), hints[f.name]
            low = f.metadata.get("min")
            if low is not None and value < low:
                problems.append(f"{_label(name)} must be at least {low}, not {value}")
            if f.metadata.get("positive") and value is not None and value <= 0:
                problems.append(f"{_label(name)} must be greater than 0, not {value}")
            if _has_choices(hint) and not _fits(value, hint):
                problems.append(f"{_label(name)} must be {_describe(hint)}, not {value!r}")
    if cfg.records.example_len > cfg.corpus.ctx_len:
        problems.append(
            f"{_label('records.example_len')} must not exceed {_label('corpus.ctx_len')} "
            f"({cfg.records.example_len} > {cfg.corpus.ctx_len})"
        )
    if cfg.explain.search != "none" and cfg.explain.judge == "intervention":
        problems.append(
            f"{_label('explain.judge')} cannot be intervention: that scorer reads no examples, only the steering "
            "prompts it reports scores on, so a search judged by it would choose on what `interp score` reports"
        )
    if problems:
        raise ConfigError("Settings out of range: " + "; ".join(problems) + ".")


def _has_choices(hint) -> bool:
    """Whether a field's type is a fixed set of values (a ``Literal``, or a list of one)."""
    return typing.get_origin(hint) is Literal or (
        typing.get_origin(hint) is list and _has_choices(typing.get_args(hint)[0])
    )


def choices(hint) -> tuple | None:
    """The values a ``Literal`` field (or a list of one) may take; None for a free field."""
    if typing.get_origin(hint) is list:
        return choices(typing.get_args(hint)[0])
    return typing.get_args(hint) if typing.get_origin(hint) is Literal else None


def _label(name: str) -> str:
    """A setting as config.json and the command line name it: ``corpus.ctx_len (--ctx-len)``."""
    return f"{name} (--{name.split('.')[1].replace('_', '-')})"


def read_config_file(path: str | Path) -> RunConfig:
    """The RunConfig saved at ``path`` (a run directory's config.json), checked field by field."""
    data = read_json(path, hint="fix it, or start the run again with --overwrite")
    return RunConfig.from_dict(data, source=str(path))


FIXED_SECTIONS = ("model", "corpus", "coders", "train", "cache", "records")
"""Sections that make a run what it is (what is cached, and how its records are drawn): a run refuses a change to
any."""

SECTIONS = {f.name: f.default_factory().__class__ for f in fields(RunConfig)}  # type: ignore[misc]
"""Section name -> config class, in pipeline order."""
