"""Exact top-k over a score matrix computed a block of queries at a time (memory O(block x passages))."""

from __future__ import annotations

from typing import Callable

import torch

QUERY_BLOCK = 64


def top_k(
    score_block: Callable[[slice], torch.Tensor],
    num_queries: int,
    num_passages: int,
    k: int,
    *,
    block_size: int = QUERY_BLOCK,
    progress: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``score_block(queries)`` -> ``[len(queries), num_passages]`` scores; returns ``(scores, indices)`` of the
    ``min(k, num_passages)`` best passages of every query, ``[num_queries, k]``, best first.

    ``progress``: a tqdm description, shown when there is more than one block.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, num_passages)
    starts = range(0, num_queries, block_size)
    if progress and len(starts) > 1:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=progress, unit="block")
    values, indices = [], []
    for start in starts:
        block = slice(start, min(start + block_size, num_queries))
        scores = score_block(block).float()
        if scores.shape != (block.stop - block.start, num_passages):
            raise ValueError(f"score_block returned {tuple(scores.shape)}, expected "
                             f"{(block.stop - block.start, num_passages)}")
        best = torch.topk(scores, k, dim=1)
        values.append(best.values.cpu())
        indices.append(best.indices.cpu())
    if not values:
        return torch.empty(0, k), torch.empty(0, k, dtype=torch.long)
    return torch.cat(values), torch.cat(indices)
