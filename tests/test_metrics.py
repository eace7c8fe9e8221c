"""Scoring metrics against hand-computed values and their edge cases."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from interp.scoring.metrics import auroc, classification, correlation


def test_classification_matches_hand_computed_counts():
    labels = [True, True, True, False, False, False, False, False]
    preds = [True, True, False, True, False, False, False, False]
    m = classification(labels, preds)
    # tp=2 fn=1 fp=1 tn=4
    assert (m.n, m.positives, m.negatives, m.failed) == (8, 3, 5, 0)
    assert m.accuracy == 6 / 8
    assert m.recall == 2 / 3 and m.precision == 2 / 3 and m.f1 == pytest.approx(2 / 3)
    assert m.balanced_accuracy == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert m.auroc is None


def test_unparsable_predictions_are_counted_not_scored_as_wrong():
    m = classification([True, False, True], [None, None, None])
    assert m.failed == 3 and m.accuracy is None and m.balanced_accuracy is None and m.f1 is None
    m = classification([True, False, True], [True, None, True])
    assert m.failed == 1 and m.accuracy == 1.0 and m.balanced_accuracy is None  # no negative was judged


def test_auroc_by_hand_with_ties_and_one_class():
    assert auroc([True, False], [0.9, 0.1]) == 1.0
    assert auroc([True, False], [0.1, 0.9]) == 0.0
    assert auroc([True, False, True, False], [0.5, 0.5, 0.8, 0.2]) == pytest.approx(0.875)
    assert auroc([True, True], [0.1, 0.2]) is None
    m = classification([True, False, False], [True, False, True], scores=[0.9, float("-inf"), 0.6])
    assert m.auroc == 1.0  # the -inf score is left out, not a crash


def test_correlations_are_none_for_constants():
    assert correlation([1, 2, 3], [2, 4, 6]) == {"pearson": pytest.approx(1.0), "spearman": pytest.approx(1.0)}
    assert correlation([1, 1, 1], [1, 2, 3]) == {"pearson": None, "spearman": None}
    assert correlation([1], [2]) == {"pearson": None, "spearman": None}


@given(st.lists(st.tuples(st.booleans(), st.one_of(st.none(), st.booleans()), st.floats(allow_nan=True)), max_size=40))
def test_metrics_never_crash_and_stay_in_range(rows):
    labels = [r[0] for r in rows]
    m = classification(labels, [r[1] for r in rows], [r[2] for r in rows])
    for value in (m.accuracy, m.balanced_accuracy, m.precision, m.recall, m.f1, m.auroc):
        assert value is None or (0.0 <= value <= 1.0 and not math.isnan(value))
