"""A latent planted on cats, for scorer tests: its texts, their examples, and what a scripted judge needs.

The latent fires (2.0) on "cat" and "kitten" and nowhere else, so any sensible scorer should
rate the explanation "cat" high on ``CAT_TEXTS`` and low on ``MONEY_TEXTS``. The
``cat_record`` fixture (conftest.py) is the record made of them.
"""

import re

from interp.llm import OpenAIClient
from interp.records import Example

CAT_TEXTS = [
    "The cat slept on the warm windowsill all afternoon.",
    "Her cat chased a ball of yarn across the floor.",
    "The cat purred loudly when we stroked its fur.",
    "A stray cat meowed outside the door at night.",
    "The young cat drank milk from a small saucer.",
    "Our old cat likes to hunt mice in the garden.",
]
MONEY_TEXTS = [
    "The bank raised interest rates by half a percent.",
    "Stock prices fell sharply after the earnings report.",
    "She paid the invoice with a credit card yesterday.",
    "The budget deficit grew to three billion dollars.",
    "Investors bought government bonds for safety.",
    "The loan must be repaid within five years.",
]
CAT_WORDS = {"cat", "kitten"}


def example(tokenizer, text: str, index: int) -> Example:
    """``text`` as an example of the planted latent: 2.0 on each cat word, 0 elsewhere."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    pieces = tokenizer.batch_decode([[t] for t in ids])
    acts = [2.0 if p.strip().lower() in CAT_WORDS else 0.0 for p in pieces]
    return Example(ids, acts, index)


def keyword(content: str) -> str:
    """The last word of the explanation in a scorer's prompt: what a scripted judge looks for."""
    return re.search(r"Explanation: (.*)", content).group(1).split()[-1].lower()


def scripted(server) -> OpenAIClient:
    """A client of the scripted server (``server`` fixture) with short timeouts and one retry."""
    return OpenAIClient(server.base_url, "scripted-model", concurrency=4, timeout=5, max_retries=1, backoff=0.01)
