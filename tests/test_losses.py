"""The imitation losses of SPEC section 3 against plain-loop versions, hand-computed cases and edge cases."""

from __future__ import annotations

import math

import pytest
import torch

from trainer_d2llm import (
    LOSS_COMPONENTS,
    LossWeights,
    contrastive_imitation_loss,
    distillation_losses,
    feature_imitation_loss,
    rank_imitation_loss,
    teacher_probabilities,
)


# ---------------------------------------------------------------------- plain loops over Python floats
def _log_softmax_at(values: list[float], index: int) -> float:
    top = max(values)
    return values[index] - top - math.log(sum(math.exp(v - top) for v in values))


def loop_contrastive(z_ib, z_h, s_h, alpha=1.0, tau_ib=1.0, tau_h=1.0, offset=0) -> float:
    rows = len(z_h)
    inbatch = sum(-_log_softmax_at([v / tau_ib for v in z_ib[i]], offset + i) for i in range(rows)) / rows
    hard = 0.0
    for i in range(rows):
        weighted = [(s_h[i][k] if k == 0 else 1.0 - s_h[i][k]) * z_h[i][k] / tau_h for k in range(len(z_h[i]))]
        hard += -_log_softmax_at(weighted, 0)
    return inbatch + alpha * hard / rows


def _pearson(x: list[float], y: list[float]) -> float:
    mx, my = sum(x) / len(x), sum(y) / len(y)
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y))
    vx, vy = sum((a - mx) ** 2 for a in x), sum((b - my) ** 2 for b in y)
    return cov / math.sqrt(vx * vy)


def loop_rank(z_h, s_h, z_ib, s_ib, beta=1.0, gamma=0.01, c=1.0) -> float:
    rows, candidates = len(z_h), len(z_h[0])
    pearson = sum(1.0 - _pearson(z_h[i], s_h[i]) for i in range(rows)) / rows
    total, count = 0.0, 0
    for i in range(rows):
        for k in range(1, candidates):
            for j in range(rows):
                if j == i:
                    continue
                margin = max(0.0, s_h[i][k] - s_ib[i][j]) / c
                total += margin * -math.log(1.0 / (1.0 + math.exp(-(z_h[i][k] - z_ib[i][j]))))
                count += 1
    return beta * pearson + gamma * total / count


def loop_feature(features, c_t, eta=0.001) -> float:
    total, count = 0.0, 0
    for i, vectors in enumerate(features):
        for a, u in enumerate(vectors):
            for b, v in enumerate(vectors):
                cosine = sum(x * y for x, y in zip(u, v)) / math.sqrt(sum(x * x for x in u) * sum(y * y for y in v))
                total += (c_t[i][a][b] - cosine) ** 2
                count += 1
    return eta * total / count


def _random_case(seed: int, rows: int = 4, negatives: int = 3, hidden: int = 6):
    generator = torch.Generator().manual_seed(seed)
    z_ib = torch.randn(rows, rows, generator=generator, dtype=torch.float64) * 3
    z_h = torch.randn(rows, 1 + negatives, generator=generator, dtype=torch.float64) * 3
    s_h = torch.rand(rows, 1 + negatives, generator=generator, dtype=torch.float64)
    s_ib = torch.rand(rows, rows, generator=generator, dtype=torch.float64)
    features = torch.randn(rows, 1 + negatives, hidden, generator=generator, dtype=torch.float64)
    c_t = torch.rand(rows, 1 + negatives, 1 + negatives, generator=generator, dtype=torch.float64) * 2 - 1
    return z_ib, z_h, s_h, s_ib, features, c_t


