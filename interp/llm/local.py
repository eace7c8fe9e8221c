"""An LLM client that runs a Hugging Face model in this process, in padded batches.

For generation, prompts are sorted by length and cut into chunks of ``batch_size`` so each
chunk holds prompts of similar length (little padding); padding goes on the left so every row's
last position is its real last token, where generation continues. For log-prob reads, prompts
are grouped by a shared prefix instead, which runs once; their own tokens are padded on the right.
"""

import copy
import functools
import inspect
import math
from collections.abc import Iterator

import torch

from ..config import ModelConfig
from ..models import LoadedModel, load_model, model_description
from .base import AnswerLogprobs, Completion, GenerationParams, Prompt
from .errors import LLMError

MIN_SHARED_PREFIX = 16
"""Fewest common prefix tokens worth a shared key/value cache (below it a chunk runs whole)."""


def _common(a: list[int], b: list[int], limit: int) -> int:
    """Length of the common prefix of ``a`` and ``b``, at most ``limit``."""
    n = 0
    while n < min(len(a), len(b), limit) and a[n] == b[n]:
        n += 1
    return n


def prefix_chunks(rows: list[list[int]], size: int) -> list[tuple[list[int], int]]:
    """Indices into ``rows`` in chunks of at most ``size``, each with the prefix length its rows share.

    Rows are sorted, so rows with a common prefix are adjacent; a chunk ends where the next row
    would cut its shared prefix below ``MIN_SHARED_PREFIX`` or to less than half (a new
    explanation, say), so one chunk does not mix prompts that share little.
    """
    chunks: list[tuple[list[int], int]] = []
    for i in sorted(range(len(rows)), key=lambda i: rows[i]):
        if chunks and len(chunks[-1][0]) < size:
            members, shared = chunks[-1]
            common = _common(rows[members[0]], rows[i], shared)
            floor = MIN_SHARED_PREFIX if len(members) == 1 else max(MIN_SHARED_PREFIX, shared // 2)
            if common >= floor:
                chunks[-1] = (members + [i], common)
                continue
        chunks.append(([i], len(rows[i])))
    return chunks


class TransformersClient:
    """Generation and answer log-probs from a local ``transformers`` model, on whatever device it was placed.

    Pass ``lm`` to share a model that is already loaded (the subject model, a test fixture);
    otherwise ``model_cfg`` is loaded with ``interp.models.load_model`` (default: the embedded
    SmolLM2-135M-Instruct), its dtype, quantization and device map set by the ``--llm-*`` options.
    ``model`` names it by ``model_cfg`` when given (its settings shown: a 4-bit model's replies
    are not the full-precision one's), else by ``lm``'s name.
    """

    def __init__(self, model_cfg: ModelConfig | None = None, *, lm: LoadedModel | None = None, batch_size: int = 16):
        if batch_size < 1:
            raise LLMError(f"batch_size must be at least 1, got {batch_size}.")
        self.lm = lm if lm is not None else load_model(model_cfg or ModelConfig(), option_prefix="llm-")
        self.model = model_description(model_cfg) if model_cfg is not None else self.lm.name
        self.batch_size = batch_size
        self.forward_tokens = 0
        """Teacher-forced tokens run through the model by the log-prob calls (shared prefixes once, no padding): their
        cost."""

    def __repr__(self) -> str:
        return f"TransformersClient(model={self.model!r}, batch_size={self.batch_size})"

    def render(self, prompt: Prompt) -> list[int]:
        """Token ids of ``prompt`` followed by the cue for the assistant's reply.

        Uses the tokenizer's chat template when it has one; otherwise ``role: content`` lines
        ending in ``assistant:``. A prompt that ends with an assistant message is that reply's
        start: the model continues it (the reply returned is only what follows).
        """
        tokenizer = self.lm.tokenizer
        started = prompt[-1]["role"] == "assistant"
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(
                list(prompt), add_generation_prompt=not started, continue_final_message=started, tokenize=False
            )
            return tokenizer(text, add_special_tokens=False)["input_ids"]
        turns = prompt[:-1] if started else prompt
        text = "".join(f"{m['role']}: {m['content']}\n" for m in turns) + "assistant:"
        if started:
            text += " " + prompt[-1]["content"]
        return tokenizer(text)["input_ids"]

    @torch.inference_mode()
    def generate(self, prompts: list[Prompt], params: GenerationParams) -> list[Completion]:
        """One reply per prompt, in order: greedy when ``temperature`` is 0, else seeded sampling.

        Sampling uses only ``temperature`` and ``top_p`` (the model's default top-k is turned
        off), as an OpenAI-compatible server does. Sampled replies are reproducible for the same
        batch, seed and batch size; batching changes which random numbers each prompt draws.
        """
        ids = [self.render(p) for p in prompts]
        stop = self.lm.eos_ids
        sampling = (
            {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": 0}
            if params.temperature > 0
            else {"do_sample": False}
        )
        out: list[Completion | None] = [None] * len(prompts)
        for chunk in self._chunks(ids):
            input_ids, mask = self._left_pad([ids[i] for i in chunk])
            with torch.random.fork_rng(devices=self._cuda_devices()):
                torch.manual_seed(params.seed)
                generated = self.lm.model.generate(
                    input_ids=input_ids,
                    attention_mask=mask,
                    max_new_tokens=params.max_tokens,
                    pad_token_id=self.lm.pad_id,
                    eos_token_id=sorted(stop),
                    **sampling,
                )
            for row, i in enumerate(chunk):
                out[i] = self._completion(generated[row, input_ids.shape[1] :].tolist(), len(ids[i]), stop)
        return out  # type: ignore[return-value]

    @torch.inference_mode()
    def answer_logprobs(self, prompts: list[Prompt], answers: list[str]) -> list[AnswerLogprobs]:
        """Log-prob of each answer's first token as the first reply token, one forward pass per chunk.

        An answer is tried as written (stripped) and with a leading space, since tokenizers
        spell a word differently at the start of a reply; the larger of the two log-probs is
        kept (the max, not their logsumexp, so the top answer is the one greedy decoding would
        start with). Answers sharing a first token get the same value; empty answers get ``-inf``.
        Every value is exact: the whole vocabulary is read, so there is no ceiling.
        """
        rows = [self.render(p) for p in prompts]
        return [
            AnswerLogprobs(slots[0])
            for slots in self._read(rows, [[len(r) - 1] for r in rows], answers, self.batch_size)
        ]

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
        rows, slots = [], []
        for prompt, segments in zip(prompts, replies, strict=True):
            ids, ends = self.render(prompt), []
            for segment in segments:
                ids = ids + self.lm.tokenizer.encode(segment, add_special_tokens=False)
                ends.append(len(ids) - 1)
            rows.append(ids)
            slots.append(ends)
        # Logits only at the slots: [rows, slots, vocab] stays small where [rows, tokens, vocab] would not.
        return self._read(rows, slots, answers, max(1, self.batch_size // 4))

    def _read(
        self, rows: list[list[int]], slots: list[list[int]], answers: list[str], size: int
    ) -> list[list[dict[str, float]]]:
        """For each row and each of its slot positions, the answers' log-probs as the next token.

        Rows sharing a prefix go in one chunk (``prefix_chunks``); a chunk's common prefix (up
        to its first slot) runs through the model once and its key/value cache is shared by
        every row, the way a server's prefix cache does. Scorers' prompts repeat the
        system prompt and the explanation for every text, so this is most of their tokens.
        """
        candidates = {a: self._first_tokens(a) for a in answers}
        out: list[list[dict[str, float]] | None] = [None] * len(rows)
        shared: tuple[tuple[int, ...], object] | None = None
        for i, row_slots in enumerate(slots):
            if not row_slots:
                out[i] = []
        todo = [i for i in range(len(rows)) if out[i] is None]
        for members, common in prefix_chunks([rows[i] for i in todo], size):
            chunk = [todo[k] for k in members]
            cut = min(common, *(min(slots[i]) for i in chunk))
            prefix = tuple(rows[chunk[0]][:cut])
            cached = shared is not None and shared[0] == prefix
            if cut < MIN_SHARED_PREFIX or (len(chunk) == 1 and not cached):  # nothing to share
                cut, past = 0, None
            else:
                if not cached:
                    shared = (prefix, self._prefix_cache(prefix))
                past = copy.deepcopy(shared[1])
                past.batch_repeat_interleave(len(chunk))
            keep = sorted({e - cut for i in chunk for e in slots[i]})
            column = {p: k for k, p in enumerate(keep)}
            logprobs = self._suffix_logits([rows[i][cut:] for i in chunk], cut, past, keep).log_softmax(-1)
            for row, i in enumerate(chunk):
                out[i] = [
                    {
                        a: max((logprobs[row, column[e - cut], t].item() for t in tokens), default=-math.inf)
                        for a, tokens in candidates.items()
                    }
                    for e in slots[i]
                ]
        return out  # type: ignore[return-value]

    def _prefix_cache(self, prefix: tuple[int, ...]):
        """The key/value cache of ``prefix`` (batch of one)."""
        self.forward_tokens += len(prefix)
        ids = torch.tensor([prefix], device=self.lm.device)
        kept, _ = self._keep([len(prefix) - 1])
        out = self.lm.model(input_ids=ids, use_cache=True, **kept)
        return out.get("cache") if out.get("cache") is not None else out.get("past_key_values")

    def _suffix_logits(self, suffixes: list[list[int]], offset: int, past, keep: list[int]) -> torch.Tensor:
        """Float32 logits ``[rows, len(keep), vocab]`` at suffix positions ``keep``, on the CPU.

        Suffixes are padded on the right (no generation follows, and a causal model's real
        tokens never attend to later padding) and continue ``past``, the cache of ``offset``
        shared tokens. Where the model's forward takes ``logits_to_keep``, only the kept
        positions go through the unembedding.
        """
        self.forward_tokens += sum(len(s) for s in suffixes)
        width = max(len(s) for s in suffixes)
        device = self.lm.device
        input_ids = torch.tensor([s + [self.lm.pad_id] * (width - len(s)) for s in suffixes], device=device)
        mask = torch.tensor([[1] * (offset + len(s)) + [0] * (width - len(s)) for s in suffixes], device=device)
        positions = torch.arange(offset, offset + width, device=device).expand(len(suffixes), -1)
        kept, index = self._keep(keep)
        if past is not None:  # transformers 5 renamed `past_key_values` to `cache`
            kept["cache" if "cache" in self._forward_args else "past_key_values"] = past
        logits = self.lm.model(
            input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=past is not None, **kept
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

    def _chunks(self, ids: list[list[int]]) -> Iterator[list[int]]:
        """Indices into ``ids``, longest prompts first, ``batch_size`` at a time."""
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        for start in range(0, len(order), self.batch_size):
            yield order[start : start + self.batch_size]

    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Input ids and attention mask, padded on the left so every row ends at the last position."""
        width = max(len(r) for r in rows)
        input_ids = torch.tensor([[self.lm.pad_id] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        return input_ids.to(self.lm.device), mask.to(self.lm.device)

    @functools.cached_property
    def _forward_args(self) -> set[str]:
        """Names the model's forward takes (they differ across models and transformers versions)."""
        return set(inspect.signature(self.lm.model.forward).parameters)

    def _keep(self, positions: list[int]) -> tuple[dict, list[int] | slice]:
        """Forward kwargs that unembed only ``positions``, and the index that picks them from the logits."""
        if "logits_to_keep" in self._forward_args:
            # On the CPU, not the embeddings' device: it indexes the last layer's output, which a device map spread
            # over GPUs puts on another one, and a CPU index serves a tensor on any device.
            return {"logits_to_keep": torch.tensor(positions)}, slice(None)
        return {}, positions

    def _completion(self, new_tokens: list[int], prompt_tokens: int, stop: set[int]) -> Completion:
        """The reply up to its first end-of-sequence token (counted, not shown)."""
        end = next((k for k, t in enumerate(new_tokens) if t in stop), None)
        reply = new_tokens if end is None else new_tokens[:end]
        return Completion(
            text=self.lm.tokenizer.decode(reply, skip_special_tokens=True),
            prompt_tokens=prompt_tokens,
            completion_tokens=len(new_tokens) if end is None else end + 1,
        )

    def _cuda_devices(self) -> list[int]:
        return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
