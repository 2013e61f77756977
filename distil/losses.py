"""The D2LLM distillation losses (docs/method.md, section 3, which numbers the equations cited here; the paper is
Liao et al., "D2LLM: Decomposed and Distilled Large Language Models for Semantic Search", ACL 2024): one function
per term, and ``distillation_losses``, the total that training calls, built from those same functions.

Notation for one fixed batch of B queries of one task, each with its positive and K hard negatives:
``Z_ib [B, B]`` student IEM logits of (query i, positive of query j); ``Z_h [B, 1+K]`` of (query i, candidate k),
k = 0 the positive; ``S_ib``, ``S_h`` the teacher's yes-probabilities of the same pairs; ``C_T [B, 1+K, 1+K]`` the
teacher's feature cosines over {positive, negatives} of each query; ``y_S [B, 1+K, h]`` the student's IEM branch
vectors. Every loss is a mean over its terms (never a sum), computed in float32 whatever the input dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

LOSS_COMPONENTS = ("ci_inbatch", "ci_hard", "ri_pearson", "ri_pairwise", "fi", "kd")
GOLD_COMPONENT = "gold_ranking"  # the one term of pair batches with gold targets (no teacher)
DIAGNOSTICS = ("logits_hard_mean", "logits_hard_std", "logits_inbatch_mean", "logits_inbatch_std",
               "positive_weight_lowest_share")
HARD_WEIGHTINGS = ("spec", "log_prior", "none")
_EPS = 1e-12


# ====================================================================== teacher scores
def teacher_probabilities(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Teacher yes-probability ``s = softmax([l_yes, l_no] / tau_T)[0] = sigmoid((l_yes - l_no) / tau_T)``
    (docs/method.md, section 1).

    ``logits [..., 2]`` (``[l_yes, l_no]``) -> ``[...]`` in float32.
    """
    if logits.shape[-1] != 2:
        raise ValueError(f"teacher logits must end in [l_yes, l_no] (size 2), got shape {tuple(logits.shape)}")
    if temperature <= 0:
        raise ValueError(f"teacher temperature must be > 0, got {temperature}")
    logits = logits.float()
    return torch.sigmoid((logits[..., 0] - logits[..., 1]) / temperature)


def teacher_scores(logits: torch.Tensor) -> torch.Tensor:
    """Teacher score ``t = l_yes - l_no``: ``logits [..., 2] -> [...]`` in float32; an empty tensor (a batch scored
    without in-batch pairs) gives an empty tensor."""
    if logits.numel() == 0:
        return logits.float().reshape(0)
    if logits.shape[-1] != 2:
        raise ValueError(f"teacher logits must end in [l_yes, l_no] (size 2), got shape {tuple(logits.shape)}")
    return logits[..., 0].float() - logits[..., 1].float()


def hard_weights(teacher_hard: torch.Tensor) -> torch.Tensor:
    """The weights ``W`` of equation (2): ``W[i, 0] = S_h[i, 0]``, ``W[i, k>=1] = 1 - S_h[i, k]`` (float32)."""
    teacher = teacher_hard.float()
    return torch.cat([teacher[:, :1], 1.0 - teacher[:, 1:]], dim=1)


# ====================================================================== contrastive imitation
def inbatch_contrastive_loss(student_inbatch: torch.Tensor, *, tau: float = 1.0, offset: int = 0) -> torch.Tensor:
    """The in-batch part of contrastive imitation, docs/method.md equation (1):

    ``mean_i CE(Z_ib[i, :] / tau_ib, target offset + i)``.

    ``student_inbatch [B, N]`` may hold the positives of several processes, query i's own in column ``offset + i``.
    """
    rows = student_inbatch.shape[0]
    targets = torch.arange(offset, offset + rows, device=student_inbatch.device)
    return F.cross_entropy(student_inbatch.float() / tau, targets)


def hard_contrastive_loss(student_hard: torch.Tensor, teacher_hard: torch.Tensor, *, tau: float = 1.0,
                          weighting: str = "spec") -> torch.Tensor:
    """The hard-negative part of contrastive imitation, ``L_hard`` (``student_hard [B, 1+K]`` logits,
    ``teacher_hard [B, 1+K]`` probabilities, ``W = hard_weights(S_h)``):

    * ``spec``, docs/method.md equation (2): ``mean_i -log softmax_k(W[i, :] * Z_h[i, :] / tau_h)[0]``;
    * ``log_prior``, equation (8), beyond the paper: ``mean_i -log softmax_k(Z_h[i, :] / tau_h + log W[i, :])[0]``
      (W floored at 1e-12): moving all of a row's logits together leaves it unchanged;
    * ``none``: ``mean_i -log softmax_k(Z_h[i, :] / tau_h)[0]``, plain InfoNCE on the gold labels (no teacher).
    """
    weights = hard_weights(teacher_hard)
    if weighting == "spec":
        weighted = weights * student_hard.float() / tau
    elif weighting == "log_prior":
        weighted = student_hard.float() / tau + weights.clamp_min(_EPS).log()
    elif weighting == "none":
        weighted = student_hard.float() / tau
    else:
        raise ValueError(f"hard weighting must be one of {HARD_WEIGHTINGS}, got {weighting!r}")
    return -F.log_softmax(weighted, dim=1)[:, 0].mean()


