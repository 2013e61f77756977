"""Teacher adaptation objectives: pure functions of the teacher's yes/no logits (docs/method.md, section 1.1).

Notation: ``logits[i] = [l_yes, l_no]`` at the last prompt position of pair i, ``p_i = softmax(logits[i])[0]`` the
teacher's probability of "yes", ``z_i = l_yes - l_no = logit(p_i)`` its log-odds, ``t_i`` in [0, 1] the target.

* ``soft_label_loss`` (pointwise, graded), logits [N, 2], targets [N], weights [N]:
  ``mean_i w_i * -(t_i log p_i + (1 - t_i) log(1 - p_i))``;
* ``cosent_loss`` (graded ranking), log-odds [N], targets [N]: ``log(1 + sum_{t_i > t_j} exp(s (z_j - z_i)))``;
* ``group_loss`` (listwise), log-odds [G, 1 + K], positive in column 0: ``mean_g -log softmax(z_g)[0]``.

``soft_label_loss`` with class weights (``class_weights``) is the pointwise objective; without weights, on graded
targets (score / max score) seen in both pair orders, it is sentence-transformers' CrossEncoder recipe for STS-B.
``group_loss`` is the group-wise cross-entropy of FlagEmbedding's LLM reranker and Tevatron's RankLLaMA, taken on
the log-odds the teacher scores with. ``cosent_loss`` (Su, 2022) only orders the pairs of a batch, so it leaves
the probability scale free.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def log_odds(logits: torch.Tensor) -> torch.Tensor:
    """``z = l_yes - l_no`` of ``[..., 2]`` answer logits, in float32."""
    logits = logits.float()
    return logits[..., 0] - logits[..., 1]


def soft_label_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``mean_i w_i * -(t_i log p_i + (1 - t_i) log(1 - p_i))`` with ``p = softmax([l_yes, l_no])[0]``; w = 1 if None.

    Equal to a binary cross-entropy with logits on ``z = l_yes - l_no``.
    """
    per_pair = F.binary_cross_entropy_with_logits(log_odds(logits), targets.float(), reduction="none")
    if weights is not None:
        per_pair = per_pair * weights.float()
    return per_pair.mean()


def cosent_loss(scores: torch.Tensor, targets: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """CoSENT: ``log(1 + sum over pairs (i, j) with t_i > t_j of exp(scale * (z_j - z_i)))``; 0 when no pair is
    ordered (all targets equal)."""
    scores, targets = scores.float(), targets.float()
    differences = scale * (scores[None, :] - scores[:, None])  # [i, j] = s (z_j - z_i)
    ordered = targets[:, None] > targets[None, :]
    terms = differences[ordered]
    return torch.logsumexp(torch.cat([terms.new_zeros(1), terms]), dim=0)


def group_loss(scores: torch.Tensor) -> torch.Tensor:
    """Group-wise cross-entropy ``mean_g -log softmax(z_g)[0]`` over ``[G, 1 + K]`` log-odds, positive first."""
    return F.cross_entropy(scores.float(), torch.zeros(len(scores), dtype=torch.long, device=scores.device))


def class_weights(targets: Sequence[float]) -> list[float]:
    """Per-pair weights giving positives (target >= 0.5) and negatives equal total weight, mean weight 1."""
    positives = sum(target >= 0.5 for target in targets)
    negatives = len(targets) - positives
    if not positives or not negatives:
        return [1.0] * len(targets)
    return [len(targets) / (2 * (positives if target >= 0.5 else negatives)) for target in targets]


PAIR_LOSSES = ("bce", "cosent")


def adaptation_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, pair_index: torch.Tensor,
                    group_index: torch.Tensor, pair_loss: str = "bce", cosent_scale: float = 1.0) -> torch.Tensor:
    """The loss of one batch of rows (``teacher.adapt_data``): ``(P * L_pair + G * L_group) / (P + G)``.

    ``L_pair`` is ``soft_label_loss`` (``pair_loss="bce"``) or ``cosent_loss`` over the P prompts ``pair_index``
    of ``logits`` [N, 2]; ``L_group`` is ``group_loss`` over the G groups ``group_index`` [G, 1 + K]. Each
    term counts as many times as it has rows, so a batch's mix of pairs and groups follows the data.
    """
    if pair_loss not in PAIR_LOSSES:
        raise ValueError(f"pair_loss must be one of {PAIR_LOSSES}, got {pair_loss!r}")
    pairs, groups = len(pair_index), len(group_index)
    total = logits.new_zeros((), dtype=torch.float32)
    if pairs:
        pair_logits, pair_targets = logits[pair_index], targets[pair_index]
        term = (soft_label_loss(pair_logits, pair_targets, weights[pair_index]) if pair_loss == "bce"
                else cosent_loss(log_odds(pair_logits), pair_targets, cosent_scale))
        total = total + pairs * term
    if groups:
        total = total + groups * group_loss(log_odds(logits)[group_index])
    return total / max(1, pairs + groups)
