"""Teacher adaptation's loss against plain float64 loops: per pair ``w_i * -(t_i log p_i + (1 - t_i) log(1 - p_i))``
with ``p_i = softmax([l_yes, l_no])[0]``, averaged over the batch, the weights ``w`` from ``class_weights``.

``teacher.adapt`` computes the loss inside its training loop, so it is checked here through the first step's loss
(a step over every pair, taken before any weight moves); a pure loss function, once the module has one, should be
checked against ``weighted_soft_label_loss`` below directly."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset
from teacher_tiny import tiny_teacher

from preprocess.readers import PAIR_FEATURES
from teacher.adapt import AdaptConfig, adapt, add_lora, class_weights

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
    losses = adapt(teacher, pairs, config)
    assert len(losses) == 1 and losses[0] == pytest.approx(expected, rel=1e-5)
    unweighted = weighted_soft_label_loss(logits, TARGETS, [1.0] * len(TARGETS))
    assert abs(unweighted - expected) > 0.05 * expected  # a loss without the class weights would fail