def contrastive_imitation_loss(student_inbatch: torch.Tensor, student_hard: torch.Tensor, teacher_hard: torch.Tensor,
                               *, alpha: float = 1.0, tau_inbatch: float = 1.0, tau_hard: float = 1.0,
                               inbatch_offset: int = 0, hard_weighting: str = "spec") -> torch.Tensor:
    """Contrastive imitation, docs/method.md equations (1) and (2):
    ``L_CI = inbatch_contrastive_loss + alpha * hard_contrastive_loss`` (see both)."""
    return (inbatch_contrastive_loss(student_inbatch, tau=tau_inbatch, offset=inbatch_offset)
            + alpha * hard_contrastive_loss(student_hard, teacher_hard, tau=tau_hard, weighting=hard_weighting))


# ====================================================================== rank imitation
def pearson_rank_loss(student_hard: torch.Tensor, teacher_hard: torch.Tensor) -> torch.Tensor:
    """The Pearson part of rank imitation, docs/method.md equation (3):
    ``mean_i [1 - pearson(Z_h[i, :], S_h[i, :])]`` over ``[B, 1+K]`` inputs; a constant row (Pearson undefined)
    counts as correlation 0, with a finite loss and gradient."""
    student = student_hard.float() - student_hard.float().mean(dim=1, keepdim=True)
    teacher = teacher_hard.float() - teacher_hard.float().mean(dim=1, keepdim=True)
    student_norm = student.square().sum(dim=1).clamp_min(_EPS).sqrt()
    teacher_norm = teacher.square().sum(dim=1).clamp_min(_EPS).sqrt()
    correlation = (student * teacher).sum(dim=1) / (student_norm * teacher_norm)
    return (1.0 - correlation).mean()


def pairwise_rank_loss(student_hard: torch.Tensor, teacher_hard: torch.Tensor, student_inbatch: torch.Tensor,
                       teacher_inbatch: torch.Tensor, *, scale: float = 1.0) -> torch.Tensor:
    """The pairwise part of rank imitation, docs/method.md equation (4):
    ``mean_{i, k>=1, j!=i} [max(0, S_h[i,k] - S_ib[i,j]) / c * -log sigmoid(Z_h[i,k] - Z_ib[i,j])]``.

    ``student_hard``/``teacher_hard [B, 1+K]``, ``student_inbatch``/``teacher_inbatch [B, B]`` (this batch's own
    block), ``scale`` is c. 0 when B = 1 or K = 0.
    """
    rows, candidates = student_hard.shape
    if rows < 2 or candidates < 2:
        return student_hard.float().sum() * 0.0
    margin = F.relu(teacher_hard.float()[:, 1:, None] - teacher_inbatch.float()[:, None, :]) / scale  # [B, K, B]
    gap = student_hard.float()[:, 1:, None] - student_inbatch.float()[:, None, :]
    off_diagonal = ~torch.eye(rows, dtype=torch.bool, device=student_hard.device)[:, None, :]
    terms = margin * F.softplus(-gap) * off_diagonal  # -log sigmoid(x) = softplus(-x)
    return terms.sum() / (rows * (candidates - 1) * (rows - 1))


def rank_imitation_loss(student_hard: torch.Tensor, teacher_hard: torch.Tensor, student_inbatch: torch.Tensor,
                        teacher_inbatch: torch.Tensor, *, beta: float = 1.0, gamma: float = 0.01,
                        scale: float = 1.0) -> torch.Tensor:
    """Rank imitation, docs/method.md equations (3) and (4):
    ``L_RI = beta * pearson_rank_loss + gamma * pairwise_rank_loss`` (see both)."""
    return (beta * pearson_rank_loss(student_hard, teacher_hard)
            + gamma * pairwise_rank_loss(student_hard, teacher_hard, student_inbatch, teacher_inbatch, scale=scale))


# ====================================================================== feature imitation
def cosine_matrices(features: torch.Tensor) -> torch.Tensor:
    """``C[i][a, b] = cos(y[i, a], y[i, b])``: ``[B, M, h] -> [B, M, M]``; a zero vector has cosine 0 with all."""
    unit = F.normalize(features.float(), dim=-1, eps=1e-8)
    return unit @ unit.transpose(1, 2)


