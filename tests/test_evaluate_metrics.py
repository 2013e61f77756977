"""Metric functions against hand-computed values and plain loops."""

from __future__ import annotations

import math

import numpy as np
import pytest

from common import metrics


def loop_average_precision(scores, labels) -> float:
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    hits, total = 0, 0.0
    for rank, index in enumerate(order, start=1):
        if labels[index]:
            hits += 1
            total += hits / rank
    return total / sum(labels)


def loop_best_accuracy(scores, labels) -> float:
    thresholds = list(scores) + [math.inf]
    return max(np.mean([(s >= t) == bool(y) for s, y in zip(scores, labels)]) for t in thresholds)


def test_spearman_matches_hand_computed_value():
    # ranks 1 2 3 4 vs 1 3 2 4: d^2 = 0 1 1 0, rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert metrics.spearman([0.1, 0.2, 0.3, 0.4], [1, 3, 2, 4]) == pytest.approx(0.8)


def test_spearman_is_undefined_for_constant_scores():
    with pytest.raises(ValueError, match="all equal"):
        metrics.spearman([1.0, 1.0, 1.0], [1, 2, 3])


def test_pair_classification_hand_computed():
    result = metrics.pair_classification([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    assert result["average_precision"] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert result["accuracy"] == pytest.approx(0.75)


def test_pair_classification_matches_loops_on_random_scores():
    rng = np.random.default_rng(0)
    scores, labels = rng.normal(size=200), rng.random(200) < 0.3
    scores[labels] += 0.8
    result = metrics.pair_classification(scores, labels)
    assert result["average_precision"] == pytest.approx(loop_average_precision(scores, labels))
    assert result["accuracy"] == pytest.approx(loop_best_accuracy(scores, labels))
    predicted = scores >= result["best_threshold"]
    assert np.mean(predicted == labels) == pytest.approx(result["accuracy"])


def test_pair_classification_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        metrics.pair_classification([0.1, 0.2], [1, 1])


def test_retrieval_metrics_hand_computed():
    run = {"q1": {"d1": 3.0, "d2": 2.0, "d3": 1.0}, "q2": {"d5": 1.0}}
    qrels = {"q1": {"d2": 1, "d9": 2}, "q2": {"d1": 1}}
    result = metrics.retrieval(run, qrels)
    # q1: d2 (gain 1) at rank 2; ideal order d9 (2), d2 (1). q2: nothing relevant retrieved.
    ndcg_q1 = (1 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert result["ndcg_at_10"] == pytest.approx(ndcg_q1 / 2)
    assert result["mrr_at_10"] == pytest.approx(0.5 / 2)
    assert result["recall_at_100"] == pytest.approx(0.5 / 2)


def test_mrr_stops_at_rank_10_and_recall_at_100():
    run = {"q": {f"d{i}": float(-i) for i in range(150)}}
    assert metrics.retrieval(run, {"q": {"d10": 1}})["mrr_at_10"] == 0.0  # rank 11
    assert metrics.retrieval(run, {"q": {"d9": 1}})["mrr_at_10"] == pytest.approx(0.1)
    result = metrics.retrieval(run, {"q": {"d50": 1, "d120": 1}})
    assert result["recall_at_100"] == pytest.approx(0.5)


def test_judged_query_missing_from_the_run_scores_zero():
    result = metrics.retrieval({"q1": {"d1": 1.0}}, {"q1": {"d1": 1}, "q2": {"d2": 1}})
    assert result == pytest.approx({"ndcg_at_10": 0.5, "mrr_at_10": 0.5, "recall_at_100": 0.5})
