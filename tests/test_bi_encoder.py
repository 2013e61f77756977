"""The BeLLM-style bi-encoder baseline and its losses, checked against plain loops."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from tiny import tiny_llama, tiny_tokenizer
from transformers import LlamaModel

from baselines.bi_encoder import BELLM_PROMPT, BiEncoder, BiEncoderSettings, bi_encoder_loss_terms, pair_loss_terms
from baselines.bi_encoder_losses import angle_loss, cosine_loss, info_nce_loss
from distil.losses import ranking_loss
from modeling_d2llm import D2LLMModel

TEXTS = ["the cat sat on the mat", "dog", "what is the capital of france", "a big red apple"]
BATCH = {
    "queries": ["what is the capital of france", "who sat on the mat", "what do birds do"],
    "positives": ["paris is the capital city of france", "the cat sat on the mat", "a bird flew in the sky"],
    "negatives": [["the river bank"], ["a dog ran"], ["fish swam in the sea"]],
}


def make_encoder(padding_side: str = "right", **settings) -> BiEncoder:
    torch.manual_seed(0)
    return BiEncoder(LlamaModel(tiny_llama(num_hidden_layers=3)), tiny_tokenizer(padding_side),
                     BiEncoderSettings(**settings)).eval()


def loop_cos(u: torch.Tensor, v: torch.Tensor) -> float:
    return float(u @ v) / (float(u.norm()) * float(v.norm()))


def loop_ranking(scores: list[float], labels: list[float]) -> float:
    total = 1.0
    for a, (score_a, label_a) in enumerate(zip(scores, labels)):
        for b, (score_b, label_b) in enumerate(zip(scores, labels)):
            if label_a < label_b:
                total += math.exp(score_a - score_b)
    return math.log(total)


def test_info_nce_equals_plain_loop_with_and_without_hard_negatives():
    torch.manual_seed(0)
    q, p, n = torch.randn(4, 6), torch.randn(4, 6), torch.randn(4, 2, 6)
    tau = 0.1
    for negatives in (None, n):
        expected = 0.0
        for i in range(4):
            logits = [loop_cos(q[i], p[j]) / tau for j in range(4)]
            if negatives is not None:
                logits += [loop_cos(q[i], negatives[i, k]) / tau for k in range(2)]
            expected += -(logits[i] - math.log(sum(math.exp(x) for x in logits))) / 4
        assert float(info_nce_loss(q, p, negatives, tau)) == pytest.approx(expected, rel=1e-5)


def test_angle_loss_equals_complex_arithmetic_loop():
    torch.manual_seed(1)
    first, second = torch.randn(5, 8), torch.randn(5, 8)
    labels = torch.tensor([1.0, 0.0, 0.5, 1.0, 0.0])
    scores = []
    for u, v in zip(first.double().tolist(), second.double().tolist()):
        z = [complex(x, y) for x, y in zip(u[:4], u[4:])]
        w = [complex(x, y) for x, y in zip(v[:4], v[4:])]
        norm = math.sqrt(sum(abs(x) ** 2 for x in z)) * math.sqrt(sum(abs(x) ** 2 for x in w))
        quotient = sum(x * y.conjugate() for x, y in zip(z, w)) / norm  # z / w normalised by |z| / |w|
        scores.append(abs(quotient.real + quotient.imag) / 0.05)
    expected = loop_ranking(scores, labels.tolist())
    assert float(angle_loss(first, second, labels, 0.05)) == pytest.approx(expected, rel=1e-5)


def test_cosine_loss_equals_plain_loop():
    torch.manual_seed(2)
    first, second = torch.randn(5, 8), torch.randn(5, 8)
    labels = torch.tensor([3.0, 1.0, 2.0, 0.0, 1.0])
    expected = loop_ranking([loop_cos(u, v) / 0.05 for u, v in zip(first, second)], labels.tolist())
    assert float(cosine_loss(first, second, labels, 0.05)) == pytest.approx(expected, rel=1e-5)


def test_ranking_loss_is_zero_when_no_pair_outranks_another():
    assert float(ranking_loss(torch.randn(4), torch.ones(4))) == 0.0


@pytest.mark.parametrize("pooling", ["mean", "last"])
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("k", [0, 1])
def test_pooling_gives_the_unpadded_embedding_on_either_padding_side(pooling, side, k):
    encoder = make_encoder(side, pooling=pooling, bidirectional_layers=k)
    with torch.no_grad():
        alone = torch.cat([encoder.embed([text]) for text in TEXTS])
        torch.testing.assert_close(encoder.embed(TEXTS), alone, atol=1e-5, rtol=1e-5)


def test_last_token_pooling_reads_the_final_real_token():
    encoder = make_encoder(pooling="last")
    batch = encoder.tokenize(["dog", "the cat sat"])
    with torch.no_grad():
        states = encoder.backbone(**batch).last_hidden_state
        torch.testing.assert_close(encoder(**batch)[0], states[0, 0])


def test_prompt_template_wraps_every_text_and_survives_truncation():
    encoder = make_encoder(prompt_template="query {text} answer")
    assert encoder.tokenize(["dog"])["input_ids"].tolist() == make_encoder().tokenize(["query dog answer"])[
        "input_ids"].tolist()
    short = make_encoder(prompt_template="query {text} answer", max_seq_length=4)
    tokens = short.tokenizer.convert_ids_to_tokens(short.tokenize(["the cat sat on the mat"])["input_ids"][0])
    assert tokens == ["query", "the", "cat", "answer"], "a long text is cut inside the template"
    with pytest.raises(ValueError, match="slot"):
        BiEncoderSettings(prompt_template=BELLM_PROMPT.replace("{text}", ""))


def test_encode_is_normalised_in_input_order_and_similarity_is_cosine():
    encoder = make_encoder()
    encoded = encoder.encode(TEXTS, batch_size=3)
    torch.testing.assert_close(encoded.norm(dim=-1), torch.ones(len(TEXTS)))
    with torch.no_grad():
        torch.testing.assert_close(encoded[1], F.normalize(encoder.embed([TEXTS[1]])[0], dim=-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(BiEncoder.similarity(encoded, encoded).diagonal(), torch.ones(len(TEXTS)))


def batch_terms(encoder: BiEncoder, batch: dict, **weights) -> dict[str, torch.Tensor]:
    """``bi_encoder_loss_terms`` of a text batch (queries, positives, optional negatives [B][K])."""
    negatives = batch.get("negatives") or []
    size, k = len(batch["queries"]), len(negatives[0]) if negatives else 0
    embeddings = encoder.embed(batch["queries"] + batch["positives"] + [text for row in negatives for text in row])
    hard = embeddings[2 * size :].view(size, k, -1) if k else None
    return bi_encoder_loss_terms(embeddings[:size], embeddings[size : 2 * size], hard, **weights)


def optimise(encoder: BiEncoder, batch: dict, steps: int, lr: float) -> list[float]:
    """Plain AdamW steps on the summed terms of one batch; the losses before each step."""
    optimizer = torch.optim.AdamW([p for p in encoder.parameters() if p.requires_grad], lr=lr)
    encoder.train()
    losses = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = sum(batch_terms(encoder, batch).values())
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.parametrize("negatives", [True, False])
def test_training_steps_lower_the_loss(negatives):
    encoder = make_encoder(bidirectional_layers=1)
    batch = BATCH if negatives else {key: BATCH[key] for key in ("queries", "positives")}
    losses = optimise(encoder, batch, steps=12, lr=3e-3)
    assert losses[-1] < 0.5 * losses[0]
    assert set(batch_terms(encoder, batch, angle_weight=1.0, cosine_weight=1.0)) == {"info_nce", "angle", "cosine"}


def test_pair_terms_rank_graded_pairs_by_target_and_reduce_to_the_batch_terms_for_positive_pairs():
    torch.manual_seed(1)
    u, v = torch.randn(4, 6), torch.randn(4, 6)
    targets = torch.tensor([0.2, 1.0, 0.6, 0.0])
    parts = pair_loss_terms(u, v, targets, temperature=0.1, ibn_weight=0.0, angle_weight=0.5, cosine_weight=2.0)
    cosines = [loop_cos(u[i], v[i]) / 0.1 for i in range(4)]
    assert parts["cosine"].item() == pytest.approx(2.0 * loop_ranking(cosines, targets.tolist()), rel=1e-5)
    assert parts["angle"].item() == pytest.approx(0.5 * angle_loss(u, v, targets, 0.1).item(), rel=1e-6)
    ones = torch.ones(4)
    for name, value in pair_loss_terms(u, v, ones, temperature=0.1, angle_weight=1.0).items():
        expected = bi_encoder_loss_terms(u, v, None, temperature=0.1, angle_weight=1.0)[name]
        assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="positive pairs only"):
        pair_loss_terms(u, v, targets, ibn_weight=1.0)
    with pytest.raises(ValueError, match="nothing ranks graded pairs"):
        pair_loss_terms(u, v, targets, ibn_weight=0.0, angle_weight=0.0)


def test_saved_lora_bi_encoder_reloads_and_feeds_d2llm(tmp_path):
    encoder = make_encoder(pooling="last", prompt_template=BELLM_PROMPT, bidirectional_layers=1).enable_lora(r=4)
    optimise(encoder, BATCH, steps=1, lr=1e-2)
    encoder.eval()
    encoder.save_pretrained(str(tmp_path))
    reloaded = BiEncoder.from_pretrained(str(tmp_path), attn_implementation="sdpa")
    assert reloaded.settings == encoder.settings and not reloaded.has_lora
    torch.testing.assert_close(reloaded.encode(TEXTS), encoder.encode(TEXTS), atol=1e-5, rtol=1e-5)
    student = D2LLMModel.from_backbone(str(tmp_path), pma_num_heads=4, bidirectional_layers=1)
    assert student.backbone.layers[-1].self_attn.is_causal is False
