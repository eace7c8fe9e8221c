"""An LLM client that runs a Hugging Face model in this process, in padded batches.

Prompts are sorted by length and cut into chunks of ``batch_size`` so each chunk holds prompts
of similar length (little padding); padding goes on the left so every row's last position is
its real last token, which is where generation continues and log-probs are read.
"""

import inspect
import math
from collections.abc import Iterator

import torch

from ..config import ModelConfig
from ..models import LoadedModel, load_model
from .base import Completion, GenerationParams, Prompt
from .errors import LLMError


class TransformersClient:
    """Generation and answer log-probs from a local ``transformers`` model.

    Pass ``lm`` to share a model that is already loaded (the subject model, a test fixture);
    otherwise ``model_cfg`` is loaded with ``interp.models.load_model`` (default: the embedded
    SmolLM2-135M-Instruct).
    """

    def __init__(
        self, model_cfg: ModelConfig | None = None, *, lm: LoadedModel | None = None, batch_size: int = 16
    ):
        if batch_size < 1:
            raise LLMError(f"batch_size must be at least 1, got {batch_size}.")
        self.lm = lm if lm is not None else load_model(model_cfg or ModelConfig())
        self.model = self.lm.name
        self.batch_size = batch_size

    def __repr__(self) -> str:
        return f"TransformersClient(model={self.model!r}, batch_size={self.batch_size})"

    def render(self, prompt: Prompt) -> list[int]:
        """Token ids of ``prompt`` followed by the cue for the assistant's reply.

        Uses the tokenizer's chat template when it has one; otherwise ``role: content`` lines
        ending in ``assistant:``.
        """
        tokenizer = self.lm.tokenizer
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=False)
            return tokenizer(text, add_special_tokens=False)["input_ids"]
        text = "".join(f"{m['role']}: {m['content']}\n" for m in prompt) + "assistant:"
        return tokenizer(text)["input_ids"]

    @torch.inference_mode()
    def generate(self, prompts: list[Prompt], params: GenerationParams) -> list[Completion]:
        """One reply per prompt, in order: greedy when ``temperature`` is 0, else seeded sampling.

        Sampling uses only ``temperature`` and ``top_p`` (the model's default top-k is turned
        off), as an OpenAI-compatible server does. Sampled replies are reproducible for the same
        batch, seed and batch size; batching changes which random numbers each prompt draws.
        """
        ids = [self.render(p) for p in prompts]
        stop = self._eos_ids()
        sampling = (
            {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": 0}
            if params.temperature > 0
            else {"do_sample": False}
        )
        out: list[Completion | None] = [None] * len(prompts)
        for chunk in self._chunks(ids):
            input_ids, mask, _ = self._left_pad([ids[i] for i in chunk])
            with torch.random.fork_rng(devices=self._cuda_devices()):
                torch.manual_seed(params.seed)
                generated = self.lm.model.generate(
                    input_ids=input_ids,
                    attention_mask=mask,
                    max_new_tokens=params.max_tokens,
                    pad_token_id=self._pad_id(),
                    eos_token_id=sorted(stop),
                    **sampling,
                )
            for row, i in enumerate(chunk):
                out[i] = self._completion(generated[row, input_ids.shape[1] :].tolist(), len(ids[i]), stop)
        return out  # type: ignore[return-value]

    @torch.inference_mode()
    def answer_logprobs(self, prompts: list[Prompt], answers: list[str]) -> list[dict[str, float]]:
        """Log-prob of each answer's first token as the first reply token, one forward pass per chunk.

        An answer is tried as written (stripped) and with a leading space, since tokenizers
        spell a word differently at the start of a reply; the larger of the two log-probs is
        kept (the max, not their logsumexp, so the top answer is the one greedy decoding would
        start with). Answers sharing a first token get the same value; empty answers get ``-inf``.
        """
        candidates = {a: self._first_tokens(a) for a in answers}
        ids = [self.render(p) for p in prompts]
        keep_last = (
            {"logits_to_keep": 1}
            if "logits_to_keep" in inspect.signature(self.lm.model.forward).parameters
            else {}
        )
        out: list[dict[str, float] | None] = [None] * len(prompts)
        for chunk in self._chunks(ids):
            input_ids, mask, positions = self._left_pad([ids[i] for i in chunk])
            logits = self.lm.model(
                input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=False, **keep_last
            ).logits[:, -1]
            logprobs = logits.float().log_softmax(-1).cpu()
            for row, i in enumerate(chunk):
                out[i] = {
                    a: max((logprobs[row, t].item() for t in tokens), default=-math.inf)
                    for a, tokens in candidates.items()
                }
        return out  # type: ignore[return-value]

    def _first_tokens(self, answer: str) -> set[int]:
        """First non-blank token of ``answer`` and of `` answer``."""
        stripped = answer.strip()
        firsts: set[int] = set()
        for variant in (stripped, " " + stripped) if stripped else ():
            for token in self.lm.tokenizer.encode(variant, add_special_tokens=False):
                if self.lm.tokenizer.decode([token]).strip():
                    firsts.add(token)
                    break
        return firsts

    def _chunks(self, ids: list[list[int]]) -> Iterator[list[int]]:
        """Indices into ``ids``, longest prompts first, ``batch_size`` at a time."""
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        for start in range(0, len(order), self.batch_size):
            yield order[start : start + self.batch_size]

    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Input ids, attention mask and position ids (0 at each row's first real token)."""
        width = max(len(r) for r in rows)
        input_ids = torch.tensor([[self._pad_id()] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        device = self.lm.device
        return input_ids.to(device), mask.to(device), positions.to(device)

    def _completion(self, new_tokens: list[int], prompt_tokens: int, stop: set[int]) -> Completion:
        """The reply up to its first end-of-sequence token (counted, not shown)."""
        end = next((k for k, t in enumerate(new_tokens) if t in stop), None)
        reply = new_tokens if end is None else new_tokens[:end]
        return Completion(
            text=self.lm.tokenizer.decode(reply, skip_special_tokens=True),
            prompt_tokens=prompt_tokens,
            completion_tokens=len(new_tokens) if end is None else end + 1,
        )

    def _eos_ids(self) -> set[int]:
        configured = getattr(getattr(self.lm.model, "generation_config", None), "eos_token_id", None)
        ids = set(configured if isinstance(configured, list) else [configured])
        ids.add(self.lm.tokenizer.eos_token_id)
        return {i for i in ids if i is not None}

    def _pad_id(self) -> int:
        tokenizer = self.lm.tokenizer
        return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def _cuda_devices(self) -> list[int]:
        return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
