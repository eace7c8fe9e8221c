"""A whole ``interp run`` in seconds: a deterministic LLM for the scripted server, and the run's arguments.

The model folder such a run reads is ``tests.helpers.models.save_tiny_model``.
"""

import re
from pathlib import Path


def first_marked_token(content: str) -> str:
    """The first token marked <<like this>> in the first example of an explain prompt (``default``'s or
    ``short``'s)."""
    first = "Example 1:" if "Example 1:" in content else "\n1. "
    return content.rsplit(first, 1)[1].split("<<", 1)[1].split(">>", 1)[0].strip()


def scripted_reply(content: str) -> str:
    """A deterministic LLM: explains with the first marked token; detects a text by whether it holds that token.

    The ``short`` explainer's reply continues its started "Fires on".
    """
    if "<<" in content and "Example 1:" in content:
        return f'[EXPLANATION]: The token "{first_marked_token(content)}"'
    if "<<" in content and "Contexts:" in content:
        return f' The token "{first_marked_token(content)}"\nFires on more'
    match = re.search(r'Explanation: The token "(.*)"', content)
    token = match.group(1) if match else None
    texts = re.findall(r"^Text \d+: (.*)$", content, flags=re.MULTILINE)
    return "[" + ", ".join("1" if token and token in t else "0" for t in texts) + "]"


def tiny_run_args(run_dir: Path, model_dir: Path, url: str) -> list[str]:
    """``interp run`` on the tiny model with the scripted LLM: every stage, a few seconds."""
    return [
        *["run", "--run-dir", str(run_dir), "--quiet", "--model", str(model_dir), "--llm", url],
        *"--num-tokens 1024 --ctx-len 32 --shard-windows 8 --batch-size 8".split(),
        *"--coders topk-neurons@model.layers.1.mlp --latents sample:6 --explain-batch 3 --llm-model scripted".split(),
        *"--scorers detection --score-mode generative".split(),
    ]
