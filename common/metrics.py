"""Evaluation metrics, computed with library code (scipy, scikit-learn, pytrec_eval).

Every metric here depends on scores only through their order, so any monotone transform of a scorer's
output (a probability or its log-odds, a logit, a cosine) gives the same numbers.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

RETRIEVAL_MEASURES = {"ndcg_at_10": "ndcg_cut_10", "recall_at_100": "recall_100"}
MRR_DEPTH = 10


class MetricError(ValueError):
    """A metric that is undefined for these scores or labels (constant scores, a single class, ...)."""


def spearman(scores: Sequence[float], gold: Sequence[float]) -> float:
    """Spearman rank correlation of predicted ``scores`` against ``gold`` (scipy; ties get average ranks)."""
    from scipy.stats import spearmanr

    scores, gold = _paired(scores, gold)
    if np.ptp(scores) == 0 or np.ptp(gold) == 0:
        raise MetricError("Spearman correlation is undefined when the scores or the gold values are all equal")
    return float(spearmanr(scores, gold).statistic)


def pair_classification(scores: Sequence[float], labels: Sequence[bool]) -> dict[str, float]:
    """Average precision of the positive class and the accuracy at the best threshold.

    The best threshold is chosen over every distinct score (and "all negative") on this same data, as MTEB
    does; ``best_threshold`` is reported with it (predict positive when ``score >= best_threshold``).
    """
    from sklearn.metrics import average_precision_score, roc_curve

    scores, labels = _paired(scores, labels)
    labels = labels.astype(bool)
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        raise MetricError(f"pair classification needs both classes; got {positives} positive and {negatives} negative")
    false_rate, true_rate, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    accuracies = (true_rate * positives + (1.0 - false_rate) * negatives) / len(labels)
    best = int(np.argmax(accuracies))
    return {
        "average_precision": float(average_precision_score(labels, scores)),
        "accuracy": float(accuracies[best]),
        "best_threshold": float(thresholds[best]),
    }


def retrieval(
    run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]]
) -> dict[str, float]:
    """NDCG@10, MRR@10 and Recall@100 (trec_eval's definitions, via pytrec_eval), averaged over ``qrels``' queries.

    ``run[query_id][doc_id]`` is a score (higher is better), ``qrels[query_id][doc_id]`` a graded judgement
    (> 0 is relevant; NDCG uses the grade as gain). A judged query missing from ``run`` counts as 0. MRR@10 is
    trec_eval's reciprocal rank of the run cut to its 10 best documents.
    """
    import pytrec_eval

    if not qrels:
        raise MetricError("no judged queries")
    qrels = {query: {doc: int(grade) for doc, grade in docs.items()} for query, docs in qrels.items()}
    run = {query: {doc: float(score) for doc, score in run.get(query, {}).items()} for query in qrels}
    full = pytrec_eval.RelevanceEvaluator(qrels, set(RETRIEVAL_MEASURES.values())).evaluate(run)
    cut = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(
        {query: dict(_best(docs, MRR_DEPTH)) for query, docs in run.items()}
    )
    results = {name: _mean(full, qrels, measure) for name, measure in RETRIEVAL_MEASURES.items()}
    results["mrr_at_10"] = _mean(cut, qrels, "recip_rank")
    return results


def _mean(per_query: Mapping[str, Mapping[str, float]], qrels: Mapping[str, object], measure: str) -> float:
    # pytrec_eval omits queries whose run is empty: they score 0
    return float(sum(per_query.get(query, {}).get(measure, 0.0) for query in qrels) / len(qrels))


def _best(docs: Mapping[str, float], depth: int) -> list[tuple[str, float]]:
    return sorted(docs.items(), key=lambda item: (item[1], item[0]), reverse=True)[:depth]  # trec_eval tie order


def _paired(first: Sequence, second: Sequence) -> tuple[np.ndarray, np.ndarray]:
    first, second = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    if first.shape != second.shape or first.ndim != 1:
        raise MetricError(f"need two 1-d sequences of one length, got shapes {first.shape} and {second.shape}")
    if len(first) < 2:
        raise MetricError(f"need at least 2 pairs, got {len(first)}")
    if not np.isfinite(first).all():
        raise MetricError("scores contain NaN or infinity")
    return first, second