# ---------------------------------------------------------------------- against the loops
@pytest.mark.parametrize("seed,rows,negatives", [(0, 4, 3), (1, 2, 1), (2, 6, 5)])
@pytest.mark.parametrize("alpha,tau_ib,tau_h", [(1.0, 1.0, 1.0), (0.3, 0.05, 0.5)])
def test_contrastive_imitation_matches_loop(seed, rows, negatives, alpha, tau_ib, tau_h):
    z_ib, z_h, s_h, *_ = _random_case(seed, rows, negatives)
    got = contrastive_imitation_loss(z_ib, z_h, s_h, alpha=alpha, tau_inbatch=tau_ib, tau_hard=tau_h)
    want = loop_contrastive(z_ib.tolist(), z_h.tolist(), s_h.tolist(), alpha, tau_ib, tau_h)
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_contrastive_imitation_with_gathered_positives_uses_offset_targets():
    z_ib = torch.randn(3, 9, dtype=torch.float64)  # 3 processes of B = 3; this one is the second
    z_h, s_h = torch.randn(3, 4, dtype=torch.float64), torch.rand(3, 4, dtype=torch.float64)
    got = contrastive_imitation_loss(z_ib, z_h, s_h, inbatch_offset=3)
    assert got.item() == pytest.approx(loop_contrastive(z_ib.tolist(), z_h.tolist(), s_h.tolist(), offset=3))


@pytest.mark.parametrize("seed,rows,negatives", [(0, 4, 3), (1, 2, 1), (2, 5, 6)])
@pytest.mark.parametrize("beta,gamma,c", [(1.0, 0.01, 1.0), (0.5, 2.0, 0.25)])
def test_rank_imitation_matches_loop(seed, rows, negatives, beta, gamma, c):
    z_ib, z_h, s_h, s_ib, *_ = _random_case(seed, rows, negatives)
    got = rank_imitation_loss(z_h, s_h, z_ib, s_ib, beta=beta, gamma=gamma, scale=c)
    want = loop_rank(z_h.tolist(), s_h.tolist(), z_ib.tolist(), s_ib.tolist(), beta, gamma, c)
    assert got.item() == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("seed,rows,negatives,hidden", [(0, 4, 3, 6), (1, 1, 1, 2), (2, 3, 7, 16)])
def test_feature_imitation_matches_loop(seed, rows, negatives, hidden):
    *_, features, c_t = _random_case(seed, rows, negatives, hidden)
    got = feature_imitation_loss(features, c_t, eta=0.5)
    assert got.item() == pytest.approx(loop_feature(features.tolist(), c_t.tolist(), eta=0.5), rel=1e-6)


# ---------------------------------------------------------------------- hand-computed small cases
def test_contrastive_imitation_hand_computed():
    z_ib = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    z_h = torch.tensor([[1.0, -1.0], [0.0, 2.0]])
    s_h = torch.tensor([[0.9, 0.2], [0.6, 0.5]])
    # in-batch: row 0 -log(e^2 / (e^2 + 1)), row 1 -log(1/2)
    inbatch = (math.log(1 + math.exp(-2)) + math.log(2)) / 2
    # W = [[0.9, 0.8], [0.6, 0.5]] -> W*Z = [[0.9, -0.8], [0, 1]]
    hard = (math.log(1 + math.exp(-1.7)) + math.log(1 + math.exp(1.0))) / 2
    got = contrastive_imitation_loss(z_ib, z_h, s_h, alpha=0.5)
    assert got.item() == pytest.approx(inbatch + 0.5 * hard, rel=1e-6)


def test_rank_imitation_hand_computed():
    z_ib = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    z_h = torch.tensor([[1.0, -1.0], [0.0, 2.0]])
    s_h = torch.tensor([[0.9, 0.2], [0.6, 0.5]])
    s_ib = torch.tensor([[0.9, 0.3], [0.4, 0.6]])
    # Pearson of two points is +-1: row 0 agrees (1 - 1 = 0), row 1 disagrees (1 + 1 = 2): mean 1.
    # pairwise terms (i, k=1, j != i): (0, 1, 1): max(0, 0.2 - 0.3) = 0; (1, 1, 0): 0.1 / c * -log sigmoid(2 - 1)
    c = 0.5
    pairwise = (0.0 + 0.1 / c * math.log(1 + math.exp(-1.0))) / 2
    got = rank_imitation_loss(z_h, s_h, z_ib, s_ib, beta=1.0, gamma=0.5, scale=c)
    assert got.item() == pytest.approx(1.0 + 0.5 * pairwise, rel=1e-6)


def test_feature_imitation_hand_computed():
    features = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])  # student cosine 1/sqrt(2) off the diagonal
    c_t = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    # squared differences: 0, 1/2, 1/2, 0 -> mean 1/4
    assert feature_imitation_loss(features, c_t, eta=2.0).item() == pytest.approx(0.5, rel=1e-6)


