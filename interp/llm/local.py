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
        out: list[dict[str, float] | None] = [None] * len(prompts)
        for chunk in self._chunks(ids):
            input_ids, mask, positions = self._left_pad([ids[i] for i in chunk])
            logprobs = self._logits_at(input_ids, mask, positions, [input_ids.shape[1] - 1])[:, 0].log_softmax(-1)
            for row, i in enumerate(chunk):
                out[i] = {
                    a: max((logprobs[row, t].item() for t in tokens), default=-math.inf)
                    for a, tokens in candidates.items()
                }
        return out  # type: ignore[return-value]

    @torch.inference_mode()
    def reply_logprobs(
        self, prompts: list[Prompt], replies: list[list[str]], answers: list[str]
    ) -> list[list[dict[str, float]]]:
        """Teacher-force each reply (a list of segments) and read the answers' log-probs after every segment.

        For prompt ``i`` the assistant's reply is ``"".join(replies[i])``; entry ``j`` of the
        result is the log-prob of each answer's first token as the token right after segment
        ``j``. One forward pass per chunk reads them all (the simulation scorer's expected
        activations, read "all at once" as in OpenAI's method). Segments are tokenized one by
        one, so a segment boundary is always a token boundary.
        """
        candidates = {a: self._first_tokens(a) for a in answers}
        rows, slots = [], []
        for prompt, segments in zip(prompts, replies):
            ids, ends = self.render(prompt), []
            for segment in segments:
                ids = ids + self.lm.tokenizer.encode(segment, add_special_tokens=False)
                ends.append(len(ids) - 1)
            rows.append(ids)
            slots.append(ends)
        out: list[list[dict[str, float]] | None] = [None] * len(prompts)
        # Logits only at the slots: [rows, slots, vocab] stays small where [rows, tokens, vocab] would not.
        for chunk in self._chunks(rows, max(1, self.batch_size // 4)):
            input_ids, mask, positions = self._left_pad([rows[i] for i in chunk])
            width = input_ids.shape[1]
            keep = sorted({width - len(rows[i]) + e for i in chunk for e in slots[i]})
            column = {p: k for k, p in enumerate(keep)}
            logprobs = self._logits_at(input_ids, mask, positions, keep).log_softmax(-1)
            for row, i in enumerate(chunk):
                shift = width - len(rows[i])
                out[i] = [
                    {
                        a: max((logprobs[row, column[shift + e], t].item() for t in tokens), default=-math.inf)
                        for a, tokens in candidates.items()
                    }
                    for e in slots[i]
                ]
        return out  # type: ignore[return-value]

    def _logits_at(self, input_ids, mask, positions, keep: list[int]) -> torch.Tensor:
        """Float32 logits ``[rows, len(keep), vocab]`` at positions ``keep``, on the CPU.

        Where the model's forward takes ``logits_to_keep``, only those positions go through the
        unembedding.
        """
        forward = self.lm.model.forward
        if "logits_to_keep" in inspect.signature(forward).parameters:
            kept = {"logits_to_keep": torch.tensor(keep, device=input_ids.device)}
            index = slice(None)
        else:
            kept, index = {}, keep
        logits = self.lm.model(
            input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=False, **kept
        ).logits
        return logits[:, index].float().cpu()

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

    def _chunks(self, ids: list[list[int]], size: int | None = None) -> Iterator[list[int]]:
        """Indices into ``ids``, longest prompts first, ``size`` (default ``batch_size``) at a time."""
        size = size or self.batch_size
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        for start in range(0, len(order), size):
            yield order[start : start + size]

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
