"""Hybrid ranking: a lexical (BM25) and a dense (IEM) ranking of the same documents fused into one.

* ``reciprocal_rank_fusion``: ``score(d) = sum over the rankings of 1 / (k + rank(d))`` (Cormack et al., SIGIR
  2009; rank from 1, ``k`` = 60), a document missing from a ranking adds nothing: scores of different scales
  never meet.
* ``normalised_sum``: each ranking's scores min-max scaled to [0, 1] over its own list, then summed (a missing
  document counts 0); ``weight`` is the lexical share, ``1 - weight`` the dense one.

Both take rankings as ``[(id, score), ...]`` best first and return the fused ``top_k``, best first.
"""

from __future__ import annotations

from typing import Sequence

RRF_K = 60
FUSIONS = ("rrf", "sum")
Ranking = Sequence[tuple[str, float]]


def reciprocal_rank_fusion(rankings: Sequence[Ranking], top_k: int, k: int = RRF_K) -> list[tuple[str, float]]:
    """RRF of ``rankings``: ``sum 1 / (k + rank)``; ties broken by first appearance."""
    fused: dict[str, float] = {}
    for ranking in rankings:
        for rank, (doc, _) in enumerate(ranking, start=1):
            fused[doc] = fused.get(doc, 0.0) + 1.0 / (k + rank)
    return sorted(fused.items(), key=lambda item: -item[1])[:top_k]


def normalised_sum(lexical: Ranking, dense: Ranking, top_k: int, weight: float = 0.5) -> list[tuple[str, float]]:
    """``weight * minmax(lexical) + (1 - weight) * minmax(dense)``; ties broken by first appearance."""
    fused: dict[str, float] = {}
    for ranking, share in ((lexical, weight), (dense, 1.0 - weight)):
        if not ranking:
            continue
        scores = [score for _, score in ranking]
        low, span = min(scores), max(scores) - min(scores)
        for doc, score in ranking:
            fused[doc] = fused.get(doc, 0.0) + share * ((score - low) / span if span > 0 else 1.0)
    return sorted(fused.items(), key=lambda item: -item[1])[:top_k]


def fuse(fusion: str, lexical: Ranking, dense: Ranking, top_k: int) -> list[tuple[str, float]]:
    """``fusion`` (``rrf`` or ``sum``) of the two rankings."""
    if fusion == "rrf":
        return reciprocal_rank_fusion([lexical, dense], top_k)
    if fusion == "sum":
        return normalised_sum(lexical, dense, top_k)
    raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
