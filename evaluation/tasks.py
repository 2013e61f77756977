"""The evaluation tasks behind ``evaluate_model.py`` and ``evaluation.comparison``: STS, pair classification and
BEIR retrieval on any ``Scorer``, data read and checked before a model loads (docs/method.md, section 5)."""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np

from common import metrics
from evaluation.loaders import Pairs, RetrievalData, load_graded_pairs, load_labelled_pairs, load_retrieval
from evaluation.scorers import CrossEncoderScorer, Scorer

RETRIEVAL_DEPTH = 100  # the deepest cut-off measured (Recall@100)


def evaluate_sts(scorer: Scorer, pairs: Pairs) -> dict[str, Any]:
    """Spearman of the symmetric score against the gold score."""
    scores = scorer.score_pairs(pairs.first, pairs.second, "symmetric")
    return {"task": "sts", "data": pairs.source, "pairs": len(pairs.first),
            "spearman": metrics.spearman(scores, pairs.gold)}


def evaluate_pair_classification(scorer: Scorer, pairs: Pairs) -> dict[str, Any]:
    """Average precision of the positive class and accuracy at the best threshold, symmetric score."""
    scores = scorer.score_pairs(pairs.first, pairs.second, "symmetric")
    return {"task": "pair_classification", "data": pairs.source, "pairs": len(pairs.first),
            **metrics.pair_classification(scores, pairs.gold)}


def evaluate_retrieval(scorer: Scorer, data: RetrievalData) -> dict[str, Any]:
    """NDCG@10, MRR@10, Recall@100 of the asymmetric score over the corpus (a cross-encoder: over its shortlist)."""
    run = scorer.retrieve(data.queries, data.corpus, RETRIEVAL_DEPTH, "asymmetric")
    result = {"task": "retrieval", "data": data.source, "queries": len(data.queries), "documents": len(data.corpus),
              **metrics.retrieval(run, data.qrels)}
    if isinstance(scorer, CrossEncoderScorer):
        result["reranked"] = {"first_stage": getattr(scorer.first_stage, "name", type(scorer.first_stage).__name__),
                              "depth": scorer.depth}
    return result


def subsample_pairs(pairs: Pairs, limit: int | None, seed: int = 0) -> Pairs:
    """At most ``limit`` pairs, drawn without replacement with ``seed`` (input order kept)."""
    if limit is None or limit >= len(pairs.first):
        return pairs
    keep = np.sort(np.random.default_rng(seed).choice(len(pairs.first), limit, replace=False))
    return Pairs([pairs.first[i] for i in keep], [pairs.second[i] for i in keep], pairs.gold[keep],
                 f"{pairs.source} ({limit} of {len(pairs.first)} pairs, seed {seed})")


def subsample_queries(data: RetrievalData, limit: int | None, seed: int = 0) -> RetrievalData:
    """At most ``limit`` judged queries, drawn with ``seed``; the corpus stays whole."""
    if limit is None or limit >= len(data.queries):
        return data
    ids = list(data.queries)
    keep = [ids[i] for i in np.sort(np.random.default_rng(seed).choice(len(ids), limit, replace=False))]
    return RetrievalData(data.corpus, {q: data.queries[q] for q in keep}, {q: data.qrels[q] for q in keep},
                         f"{data.source} ({limit} of {len(ids)} queries, seed {seed})")


Job = tuple[Callable[[Scorer, Any], dict[str, Any]], Any]


def load_jobs(*, sts: Sequence[str] = (), pairs: Sequence[str] = (), beir: Sequence[str] = (), split: str = "test",
              max_pairs: int | None = None, max_queries: int | None = None) -> list[Job]:
    """Read and check every requested data set (before any model is loaded, so bad input fails fast)."""
    jobs: list[Job] = [(evaluate_sts, subsample_pairs(load_graded_pairs(s, split), max_pairs)) for s in sts]
    jobs += [(evaluate_pair_classification, subsample_pairs(load_labelled_pairs(s, split), max_pairs)) for s in pairs]
    jobs += [(evaluate_retrieval, subsample_queries(load_retrieval(s, split), max_queries)) for s in beir]
    return jobs


def run(scorer: Scorer, jobs: Sequence[Job]) -> list[dict[str, Any]]:
    """Every job's metrics, in order; each result carries its wall time in ``seconds``."""
    results = []
    for evaluate, data in jobs:
        start = time.perf_counter()
        results.append({**evaluate(scorer, data), "seconds": round(time.perf_counter() - start, 2)})
    return results
