"""Teacher adaptation's objectives (``teacher.objectives``) against plain float64 loops: the class-weighted soft
label loss ``w_i * -(t_i log p_i + (1 - t_i) log(1 - p_i))`` with ``p_i = softmax([l_yes, l_no])[0]``, CoSENT over
the log-odds, the listwise group cross-entropy and their mix in one batch; and the first step of ``adapt`` taking
exactly the pointwise loss."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset
from teacher_tiny import tiny_teacher

from preprocess.readers import PAIR_FEATURES
from teacher.adapt import AdaptConfig, adapt, add_lora
from teacher.adapt_data import pair_rows
from teacher.objectives import adaptation_loss, class_weights, cosent_loss, group_loss, soft_label_loss

TARGETS = [1.0, 0.8, 0.6, 0.5, 0.45, 0.2, 0.0, 0.9, 1.0, 0.7]  # soft; 7 positives (0.5 counts) and 3 negatives


def plain_class_weights(targets: list[float]) -> list[float]:
    """Each class gets half of the total weight ``len(targets)``, shared equally by its pairs (float64)."""
    positives = [index for index, target in enumerate(targets) if target >= 0.5]
    negatives = [index for index, target in enumerate(targets) if target < 0.5]
    if not positives or not negatives:
        return [1.0] * len(targets)
    weights = [0.0] * len(targets)
    for members in (positives, negatives):
        for index in members:
            weights[index] = (len(targets) / 2) / len(members)
    return weights


def weighted_soft_label_loss(logits: list[list[float]], targets: list[float], weights: list[float]) -> float:
    """The mean over pairs of ``w * -(t log p + (1 - t) log(1 - p))``, ``p = softmax([l_yes, l_no])[0]``, float64."""
    total = 0.0
    for (yes, no), target, weight in zip(logits, targets, weights):
        p_yes = math.exp(yes) / (math.exp(yes) + math.exp(no))
        total += weight * -(target * math.log(p_yes) + (1 - target) * math.log(1 - p_yes))
    return total / len(targets)


@pytest.mark.parametrize("targets", [TARGETS, [1.0, 0.0, 0.0, 0.0], [0.9, 0.7], [0.1, 0.0, 0.2]])
def test_class_weights_match_a_float64_loop(targets):
    weights = class_weights(targets)
    assert weights == pytest.approx(plain_class_weights(targets), rel=1e-12)
    assert sum(weights) == pytest.approx(len(targets))


def test_the_first_adaptation_step_loss_is_the_class_weighted_soft_label_cross_entropy():
    words = ["cat", "dog", "bird", "fish", "sun", "moon", "tree", "apple", "tea", "river"]
    rows = [{"query": f"the {word} sat", "passage": f"a {other} ran", "target": target, "task": "symmetric",
             "language": "en"} for word, other, target in zip(words, reversed(words), TARGETS)]
    pairs = Dataset.from_list(rows, features=PAIR_FEATURES)
    teacher = tiny_teacher(seed=2)
    with torch.no_grad():
        teacher.model.lm_head.weight.mul_(40)  # yes/no logits far apart, so that every term of the loss counts
        logits = teacher.score(pairs["query"], pairs["passage"], "symmetric").double().tolist()
    expected = weighted_soft_label_loss(logits, TARGETS, plain_class_weights(TARGETS))
    config = AdaptConfig(epochs=1, batch_size=len(TARGETS), lr=1e-2, seed=0, lora_r=4, lora_alpha=8,
                         lora_dropout=0.0)
    add_lora(teacher, config)  # a fresh LoRA leaves the logits unchanged: its B matrices are zero
    losses = adapt(teacher, pair_rows(pairs), config).losses
    assert len(losses) == 1 and losses[0] == pytest.approx(expected, rel=1e-5)
    unweighted = weighted_soft_label_loss(logits, TARGETS, [1.0] * len(TARGETS))
    assert abs(unweighted - expected) > 0.05 * expected  # a loss without the class weights would fail


def plain_cosent(scores: list[float], targets: list[float], scale: float) -> float:
    """``log(1 + sum over t_i > t_j of exp(scale (z_j - z_i)))`` by a double loop, float64."""
    total = 1.0
    for i, (score_i, target_i) in enumerate(zip(scores, targets)):
        for j, (score_j, target_j) in enumerate(zip(scores, targets)):
            if target_i > target_j:
                total += math.exp(scale * (score_j - score_i))
    return math.log(total)


def plain_group(scores: list[list[float]]) -> float:
    """Mean over groups of ``-log(exp(z_0) / sum_k exp(z_k))``, float64."""
    return sum(-math.log(math.exp(row[0]) / sum(math.exp(value) for value in row)) for row in scores) / len(scores)


def random_logits(count: int, seed: int) -> torch.Tensor:
    return torch.randn(count, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3


def test_soft_label_loss_matches_a_float64_loop_with_and_without_weights():
    logits = random_logits(len(TARGETS), 0)
    weights = plain_class_weights(TARGETS)
    got = soft_label_loss(logits, torch.tensor(TARGETS), torch.tensor(weights)).item()
    assert got == pytest.approx(weighted_soft_label_loss(logits.tolist(), TARGETS, weights), rel=1e-5)
    plain = soft_label_loss(logits, torch.tensor(TARGETS)).item()
    assert plain == pytest.approx(weighted_soft_label_loss(logits.tolist(), TARGETS, [1.0] * len(TARGETS)), rel=1e-5)


@pytest.mark.parametrize("scale", [1.0, 5.0])
def test_cosent_loss_matches_a_double_loop_and_ignores_ties(scale):
    scores = (random_logits(len(TARGETS), 1)[:, 0]).tolist()
    got = cosent_loss(torch.tensor(scores), torch.tensor(TARGETS), scale).item()
    assert got == pytest.approx(plain_cosent(scores, TARGETS, scale), rel=1e-5)
    assert cosent_loss(torch.tensor(scores), torch.full((len(scores),), 0.5)).item() == pytest.approx(0.0, abs=1e-7)


def test_group_loss_matches_a_float64_loop_with_the_positive_first():
    scores = torch.randn(4, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2
    assert group_loss(scores).item() == pytest.approx(plain_group(scores.tolist()), rel=1e-5)
    swapped = scores[:, [1, 0, *range(2, 8)]]
    assert group_loss(swapped).item() != pytest.approx(group_loss(scores).item(), rel=1e-3)


@pytest.mark.parametrize("pair_loss", ["bce", "cosent"])
def test_a_mixed_batch_weighs_the_pair_term_and_the_group_term_by_their_rows(pair_loss):
    """Batch: 3 pair prompts (rows 0-2), then 2 groups of 1 + 2 prompts (rows 3-8)."""
    logits = random_logits(9, 4)
    targets = [0.9, 0.1, 0.6, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    weights = [1.2, 0.7, 1.1] + [1.0] * 6
    got = adaptation_loss(logits, torch.tensor(targets), torch.tensor(weights), torch.tensor([0, 1, 2]),
                          torch.tensor([[3, 4, 5], [6, 7, 8]]), pair_loss).item()
    odds = [yes - no for yes, no in logits.tolist()]
    pair = (weighted_soft_label_loss(logits[:3].tolist(), targets[:3], weights[:3]) if pair_loss == "bce"
            else plain_cosent(odds[:3], targets[:3], 1.0))
    group = plain_group([odds[3:6], odds[6:9]])
    assert got == pytest.approx((3 * pair + 2 * group) / 5, rel=1e-5)