def feature_imitation_loss(student_features: torch.Tensor, teacher_feature_cosine: torch.Tensor, *,
                           eta: float = 0.001) -> torch.Tensor:
    """Feature imitation, docs/method.md equation (5):
    ``L_FI = eta * mean_{i, a, b} (C_T[i][a, b] - C_S[i][a, b])^2``.

    ``student_features [B, 1+K, h]`` are the IEM branch vectors ``y_S``; ``C_S[i]`` is their cosine matrix
    (``cosine_matrices``); ``teacher_feature_cosine [B, 1+K, 1+K]`` is ``C_T``.
    """
    return eta * (teacher_feature_cosine.float() - cosine_matrices(student_features)).square().mean()


# ====================================================================== listwise distillation
def listwise_distillation_loss(student_hard: torch.Tensor, teacher_hard_scores: torch.Tensor,
                               student_inbatch: torch.Tensor | None = None,
                               teacher_inbatch_scores: torch.Tensor | None = None, *, kd_weight: float = 1.0,
                               tau_teacher: float = 1.0, tau_student: float = 1.0) -> torch.Tensor:
    """Listwise distillation, docs/method.md equation (7), beyond the paper (D2LLM has no such term; Tevatron's
    and FlagEmbedding's distillation use it):

    ``L_KD = kd_weight * mean_i KL(softmax(t_i / tau_T) || softmax(Z_i / tau_S))``
    where query i's list holds its 1+K candidates (``Z_h[i, :]``, ``t_h[i, :]``) and, where in-batch teacher scores
    exist, the other queries' positives (``Z_ib[i, j]``, ``t_ib[i, j]``, j != i). Teacher scores are raw
    ``t = l_yes - l_no`` (``teacher_scores``), not probabilities.

    ``student_hard``/``teacher_hard_scores [B, 1+K]``; ``student_inbatch``/``teacher_inbatch_scores [B, B]``, or
    ``teacher_inbatch_scores`` None or empty (scored without in-batch pairs): the 1+K candidates only.
    """
    student, teacher = student_hard.float(), teacher_hard_scores.float()
    if teacher_inbatch_scores is not None and teacher_inbatch_scores.numel():
        if student_inbatch is None:
            raise ValueError("in-batch teacher scores need the student's in-batch logits")
        rows = student.shape[0]
        off_diagonal = ~torch.eye(rows, dtype=torch.bool, device=student.device)
        student = torch.cat([student, student_inbatch.float()[off_diagonal].view(rows, rows - 1)], dim=1)
        teacher = torch.cat([teacher, teacher_inbatch_scores.float()[off_diagonal].view(rows, rows - 1)], dim=1)
    teacher_log = F.log_softmax(teacher / tau_teacher, dim=1)
    student_log = F.log_softmax(student / tau_student, dim=1)
    return kd_weight * (teacher_log.exp() * (teacher_log - student_log)).sum(dim=1).mean()


