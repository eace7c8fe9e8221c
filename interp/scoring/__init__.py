"""Scoring explanations: metrics now; the scorers build on them."""
