"""Losses of the bi-encoder baseline: in-batch InfoNCE and AnglE's angle (and cosine) ranking objectives.

Pure functions of embeddings; no model inside. Notation: ``u, v`` a pair of embeddings, ``cos(u, v)`` their cosine,
``tau`` a temperature (AnglE and BeLLM scale by ``1 / tau = 20``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distil.losses import ranking_loss


def info_nce_loss(queries: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None = None,
                  temperature: float = 0.05) -> torch.Tensor:
    """In-batch contrastive loss with optional hard negatives.

    ``queries [B, d]``, ``positives [B, d]``, ``negatives [B, K, d]`` (query i's own hard negatives). Query i's
    candidates are every positive of the batch and its own K negatives:
    ``L = mean_i -log( e^{cos(q_i, p_i)/tau} / (sum_j e^{cos(q_i, p_j)/tau} + sum_k e^{cos(q_i, n_ik)/tau}) )``.
    """
    q, p = F.normalize(queries, dim=-1), F.normalize(positives, dim=-1)
    logits = q @ p.T
    if negatives is not None:
        logits = torch.cat([logits, torch.einsum("bd,bkd->bk", q, F.normalize(negatives, dim=-1))], dim=1)
    target = torch.arange(q.shape[0], device=q.device)
    return F.cross_entropy(logits / temperature, target)


def angle_scores(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """AnglE's angle score of each row pair ``[P, d], [P, d] -> [P]`` (``d`` even).

    Each embedding is read as a complex vector: ``z = a + i b`` from its two halves ``[a ; b]``, ``w = c + i d``.
    The quotient ``z / w = z conj(w) / |w|^2``, normalised by its modulus ratio ``|z| / |w|``, keeps only the phase
    difference: ``q = z conj(w) / (|z| |w|)``, componentwise ``(ac + bd) + i (bc - ad)`` over ``|z| |w|``. As in
    AnglE's reference code the score is ``|sum_k (Re q_k + Im q_k)|``: it is ``|cos(u, v) + sin-part|``, largest
    when the phases of ``z`` and ``w`` agree, so it ranks like a similarity.
    """
    a, b = first.chunk(2, dim=-1)
    c, d = second.chunk(2, dim=-1)
    norms = first.norm(dim=-1) * second.norm(dim=-1)
    real = (a * c + b * d).sum(-1)
    imaginary = (b * c - a * d).sum(-1)
    return ((real + imaginary) / norms).abs()


def angle_loss(first: torch.Tensor, second: torch.Tensor, labels: torch.Tensor, temperature: float = 0.05
               ) -> torch.Tensor:
    """AnglE's angle objective: ``ranking_loss(angle_scores(u, v) / tau, labels)`` over the row pairs."""
    return ranking_loss(angle_scores(first, second) / temperature, labels)


def cosine_loss(first: torch.Tensor, second: torch.Tensor, labels: torch.Tensor, temperature: float = 0.05
                ) -> torch.Tensor:
    """AnglE's cosine objective (CoSENT): ``ranking_loss(cos(u, v) / tau, labels)`` over the row pairs."""
    return ranking_loss(F.cosine_similarity(first, second, dim=-1) / temperature, labels)