def test_teacher_probability_is_two_way_softmax_with_temperature():
    logits = torch.tensor([[2.0, -1.0], [0.0, 0.0], [-3.0, 1.0]])
    for temperature in (1.0, 2.0, 0.5):
        expected = torch.softmax(logits / temperature, dim=-1)[:, 0]
        assert torch.allclose(teacher_probabilities(logits, temperature), expected)
    assert teacher_probabilities(torch.tensor([[1e4, -1e4]])).item() == 1.0
    with pytest.raises(ValueError, match="size 2"):
        teacher_probabilities(torch.zeros(3, 3))


# ---------------------------------------------------------------------- numerics
def test_constant_rows_keep_loss_and_gradient_finite():
    z_h = torch.full((3, 4), 0.7, requires_grad=True)  # constant student row: Pearson undefined
    s_h = torch.full((3, 4), 0.5)  # constant teacher row
    z_ib = torch.zeros(3, 3, requires_grad=True)
    loss = rank_imitation_loss(z_h, s_h, z_ib, torch.full((3, 3), 0.5)) + contrastive_imitation_loss(z_ib, z_h, s_h)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(z_h.grad).all() and torch.isfinite(z_ib.grad).all()
    # correlation counts as 0 there: the Pearson term is 1 per row
    assert rank_imitation_loss(z_h, s_h, z_ib, torch.ones(3, 3), gamma=0.0).item() == pytest.approx(1.0)


def test_zero_student_features_keep_gradient_finite():
    features = torch.zeros(2, 3, 4, requires_grad=True)  # relu branch vectors can be all zero
    loss = feature_imitation_loss(features, torch.eye(3).expand(2, 3, 3))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(features.grad).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_losses_are_finite_in_half_precision_with_large_logits(dtype):
    z_ib, z_h, s_h, s_ib, features, c_t = _random_case(3, rows=4, negatives=3)
    z_ib = (z_ib * 30).to(dtype).requires_grad_()  # logits up to ~300: exp overflows fp16 without log-softmax
    z_h = (z_h * 30).to(dtype).requires_grad_()
    features = features.to(dtype).requires_grad_()
    losses = distillation_losses(z_ib, z_h, features, s_ib.to(dtype), s_h.to(dtype), c_t.to(dtype), LossWeights())
    total = sum(losses.values())
    total.backward()
    assert torch.isfinite(total)
    for tensor in (z_ib, z_h, features):
        assert tensor.grad.dtype == dtype and torch.isfinite(tensor.grad).all()


def test_components_sum_to_the_three_losses():
    z_ib, z_h, s_h, s_ib, features, c_t = _random_case(4)
    weights = LossWeights(alpha=0.7, beta=0.3, gamma=0.2, eta=0.05, tau_inbatch=0.5, tau_hard=0.2, scale=0.8)
    losses = distillation_losses(z_ib, z_h, features, s_ib, s_h, c_t, weights)
    assert tuple(losses) == LOSS_COMPONENTS
    expected = (contrastive_imitation_loss(z_ib, z_h, s_h, alpha=0.7, tau_inbatch=0.5, tau_hard=0.2)
                + rank_imitation_loss(z_h, s_h, z_ib, s_ib, beta=0.3, gamma=0.2, scale=0.8)
                + feature_imitation_loss(features, c_t, eta=0.05))
    assert sum(losses.values()).item() == pytest.approx(expected.item(), rel=1e-6)


def test_pairwise_rank_term_reads_the_own_block_of_gathered_positives():
    z_ib, z_h, s_h, s_ib, features, c_t = _random_case(5, rows=3)
    gathered = torch.cat([torch.randn(3, 3, dtype=torch.float64), z_ib, torch.randn(3, 3, dtype=torch.float64)], 1)
    local = distillation_losses(z_ib, z_h, features, s_ib, s_h, c_t, LossWeights(gamma=1.0))
    wide = distillation_losses(gathered, z_h, features, s_ib, s_h, c_t, LossWeights(gamma=1.0), inbatch_offset=3)
    assert wide["ri_pairwise"].item() == pytest.approx(local["ri_pairwise"].item())
    assert wide["ci_inbatch"].item() == pytest.approx(
        loop_contrastive(gathered.tolist(), z_h.tolist(), s_h.tolist(), alpha=0.0, offset=3))
