"""Latents per hour with a served LLM, against ``--concurrency``: the real explain and score stages, a stand-in server.

A local OpenAI-compatible server on 127.0.0.1 answers every request after a fixed latency (it
runs no model: the latency stands for one request's time on a real server) and counts what it
gets: requests, the most in flight at once, and the prompt and reply tokens (counted with the
run's tokenizer). The pipeline is the real one, as ``interp explain`` and ``interp score`` run it:
the `default` explainer (delphi's prompt), then detection and fuzzing in log-prob mode with the random-explanation
baseline, over ``--latents`` latents of a small run (a random Llama with SmolLM2's tokenizer,
top-k MLP neurons, cached once and copied for each concurrency). The server is bounded: loopback
only, shut down at the end.

Each explanation the server writes is its own, derived from a sha256 of the request's messages:
different latents get different explanations, so each latent's random-explanation baseline
(another latent's explanation) is a prompt the server is asked, not one the run's response cache
already holds, and the same prompt still gets the same reply, in any process (each concurrency's
run gets the same explanations and so asks the same prompts). A stand-in that gave every latent
the same explanation made the whole baseline free: 63.5 requests a latent instead of 129.5, on 4
latents.

The table shows requests per latent, the most requests in flight, and latents per hour at each
concurrency. Below it, a projection for a vLLM server: the prompt and reply tokens per latent
measured here, divided by a prefill and a decode rate that you state (``--prefill-rate``,
``--decode-rate``; the defaults are assumptions for an 8B model on one H100, not measurements).
EleutherAI delphi's published figure to compare with: 32k latents explained and scored in 8 A40
GPU-days with a 70B 4-bit explainer, about 170 latents per GPU-hour.

    python benchmarks/served_scale.py                       # about 4 minutes on 2 CPU cores
    python benchmarks/served_scale.py --latency 0.2 --latents 64 --concurrency 1 8 64
"""

import argparse
import hashlib
import json
import shutil
import tempfile
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
from transformers.utils import logging as hf_logging

from interp.config import CoderConfig, CorpusConfig, ExplainConfig, ModelConfig, RunConfig, ScoreConfig
from interp.models import embedded_model_dir
from interp.stages import run_cache, run_explain, run_score

PEER_LATENTS_PER_GPU_HOUR = 32_768 / (8 * 24)
"""delphi's published cost: 32k latents in 8 A40 GPU-days."""