# ====================================================================== gold labels (no teacher)
def ranking_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CoSENT-style ranking of pair scores by label: ``L = log(1 + sum_{y_a < y_b} e^{s_a - s_b})``.

    ``scores [P]`` (already divided by the temperature), ``labels [P]`` (binary or graded); every pair ``a`` with a
    lower label than pair ``b`` should score lower. 0 terms (all labels equal) give ``log 1 = 0``.
    """
    lower = labels[:, None] < labels[None, :]
    differences = (scores[:, None] - scores[None, :])[lower]
    return torch.logsumexp(torch.cat([differences.new_zeros(1), differences]), dim=0)


def gold_ranking_loss(student_pairs: torch.Tensor, targets: torch.Tensor, *, tau: float = 1.0) -> torch.Tensor:
    """CoSENT over one pair batch's gold targets, docs/method.md equation (9) (beyond the paper: the student's
    architecture trained without a teacher):
    ``L_gold = log(1 + sum_{t_a < t_b} exp((z_a - z_b) / tau))``.

    ``student_pairs [P]`` IEM logits of the batch's (query a, passage a) pairs, ``targets [P]`` gold scores (graded
    or 1 / 0). A batch whose targets are all equal ranks nothing and gives 0.
    """
    return ranking_loss(student_pairs.float() / tau, targets.float())


# ====================================================================== the total
@dataclass(frozen=True)
class LossWeights:
    """Weights and temperatures of docs/method.md, section 3 (defaults as there)."""

    alpha: float = 1.0
    beta: float = 1.0
    gamma: float = 0.01
    eta: float = 0.001
    tau_inbatch: float = 1.0
    tau_hard: float = 1.0
    scale: float = 1.0
    teacher_temperature: float = 1.0
    kd_weight: float = 0.0
    kd_teacher_temperature: float = 1.0
    kd_student_temperature: float = 1.0
    hard_weighting: str = "spec"


def distillation_losses(student_inbatch: torch.Tensor, student_hard: torch.Tensor, student_features: torch.Tensor,
                        teacher_inbatch: torch.Tensor | None, teacher_hard: torch.Tensor,
                        teacher_feature_cosine: torch.Tensor, weights: LossWeights,
                        inbatch_offset: int = 0, teacher_hard_scores: torch.Tensor | None = None,
                        teacher_inbatch_scores: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The weighted terms of ``L = L_CI + L_RI + L_FI (+ L_KD)`` (docs/method.md, equation (6)) by name
    (``LOSS_COMPONENTS``); they sum to ``L``.

    ``student_inbatch [B, N]`` holds every gathered positive (own block at ``inbatch_offset``); the pairwise rank
    and listwise terms use the own ``[B, B]`` block, since the teacher's in-batch scores only cover this batch.
    ``teacher_inbatch`` None (batches scored without in-batch pairs) needs ``gamma = 0``; the pairwise term is then
    0. ``kd`` is 0 unless ``weights.kd_weight > 0``, which needs ``teacher_hard_scores`` (``t = l_yes - l_no``) and
    takes ``teacher_inbatch_scores`` where they exist (see ``listwise_distillation_loss``).
    """
    rows = student_hard.shape[0]
    own_block = student_inbatch[:, inbatch_offset : inbatch_offset + rows]
    if teacher_inbatch is None:
        if weights.gamma:
            raise ValueError(f"gamma = {weights.gamma} needs in-batch teacher scores (teacher_inbatch_logits)")
        teacher_inbatch = torch.zeros_like(own_block)
    return {
        "ci_inbatch": inbatch_contrastive_loss(student_inbatch, tau=weights.tau_inbatch, offset=inbatch_offset),
        "ci_hard": weights.alpha * hard_contrastive_loss(student_hard, teacher_hard, tau=weights.tau_hard,
                                                         weighting=weights.hard_weighting),
        "ri_pearson": weights.beta * pearson_rank_loss(student_hard, teacher_hard),
        "ri_pairwise": weights.gamma * pairwise_rank_loss(student_hard, teacher_hard, own_block, teacher_inbatch,
                                                          scale=weights.scale),
        "fi": feature_imitation_loss(student_features, teacher_feature_cosine, eta=weights.eta),
        "kd": _weighted_listwise(student_hard, own_block, weights, teacher_hard_scores, teacher_inbatch_scores),
    }


def _weighted_listwise(student_hard: torch.Tensor, student_inbatch: torch.Tensor, weights: LossWeights,
                       teacher_hard_scores: torch.Tensor | None,
                       teacher_inbatch_scores: torch.Tensor | None) -> torch.Tensor:
    """``kd_weight * L_KD``, or a constant 0 when ``kd_weight`` is 0."""
    if weights.kd_weight == 0:
        return torch.zeros((), device=student_hard.device)
    if teacher_hard_scores is None:
        raise ValueError("kd_weight > 0 needs the teacher's hard scores t = l_yes - l_no")
    return listwise_distillation_loss(student_hard, teacher_hard_scores, student_inbatch, teacher_inbatch_scores,
                                      kd_weight=weights.kd_weight, tau_teacher=weights.kd_teacher_temperature,
                                      tau_student=weights.kd_student_temperature)


# ====================================================================== diagnostics
def training_diagnostics(student_hard: torch.Tensor, student_inbatch: torch.Tensor,
                         teacher_hard: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the student's logits do, by name (``DIAGNOSTICS``): mean and standard deviation (over all entries, no
    Bessel correction) of ``Z_h`` and ``Z_ib``, and ``positive_weight_lowest_share`` (``lowest_positive_weight_share``
    of the teacher probabilities ``S_h``): the rows where the weighted hard term (2) can fall without ranking."""
    hard, inbatch = student_hard.detach().float(), student_inbatch.detach().float()
    return {
        "logits_hard_mean": hard.mean(), "logits_hard_std": hard.std(correction=0),
        "logits_inbatch_mean": inbatch.mean(), "logits_inbatch_std": inbatch.std(correction=0),
        "positive_weight_lowest_share": lowest_positive_weight_share(teacher_hard.detach()),
    }


def lowest_positive_weight_share(teacher_hard: torch.Tensor) -> torch.Tensor:
    """Share of rows i with ``W[i, 0] < min_{k>=1} W[i, k]`` (``W = hard_weights(S_h)``; docs/method.md, the caveat
    of section 3.2).

    In those rows the weighted hard term ``-log softmax_k(W[i, :] * Z_h[i, :] / tau)[0]`` falls towards 0 as all of the
    row's logits fall together, ordering nothing. ``teacher_hard [B, 1+K]`` probabilities -> a float32 scalar.
    """
    weights = hard_weights(teacher_hard)
    return (weights[:, 0] < weights[:, 1:].min(dim=1).values).float().mean()
