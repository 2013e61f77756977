"""The first stage of two-stage search: a faiss HNSW or IVF index over the PMA embeddings.

Vectors are stored as fp16 codes (``SQfp16``): an index's embeddings are half precision anyway, so the codes lose
nothing, and the embeddings live only here (``embeddings()`` reads them back). Per passage that is 1,152 bytes at
D = 576, plus the HNSW links (``HNSW_M`` x 2 x 4 bytes on the base layer) or the IVF list id (8 bytes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

KINDS = ("hnsw", "ivf")
METRICS = ("l2", "ip")
DEFAULT_METRIC = "l2"  # IEM starts as a distance: on synthetic data ip kept < 0.1 of the top-10, l2 0.9
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 40
IVF_TRAIN_ROWS = 50_000


def _faiss() -> Any:
    import faiss

    return faiss


def _rows(embeddings: torch.Tensor) -> np.ndarray:
    return embeddings.detach().float().cpu().contiguous().numpy()


def ivf_lists(num_vectors: int) -> int:
    """IVF list count: about sqrt(N), with at least 39 training vectors per list (faiss's k-means minimum)."""
    return max(1, min(round(math.sqrt(num_vectors)), num_vectors // 39))


@dataclass
class AnnIndex:
    """A faiss HNSW or IVF index (``kind``) with metric ``l2`` or ``ip``; row i is passage i of the search index."""

    kind: str
    metric: str
    index: Any

    @classmethod
    def build(cls, kind: str, metric: str, embeddings: torch.Tensor) -> "AnnIndex":
        """Train (IVF: k-means on up to ``IVF_TRAIN_ROWS`` rows) and fill an index over ``embeddings [N, D]``."""
        faiss = _faiss()
        if kind not in KINDS:
            raise ValueError(f"ann must be one of {KINDS}, got {kind!r}")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if len(embeddings) == 0:
            raise ValueError("an ANN index needs at least one embedding")
        faiss_metric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
        rows = _rows(embeddings)
        if kind == "hnsw":
            index = faiss.index_factory(rows.shape[1], f"HNSW{HNSW_M}_SQfp16", faiss_metric)
            index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        else:
            index = faiss.index_factory(rows.shape[1], f"IVF{ivf_lists(len(rows))},SQfp16", faiss_metric)
            index.by_residual = False  # codes hold the vectors themselves: exact fp16
            index.set_direct_map_type(faiss.DirectMap.Array)
        sample = np.random.default_rng(0).permutation(len(rows))[:IVF_TRAIN_ROWS]
        index.train(rows[np.sort(sample)])
        ann = cls(kind, metric, index)
        ann.add(embeddings)
        return ann

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def add(self, embeddings: torch.Tensor) -> None:
        """Append rows (after the existing ones)."""
        if len(embeddings):
            self.index.add(_rows(embeddings))

    def search(self, queries: torch.Tensor, depth: int) -> torch.Tensor:
        """Row numbers ``[Nq, depth]`` of each query's nearest passages, best first; -1 where fewer were found.

        Search effort follows the depth: HNSW ``efSearch = 2 * depth``; IVF probes a quarter of its lists (at
        least 1) and enough lists to hold ``depth`` vectors on average (an eighth kept 0.85-0.90 of the exact
        top-10 on MS MARCO-mini and SciFact, a quarter 0.95-0.97: docs/search.md).
        """
        faiss = _faiss()
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(2 * depth, 16))
        else:
            lists = self.index.nlist
            per_list = max(1, len(self) // lists)
            params = faiss.SearchParametersIVF(nprobe=min(lists, max(1, lists // 4, math.ceil(depth / per_list))))
        _, found = self.index.search(_rows(queries), depth, params=params)
        return torch.as_tensor(found, dtype=torch.long)

    def embeddings(self) -> torch.Tensor:
        """The stored vectors ``[N, D]`` in half precision (exactly the fp16 embeddings that were added)."""
        rows = self.index.reconstruct_n(0, len(self)) if len(self) else np.zeros((0, self.index.d), np.float32)
        return torch.from_numpy(rows).half()

    def save(self, path: str) -> None:
        _faiss().write_index(self.index, path)

    @classmethod
    def load(cls, path: str, kind: str, metric: str) -> "AnnIndex":
        return cls(kind, metric, _faiss().read_index(path))
