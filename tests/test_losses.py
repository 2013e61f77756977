"""The imitation losses of docs/method.md, section 3, against plain loops, hand-computed cases and edge cases."""

from __future__ import annotations

import math

import pytest
import torch

from distil.losses import (
    LOSS_COMPONENTS,
    LossWeights,
    contrastive_imitation_loss,
    distillation_losses,
    feature_imitation_loss,
    listwise_distillation_loss,
    lowest_positive_weight_share,
    rank_imitation_loss,
    teacher_probabilities,
    teacher_scores,
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


def loop_contrastive_log_prior(z_h, s_h, tau_h=1.0) -> float:
    total = 0.0
    for i in range(len(z_h)):
        weights = [s_h[i][k] if k == 0 else 1.0 - s_h[i][k] for k in range(len(z_h[i]))]
        total += -_log_softmax_at([z / tau_h + math.log(w) for z, w in zip(z_h[i], weights)], 0)
    return total / len(z_h)


def loop_listwise(z_h, t_h, z_ib=None, t_ib=None, kd=1.0, tau_t=1.0, tau_s=1.0) -> float:
    rows, total = len(z_h), 0.0
    for i in range(rows):
        student, teacher = list(z_h[i]), list(t_h[i])
        if t_ib:
            student += [z_ib[i][j] for j in range(rows) if j != i]
            teacher += [t_ib[i][j] for j in range(rows) if j != i]
        for n in range(len(student)):
            log_p = _log_softmax_at([t / tau_t for t in teacher], n)
            total += math.exp(log_p) * (log_p - _log_softmax_at([z / tau_s for z in student], n))
    return kd * total / rows


def loop_lowest_positive_weight_share(s_h) -> float:
    lowest = sum(1 for row in s_h if row[0] < min(1.0 - s for s in row[1:]))
    return lowest / len(s_h)


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


# ---------------------------------------------------------------------- beyond the paper: listwise distillation
@pytest.mark.parametrize("seed,rows,negatives", [(0, 4, 3), (1, 2, 1), (2, 5, 6), (3, 1, 2)])
@pytest.mark.parametrize("kd,tau_t,tau_s", [(1.0, 1.0, 1.0), (0.3, 2.0, 0.05)])
def test_listwise_distillation_matches_loop_with_inbatch_positives(seed, rows, negatives, kd, tau_t, tau_s):
    z_ib, z_h, *_ = _random_case(seed, rows, negatives)
    generator = torch.Generator().manual_seed(100 + seed)
    t_h = torch.randn(rows, 1 + negatives, generator=generator, dtype=torch.float64) * 4
    t_ib = torch.randn(rows, rows, generator=generator, dtype=torch.float64) * 4
    got = listwise_distillation_loss(z_h, t_h, z_ib, t_ib, kd_weight=kd, tau_teacher=tau_t, tau_student=tau_s)
    want = loop_listwise(z_h.tolist(), t_h.tolist(), z_ib.tolist(), t_ib.tolist(), kd, tau_t, tau_s)
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_listwise_distillation_without_inbatch_scores_uses_only_the_hard_candidates():
    z_ib, z_h, *_ = _random_case(7, rows=4, negatives=3)
    t_h = torch.randn(4, 4, dtype=torch.float64)
    want = loop_listwise(z_h.tolist(), t_h.tolist())
    empty = torch.zeros(0)  # a row scored without in-batch pairs: teacher_inbatch_logits == []
    assert teacher_scores(empty).shape == (0,)
    assert listwise_distillation_loss(z_h, t_h, z_ib, teacher_scores(empty)).item() == pytest.approx(want, rel=1e-6)
    assert listwise_distillation_loss(z_h, t_h).item() == pytest.approx(want, rel=1e-6)
    with_inbatch = listwise_distillation_loss(z_h, t_h, z_ib, torch.randn(4, 4, dtype=torch.float64))
    assert with_inbatch.item() != pytest.approx(want, rel=1e-3)  # the in-batch positives do change the lists


def test_listwise_distillation_is_zero_when_student_matches_teacher_and_shift_invariant():
    t_h = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, -3.0]])
    t_ib = torch.tensor([[2.0, -4.0], [1.5, 0.0]])
    assert listwise_distillation_loss(t_h + 7.0, t_h, t_ib + 7.0, t_ib).item() == pytest.approx(0.0, abs=1e-6)
    assert listwise_distillation_loss(-t_h, t_h, -t_ib, t_ib).item() > 0.5


def test_teacher_scores_are_yes_minus_no_logits():
    logits = torch.tensor([[[2.0, -1.0], [0.5, 0.5]]])
    assert torch.equal(teacher_scores(logits), torch.tensor([[3.0, 0.0]]))
    with pytest.raises(ValueError, match="size 2"):
        teacher_scores(torch.zeros(2, 3))


