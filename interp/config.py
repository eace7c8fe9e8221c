"""Configuration dataclasses, one per stage; ``RunConfig`` holds them all.

Every field has a one-line docstring under it: the CLI builds its flags and help from
these, so a new option is one line in one place.
"""

from dataclasses import asdict, dataclass, field, fields


@dataclass
class ModelConfig:
    """Which subject model to load, and how."""

    model: str = "embedded"
    """Hugging Face id, local folder, a .gguf file, or 'embedded' (SmolLM2-135M-Instruct)."""

    gguf_file: str | None = None
    """GGUF file name inside the model folder or repo, when the model is stored as GGUF."""

    dtype: str = "auto"
    """Weight dtype: auto (float32 on CPU, bfloat16 on CUDA), float32, float16 or bfloat16."""

    quantization: str = "none"
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

    ctx_len: int = 64
    """Tokens per window (the peer uses 256 for real runs)."""

    num_tokens: int = 100_000
    """Tokens to cache in total (rounded down to whole windows)."""

    add_bos: bool = True
    """Start every window with the tokenizer's BOS token."""

    shuffle_seed: int = 0
    """Seed for shuffling documents before they are cut into windows."""


@dataclass
class CoderConfig:
    """Which sparse coders to cache, given as specs ``KIND[:SOURCE][@HOOKPOINT]``."""

    coders: list[str] = field(default_factory=lambda: ["default"])
    """Coder specs, e.g. sparsify:EleutherAI/sae-x@layers.6, saelens:DIR, gemmascope:DIR@model.layers.6, neurons@model.layers.6.mlp, topk-neurons@model.layers.6.mlp, default (train a TopK SAE)."""

    neuron_k: int = 32
    """k for top-k sparsified neurons."""


@dataclass
class TrainConfig:
    """The small TopK SAE that the default run trains with eai-sparsify."""

    train_hookpoint: str = "model.layers.6"
    """Module whose output the default SAE reads."""

    expansion_factor: int = 8
    """Latents per input dimension."""

    k: int = 32
    """Active latents per token."""

    train_tokens: int = 200_000
    """Tokens to train on (the corpus continues past the cached windows)."""

    train_batch_size: int = 16
    """Windows per training step."""

    train_seed: int = 0
    """Seed for the SAE's initialisation."""

    optimizer: str = "signum"
    """sparsify optimizer: signum, adam or muon."""

    lr: float | None = 2e-3
    """Learning rate; None lets sparsify pick (tuned for billion-token runs: FVU 0.25 vs 0.16 here at 200k tokens)."""


@dataclass
class CacheConfig:
    """How the latent cache runs."""

    batch_size: int = 16
    """Windows per forward pass."""

    shard_windows: int = 256
    """Windows per shard file; a multiple of batch_size keeps batches identical on resume."""


@dataclass
class RecordsConfig:
    """How each latent's examples and statistics are drawn from the cache."""

    example_len: int = 32
    """Tokens per example; cache windows are cut into examples of this length (the peer uses 32)."""

    n_train: int = 20
    """Activating examples shown to the explainer."""

    train_sampling: str = "top"
    """top: the highest-activating examples; quantiles: spread evenly over activation quantiles."""

    n_test: int = 20
    """Held-out activating examples for scorers, over activation quantiles, never shown to the explainer."""

    n_quantiles: int = 10
    """Activation quantiles the test (and quantile-sampled train) examples are spread over."""

    n_negatives: int = 10
    """Random examples where the latent does not fire."""

    n_hard_negatives: int = 10
    """Examples that contain the latent's top tokens but where it does not fire."""

    min_examples: int = 10
    """Latents with fewer activating examples are marked rare and not explained (the peer: 200 at 10M tokens)."""

    skip_bos: bool = True
    """Ignore activations on BOS tokens: attention sinks that many latents fire on regardless of text."""

    n_logit_tokens: int = 10
    """Promoted and suppressed tokens listed per latent (decoder direction through the unembedding)."""

    records_seed: int = 0
    """Seed for sampling examples; each latent draws from its own stream."""


@dataclass
class ExplainConfig:
    """Which latents to explain, how, and with which LLM."""

    explainer: str = "default"
    """default, activations, contrastive, logits (LLM explainers) or tokens (no LLM)."""

    llm: str = "local"
    """'local' (the embedded SmolLM2), 'local:<hub id or folder>', or an OpenAI-compatible base URL (http://host:port/v1)."""

    llm_model: str | None = None
    """Model name to request from an OpenAI-compatible server."""

    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the server's API key (never written anywhere)."""

    latents: str = "sample:12"
    """Latents to explain: all, sample:N (random latents that fire), a range 0-99, or a list 1,5,9."""

    explain_batch: int = 8
    """Latents per batched LLM call (local) or in flight together (server)."""

    max_new_tokens: int = 40
    """Most tokens per explanation reply."""

    max_retries: int = 2
    """Extra attempts for replies that cannot be parsed."""

    concurrency: int = 8
    """Requests in flight at once to an OpenAI-compatible server."""


@dataclass
class ScoreConfig:
    """Which scorers judge the explanations, and how."""

    scorers: list[str] = field(default_factory=lambda: ["embedding", "detection"])
    """Scorers to run: embedding, surprisal, detection, fuzzing, intruder, simulation."""

    score_mode: str = "logprob"
    """logprob (one forward pass per text, gives AUROC) or generative (parse a list of 0/1 per prompt)."""

    texts_per_prompt: int = 5
    """Texts per prompt in generative mode (more is cheaper but leaks between texts); the intruder's group size."""

    baseline: bool = True
    """Also score a random explanation (another latent's) on the same examples."""

    embedder: str | None = None
    """Sentence-transformers model for the embedding scorer; None is the embedded all-MiniLM-L6-v2."""


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

    def to_dict(self) -> dict:
        """A JSON-ready dict of every section."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        """Rebuild from ``to_dict`` output; unknown sections or keys are ignored."""
        kwargs = {}
        for f in fields(cls):
            section = f.default_factory()  # type: ignore[misc]
            known = {g.name for g in fields(section)}
            values = {k: v for k, v in data.get(f.name, {}).items() if k in known}
            kwargs[f.name] = type(section)(**values)
        return cls(**kwargs)


CACHE_SECTIONS = ("model", "corpus", "coders", "train", "cache")
"""Sections that decide what is cached; a run directory refuses a change to any of them."""

SECTIONS = {f.name: f.default_factory().__class__ for f in fields(RunConfig)}  # type: ignore[misc]
"""Section name -> config class, in pipeline order."""
