"""Comparing sparse coders by meaning: do two coders (or a coder and the model's neurons) learn the same latents?

* ``matching`` — cosine similarity matrices and one-to-one Hungarian matching (pure numpy/scipy),
* ``sides`` — one coder of a run directory: its explained latents, explanations and decoder rows,
* ``report`` — the comparison of two sides: explanation matching, decoder matching, their
  agreement and a shuffled baseline, written as ``compare.json`` + ``compare.png``,
* ``plots`` — the matching figure.

Nothing is imported here: ``interp compare`` loads what it needs.
"""

DEFAULT_MAX_LATENTS = 4096
"""Latents compared per coder at most: two 4096x4096 float32 similarity matrices take 128 MiB (the
assignment solver copies one to float64).
"""