def test_kd_component_is_zero_by_default_and_its_weighted_term_when_on():
    z_ib, z_h, s_h, s_ib, features, c_t = _random_case(8)
    assert distillation_losses(z_ib, z_h, features, s_ib, s_h, c_t, LossWeights())["kd"].item() == 0.0
    t_h, t_ib = torch.randn_like(z_h), torch.randn_like(z_ib)
    weights = LossWeights(kd_weight=0.4, kd_teacher_temperature=0.5, kd_student_temperature=2.0)
    gathered = torch.cat([torch.randn_like(z_ib), z_ib], 1)  # second of two processes: own block at offset 4
    got = distillation_losses(gathered, z_h, features, s_ib, s_h, c_t, weights, inbatch_offset=4,
                              teacher_hard_scores=t_h, teacher_inbatch_scores=t_ib)["kd"]
    want = loop_listwise(z_h.tolist(), t_h.tolist(), z_ib.tolist(), t_ib.tolist(), 0.4, 0.5, 2.0)
    assert got.item() == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="teacher's hard scores"):
        distillation_losses(z_ib, z_h, features, s_ib, s_h, c_t, weights)


# ---------------------------------------------------------------------- the hard term's weights
@pytest.mark.parametrize("seed,rows,negatives", [(0, 4, 3), (1, 2, 1), (2, 6, 5)])
def test_lowest_positive_weight_share_matches_loop(seed, rows, negatives):
    s_h = _random_case(seed, rows, negatives)[2]
    assert lowest_positive_weight_share(s_h).item() == pytest.approx(loop_lowest_positive_weight_share(s_h.tolist()))


def test_lowest_positive_weight_share_hand_computed():
    # W rows: [0.3, 0.9, 0.8] (0.3 < 0.8: counted), [0.9, 0.2, 0.5] (not), [0.5, 0.5, 0.6] (0.5 = 0.5: not strict)
    s_h = torch.tensor([[0.3, 0.1, 0.2], [0.9, 0.8, 0.5], [0.5, 0.5, 0.4]])
    assert lowest_positive_weight_share(s_h).item() == pytest.approx(1 / 3)


@pytest.mark.parametrize("seed,rows,negatives", [(0, 4, 3), (1, 2, 1), (2, 6, 5)])
def test_log_prior_hard_weighting_matches_loop(seed, rows, negatives):
    z_ib, z_h, s_h, *_ = _random_case(seed, rows, negatives)
    got = contrastive_imitation_loss(z_ib, z_h, s_h, alpha=1.0, tau_hard=0.5, hard_weighting="log_prior")
    want = loop_contrastive(z_ib.tolist(), z_h.tolist(), s_h.tolist(), alpha=0.0) + loop_contrastive_log_prior(
        z_h.tolist(), s_h.tolist(), tau_h=0.5)
    assert got.item() == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("seed,rows,negatives", [(0, 4, 3), (3, 3, 2)])
def test_unweighted_hard_term_is_infonce_on_the_gold_labels(seed, rows, negatives):
    z_ib, z_h, s_h, *_ = _random_case(seed, rows, negatives)
    got = contrastive_imitation_loss(z_ib, z_h, s_h, alpha=1.0, tau_hard=0.5, hard_weighting="none")
    uniform = [[1.0] + [0.0] * negatives for _ in range(rows)]  # W = 1 everywhere, whatever the teacher said
    want = loop_contrastive(z_ib.tolist(), z_h.tolist(), uniform, tau_h=0.5)
    assert got.item() == pytest.approx(want, rel=1e-6)
    other_teacher = contrastive_imitation_loss(z_ib, z_h, s_h.flip(1), alpha=1.0, tau_hard=0.5, hard_weighting="none")
    assert other_teacher.item() == pytest.approx(got.item(), rel=1e-6)


def test_spec_hard_term_falls_when_a_row_sinks_but_log_prior_does_not():
    # the positive's weight is the row's smallest: W = [0.4, 0.9, 0.8]
    z_ib = torch.zeros(1, 1)
    z_h = torch.tensor([[0.0, 0.5, -0.5]])
    s_h = torch.tensor([[0.4, 0.1, 0.2]])
    assert lowest_positive_weight_share(s_h).item() == 1.0
    for weighting, falls in (("spec", True), ("log_prior", False)):
        before = contrastive_imitation_loss(z_ib, z_h, s_h, hard_weighting=weighting).item()
        sunk = contrastive_imitation_loss(z_ib, z_h - 20.0, s_h, hard_weighting=weighting).item()
        if falls:
            assert sunk < 0.01 < before  # ranks nothing, yet the weighted hard term (2) almost vanishes
        else:
            assert sunk == pytest.approx(before, rel=1e-6)


def test_unknown_hard_weighting_is_refused():
    z_ib, z_h, s_h, *_ = _random_case(0)
    with pytest.raises(ValueError, match="hard weighting must be one of"):
        contrastive_imitation_loss(z_ib, z_h, s_h, hard_weighting="normalised")