class LatencyServer(ThreadingHTTPServer):
    """Answers chat completions after ``latency`` seconds; counts requests, concurrency and tokens."""

    daemon_threads = True

    def __init__(self, latency: float, tokenizer):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.latency, self.tokenizer = latency, tokenizer
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Zero the counters (one measurement each)."""
        self.requests = self.in_flight = self.max_in_flight = self.prompt_tokens = self.reply_tokens = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: LatencyServer

    def log_message(self, *args):
        """Keep the table clean."""

    def do_POST(self):
        s = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with s.lock:
            s.requests += 1
            s.in_flight += 1
            s.max_in_flight = max(s.max_in_flight, s.in_flight)
        time.sleep(s.latency)
        prompt = "".join(m["content"] for m in body["messages"])
        reply = "1" if body.get("logprobs") else explanation(body["messages"])
        prompt_tokens, reply_tokens = len(s.tokenizer(prompt).input_ids), len(s.tokenizer(reply).input_ids)
        with s.lock:
            s.prompt_tokens += prompt_tokens
            s.reply_tokens += reply_tokens
            # before the reply is written: the client may send its next request as soon as it reads it
            s.in_flight -= 1
        self._send(_reply(reply, body, len(prompt)))

    def _send(self, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def explanation(messages: list[dict]) -> str:
    """An explanation of its own for each prompt, the same one for the same prompt in any process (sha256 of the
    messages, not Python's salted ``hash``), as a model decoding greedily would answer."""
    digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()
    return f"[EXPLANATION]: Words of kings and their courts (variant {digest[:8]})"


def _reply(text: str, body: dict, seed: int) -> dict:
    """A chat completion; with log-probs, both answers listed (their odds vary with the prompt, like a model's)."""
    choice: dict = {"message": {"role": "assistant", "content": text}}
    if body.get("logprobs"):
        yes = -0.2 - (seed % 7) / 4
        top = [{"token": "1", "logprob": yes}, {"token": "0", "logprob": -1.0}]
        choice["logprobs"] = {"content": [{**top[0], "top_logprobs": top}]}
    return {"choices": [choice], "usage": {"prompt_tokens": 0, "completion_tokens": 1}}


def make_model(folder: Path) -> Path:
    """A random 4-layer Llama with SmolLM2's tokenizer, saved as a model folder (the served LLM does the work here)."""
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def measure(base: Path, work: Path, cfg: RunConfig, server: LatencyServer, concurrency: int) -> dict:
    """Explain and score ``cfg``'s latents of a copy of the cached run ``base`` at ``concurrency``; what it took."""
    run_dir = work / f"c{concurrency}"
    shutil.copytree(base, run_dir)
    cfg = replace(cfg, explain=replace(cfg.explain, concurrency=concurrency))
    server.reset()
    start = time.perf_counter()
    explained = run_explain(cfg, run_dir, progress=False)["explanations"].get("ok", 0)
    run_score(cfg, run_dir, progress=False)
    seconds = time.perf_counter() - start
    return {
        "concurrency": concurrency,
        "latents": explained,
        "requests": server.requests,
        "max_in_flight": server.max_in_flight,
        "seconds": seconds,
        "prompt_tokens": server.prompt_tokens,
        "reply_tokens": server.reply_tokens,
    }


def table(rows: list[dict], latency: float) -> str:
    """The measured table, one row per concurrency."""
    lines = [
        f"served LLM stand-in: {latency * 1000:.0f} ms per request; default explainer + detection and fuzzing "
        "(log-prob) with the random-explanation baseline",
        "| concurrency | latents | requests / latent | most in flight | seconds | latents / hour |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['concurrency']} | {r['latents']} | {r['requests'] / r['latents']:.1f} | {r['max_in_flight']} | "
            f"{r['seconds']:.1f} | {3600 * r['latents'] / r['seconds']:,.0f} |"
        )
    return "\n".join(lines)


def projection(row: dict, prefill: float, decode: float) -> str:
    """Latents per hour on a server that prefills ``prefill`` and decodes ``decode`` tokens per second."""
    prompt, reply = row["prompt_tokens"] / row["latents"], row["reply_tokens"] / row["latents"]
    per_hour = 3600 / (prompt / prefill + reply / decode)
    return (
        f"tokens per latent: {prompt:,.0f} prompt, {reply:,.0f} reply. "
        f"At {prefill:,.0f} prompt and {decode:,.0f} reply "
        f"tokens/s (assumed, no prefix cache): {per_hour:,.0f} latents per GPU-hour, "
        f"{per_hour / PEER_LATENTS_PER_GPU_HOUR:.0f}x delphi's published {PEER_LATENTS_PER_GPU_HOUR:.0f}."
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--latency", type=float, default=0.05, help="seconds the server takes per request (default: 0.05)")
    p.add_argument(
        "--latents", type=int, default=16, help="latents explained and scored per concurrency (default: 16)"
    )
    p.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 8, 64], help="requests in flight (default: 1 8 64)"
    )
    p.add_argument(
        "--prefill-rate", type=float, default=20_000, help="projected server's prompt tokens/s (default: 20000)"
    )
    p.add_argument(
        "--decode-rate", type=float, default=2_500, help="projected server's generated tokens/s (default: 2500)"
    )
    args = p.parse_args(argv)
    hf_logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = make_model(work / "model")
        cfg = RunConfig(
            model=ModelConfig(model=str(model)),
            corpus=CorpusConfig(num_tokens=16_384, ctx_len=64),
            coders=CoderConfig(coders=["topk-neurons@model.layers.1.mlp"], neuron_k=8),
            explain=ExplainConfig(
                explainer="default", llm="", llm_model="served", api_key_env="", latents=f"sample:{args.latents}"
            ),
            score=ScoreConfig(scorers=["detection", "fuzzing"], score_mode="logprob"),
        )
        run_cache(cfg, work / "base", progress=False)
        server = LatencyServer(args.latency, AutoTokenizer.from_pretrained(model))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            cfg = replace(cfg, explain=replace(cfg.explain, llm=server.url))
            rows = [measure(work / "base", work, cfg, server, c) for c in args.concurrency]
        finally:
            server.shutdown()
            server.server_close()
    print(table(rows, args.latency))
    print(projection(rows[-1], args.prefill_rate, args.decode_rate))


if __name__ == "__main__":
    main()
