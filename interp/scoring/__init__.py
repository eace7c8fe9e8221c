"""Scoring explanations against a latent's held-out examples and a random explanation.

* ``base`` — what every scorer takes and returns (``Scorer``, ``ScoreResult``, ``ScoredExample``);
* ``classify`` (detection, fuzzing), ``embedding``, ``surprisal``, ``intruder``, ``simulation``,
  ``intervention`` — the scorers; ``registry`` builds them by name from a run's settings;
* ``metrics`` — accuracy, balanced accuracy, F1, AUROC, correlations;
* ``results`` — summaries of score lines (per coder and scorer, against the baseline, with a
  margin interval); ``plots`` — their figures.
"""
