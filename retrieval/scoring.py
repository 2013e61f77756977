"""Exact IEM top-k over cached passage projections, at matrix-multiply speed.

Scoring query ``q`` against passage ``p`` costs ``relu(W_t relu(q' + p') + b_t)``, one ``h x h`` layer, where
``q' = W1q y_q + b1`` and ``p' = W1p y_p`` (``IEM.project_query`` / ``project_passage``). Here many queries meet
a chunk of passages in one GEMM: ``[Nq * chunk, h] x [h, h]``, the chunk sized from a memory budget.

Precision: ``"fp32"``, ``"bf16"`` or ``"auto"`` (bf16 where the hardware runs it fast, see ``bf16_is_fast``).
bf16 computes with fp32 accumulation inside the GEMM; it only shortlists: the best ``k + RESCORE_MARGIN`` of each
query are scored again in fp32, so returned scores and their order are fp32 ones.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from common.hardware import fast_bf16

DEFAULT_MEMORY_MB = 512
RESCORE_MARGIN = 64
_BF16_FAST: dict[str, bool] = {}


def bf16_is_fast(device: torch.device | str = "cpu") -> bool:
    """True where bf16 GEMMs run clearly faster than fp32 (measured once per device type).

    The hardware must have a fast bf16 path (``common.hardware.fast_bf16``: a GPU with bf16, a CPU with AMX or
    AVX512-BF16), and on a CPU a ``[4096, 512] x [512, 512]`` bf16 matmul must also run at least 1.5x as fast as
    the fp32 one, here and now (the add/relu passes around the GEMM eat part of a smaller gain).
    """
    kind = torch.device(device).type
    if kind not in _BF16_FAST:
        _BF16_FAST[kind] = fast_bf16(kind) and (kind != "cpu" or _measured_bf16_speedup() >= 1.5)
    return _BF16_FAST[kind]


def _measured_bf16_speedup(rows: int = 4096, hidden: int = 512, repeats: int = 3) -> float:
    generator = torch.Generator().manual_seed(0)
    inputs, weight = torch.randn(rows, hidden, generator=generator), torch.randn(hidden, hidden, generator=generator)

    def best_time(dtype: torch.dtype) -> float:
        a, w = inputs.to(dtype), weight.to(dtype)
        torch.mm(a, w)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, w)
            times.append(time.perf_counter() - start)
        return min(times)

    return best_time(torch.float32) / best_time(torch.bfloat16)


def compute_dtype(precision: str, device: torch.device | str) -> torch.dtype:
    """The dtype of the scoring GEMMs for ``precision`` (``auto``, ``fp32`` or ``bf16``) on ``device``."""
    if precision == "auto":
        return torch.bfloat16 if bf16_is_fast(device) else torch.float32
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    return torch.bfloat16 if precision == "bf16" else torch.float32


def chunk_size(num_queries: int, hidden: int, dtype: torch.dtype, memory_mb: float = DEFAULT_MEMORY_MB) -> int:
    """Passages per chunk so that the two ``[num_queries, chunk, hidden]`` activations fit in ``memory_mb``."""
    per_passage = 2 * num_queries * hidden * torch.empty(0, dtype=dtype).element_size()
    return max(1, int(memory_mb * 2**20) // max(1, per_passage))


class _Head:
    """The task branch and output layer of an IEM, in one dtype on one device."""

    def __init__(self, iem: Any, task: str, dtype: torch.dtype, device: torch.device) -> None:
        branch = iem.task_branch(task)
        self.weight_t = branch.weight.detach().t().to(device, dtype).contiguous()
        self.bias = branch.bias.detach().to(device, dtype)
        self.output = iem.output.weight.detach()[0].to(device, dtype)
        self.output_bias = float(iem.output.bias.detach()[0])

    def scores(self, queries: torch.Tensor, passages: torch.Tensor, first: torch.Tensor,
               second: torch.Tensor) -> torch.Tensor:
        """``[Nq, h]`` x ``[Np, h]`` -> ``[Nq, Np]`` logits, with ``first``/``second`` as activation buffers."""
        rows = queries.shape[0] * passages.shape[0]
        first = first[:rows].view(queries.shape[0], passages.shape[0], -1)
        torch.add(queries[:, None, :], passages[None, :, :], out=first)
        first.relu_()
        second = second[:rows]
        torch.addmm(self.bias, first.view(rows, -1), self.weight_t, out=second)
        second.relu_()
        return torch.mv(second, self.output).view(queries.shape[0], passages.shape[0]).float() + self.output_bias


@torch.no_grad()
def exact_top_k(iem: Any, task: str, query_projections: torch.Tensor, passage_projections: torch.Tensor, k: int,
                *, precision: str = "auto", memory_mb: float = DEFAULT_MEMORY_MB) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``min(k, Np)`` best passages of every query over all ``Np``: fp32 ``(scores, indices)``, best first.

    ``query_projections [Nq, h]`` from ``IEM.project_query``; ``passage_projections [Np, h]`` in any float dtype
    (half precision in an index), on any device: chunks move to the IEM's device as they are scored.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    device = iem.first.weight.device
    dtype = compute_dtype(precision, device)
    num_queries, hidden = query_projections.shape
    num_passages = passage_projections.shape[0]
    keep = min(num_passages, k if dtype == torch.float32 else k + RESCORE_MARGIN)
    chunk = min(num_passages, chunk_size(num_queries, hidden, dtype, memory_mb))
    head = _Head(iem, task, dtype, device)
    queries = query_projections.to(device, dtype)
    first = torch.empty(num_queries * chunk, hidden, dtype=dtype, device=device)
    second = torch.empty_like(first)
    best_scores = torch.empty(num_queries, 0, device=device)
    best_indices = torch.empty(num_queries, 0, dtype=torch.long, device=device)
    for start in range(0, num_passages, chunk):
        passages = passage_projections[start : start + chunk].to(device, dtype)
        scores = torch.cat([best_scores, head.scores(queries, passages, first, second)], dim=1)
        indices = torch.cat([best_indices, torch.arange(start, start + len(passages), device=device)
                             .expand(num_queries, -1)], dim=1)
        best = torch.topk(scores, min(keep, scores.shape[1]), dim=1)
        best_scores, best_indices = best.values, indices.gather(1, best.indices)
    if dtype != torch.float32:
        return rescore(iem, task, query_projections, passage_projections, best_indices, k)
    return best_scores.cpu(), best_indices.cpu()


@torch.no_grad()
def rescore(iem: Any, task: str, query_projections: torch.Tensor, passage_projections: torch.Tensor,
            candidates: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 IEM scores of each query's ``candidates [Nq, C]`` (passage rows; -1 = none); the best ``min(k, C)``.

    Returns ``(scores, indices)`` on the CPU, best first; a missing candidate (-1) scores ``-inf``.
    """
    device = iem.first.weight.device
    head = _Head(iem, task, torch.float32, device)
    candidates = candidates.to(device)
    present = candidates >= 0
    gathered = passage_projections[candidates.clamp(min=0).cpu()].to(device, torch.float32)  # [Nq, C, h]
    features = torch.relu(query_projections.to(device, torch.float32)[:, None, :] + gathered)
    hidden = torch.relu(torch.addmm(head.bias, features.flatten(0, 1), head.weight_t))
    scores = (hidden @ head.output).view(candidates.shape) + head.output_bias
    scores = scores.masked_fill(~present, float("-inf"))
    best = torch.topk(scores, min(k, candidates.shape[1]), dim=1)
    return best.values.cpu(), candidates.gather(1, best.indices).cpu()
