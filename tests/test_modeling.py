"""D2LLMModel: pooling, IEM scoring, encode, on tiny in-process backbones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig

from configuration_d2llm import D2LLMConfig
from modeling_d2llm import IEM, PMA, D2LLMModel
from tiny import BACKBONES, HIDDEN, tiny_llama, tiny_tokenizer

TEXTS = ["the cat sat on the mat", "dog", "what is the capital of france", "a big red apple"]


def make_model(backbone: str = "llama", **overrides) -> D2LLMModel:
    torch.manual_seed(0)
    config = D2LLMConfig(backbone_config=BACKBONES[backbone]().to_dict(), **{"pma_num_heads": 4,
                                                                             "iem_hidden_size": 16, **overrides})
    model = D2LLMModel(config).eval()
    model.tokenizer = tiny_tokenizer()
    return model


def concatenating_iem(iem: IEM, query: torch.Tensor, passage: torch.Tensor, task: str) -> torch.Tensor:
    """The IEM as the paper writes it: one MLP on ``[y_q ; y_p]``, pair by pair."""
    f1 = F.relu(iem.first(torch.cat([query, passage], dim=-1)))
    y = F.relu(iem.branches[task](f1))
    return iem.output(y).squeeze(-1)


def test_issue_calls_work_as_written():
    config = D2LLMConfig(backbone_config=LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                                     num_hidden_layers=2, num_attention_heads=4).to_dict(),
                         pma_num_heads=4, iem_hidden_size=16)
    model = D2LLMModel(config)
    ids = torch.randint(0, 64, (3, 7))
    embeddings = model(input_ids=ids, attention_mask=torch.ones_like(ids)).embeddings
    assert embeddings.shape == (3, 32)
    assert model.similarity(embeddings, embeddings[:2], task="symmetric").shape == (3, 2)
    assert model.similarity_pairwise(embeddings, embeddings, task="asymmetric").shape == (3,)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_side_gives_the_unpadded_embedding(backbone, side):
    model = make_model(backbone)
    tokenizer = tiny_tokenizer(padding_side=side)
    alone = torch.cat([model(**tokenizer([text], return_tensors="pt")).embeddings for text in TEXTS])
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any(), "the batch must contain padding"
    padded = model(**batch).embeddings
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)


def test_pma_ignores_what_padded_positions_hold():
    pma = PMA(HIDDEN, num_heads=4)
    torch.nn.init.normal_(pma.seeds)
    states = torch.randn(2, 5, HIDDEN)
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 1, 1, 1, 1]])
    garbage = states.clone()
    garbage[mask == 0] = float("nan")
    torch.testing.assert_close(pma(garbage, mask), pma(states, mask))


def test_pma_with_several_seeds_concatenates_them():
    model = make_model(pma_num_seeds=3)
    assert model.encode(TEXTS).shape == (len(TEXTS), 3 * HIDDEN)
    assert model.config.embedding_size == 3 * HIDDEN


def test_pma_heads_must_divide_hidden_size():
    with pytest.raises(ValueError, match="pma_num_heads=5 must divide"):
        D2LLMModel(D2LLMConfig(backbone_config=tiny_llama().to_dict(), pma_num_heads=5, iem_hidden_size=16))


@pytest.mark.parametrize("task", ["symmetric", "asymmetric"])
def test_fast_similarity_equals_concatenating_mlp(task):
    model = make_model()
    queries, passages = torch.randn(3, HIDDEN), torch.randn(5, HIDDEN)
    expected = torch.stack([torch.stack([concatenating_iem(model.iem, q, p, task) for p in passages])
                            for q in queries])
    torch.testing.assert_close(model.similarity(queries, passages, task=task), expected, atol=1e-5, rtol=1e-5)


def test_similarity_chunking_does_not_change_scores():
    model = make_model()
    queries, passages = torch.randn(4, HIDDEN), torch.randn(11, HIDDEN)
    whole = model.similarity(queries, passages, task="asymmetric")
    torch.testing.assert_close(model.similarity(queries, passages, task="asymmetric", chunk_size=3), whole)
    cached = model.project_passages(passages)
    torch.testing.assert_close(model.similarity(queries, None, task="asymmetric", passage_projections=cached), whole)


def test_pairwise_equals_matrix_diagonal_and_score_gives_branch_vectors():
    model = make_model()
    a, b = torch.randn(6, HIDDEN), torch.randn(6, HIDDEN)
    matrix = model.similarity(a, b, task="symmetric")
    torch.testing.assert_close(model.similarity_pairwise(a, b, task="symmetric"), torch.diagonal(matrix))
    logits, features = model.score(a[:, None, :], torch.stack([b, b.flip(0)], dim=1), task="symmetric")
    assert logits.shape == (6, 2) and features.shape == (6, 2, 16)
    torch.testing.assert_close(logits[:, 0], torch.diagonal(matrix))


def test_tasks_have_their_own_branch():
    model = make_model(iem_init="normal")  # the distance init starts every branch at the identity
    a, b = torch.randn(4, HIDDEN), torch.randn(4, HIDDEN)
    assert not torch.allclose(model.similarity_pairwise(a, b, task="symmetric"),
                              model.similarity_pairwise(a, b, task="asymmetric"))


def test_distance_init_scores_by_embedding_distance():
    model = make_model(iem_hidden_size=4096)
    half = model.iem.first.weight[:2048, :HIDDEN]
    torch.testing.assert_close(model.iem.first.weight, torch.cat([torch.cat([half, -half], 1),
                                                                  torch.cat([-half, half], 1)]))
    q, p = torch.randn(5, HIDDEN), torch.randn(7, HIDDEN)
    with torch.no_grad():
        scores = model.similarity(q, p, task="symmetric")
        exact = -(torch.pi / 2) ** 0.5 * (q[:, None, :] - p[None, :, :]).matmul(half.T).abs().mean(-1)
        torch.testing.assert_close(scores, exact, rtol=1e-4, atol=1e-5)
        distance = -torch.cdist(q, p) / HIDDEN ** 0.5
        assert torch.corrcoef(torch.stack([scores.flatten(), distance.flatten()]))[0, 1] > 0.95
        torch.testing.assert_close(scores, model.similarity(q, p, task="asymmetric"))


def test_normal_init_starts_near_zero_for_every_pair():
    model = make_model(iem_init="normal")
    with torch.no_grad():
        scores = model.similarity(torch.randn(5, HIDDEN), torch.randn(7, HIDDEN), task="symmetric")
    assert scores.abs().max() < 0.05


@pytest.mark.parametrize("layer_norm", [False, True])
@pytest.mark.parametrize("side", ["left", "right"])
def test_mean_init_pma_starts_as_the_masked_mean(side, layer_norm):
    model = make_model(pma_init="mean", pma_layer_norm=layer_norm)
    model.tokenizer = tiny_tokenizer(padding_side=side)
    batch = model.tokenize(TEXTS)
    with torch.no_grad():
        output = model(**batch, return_token_states=True)
    for row in range(len(TEXTS)):
        mean = output.token_states[row][batch["attention_mask"][row].bool()].mean(0)
        expected = F.layer_norm(F.layer_norm(mean, (HIDDEN,)), (HIDDEN,)) if layer_norm else mean + 0.01
        torch.testing.assert_close(output.embeddings[row], expected, rtol=1e-4, atol=1e-5)


def test_mean_init_pma_learns_its_seed_and_projections():
    model = make_model(pma_init="mean").train()
    model(**model.tokenize(TEXTS)).embeddings.pow(3).sum().backward()
    pma = model.pma
    for name, parameter in (("seeds", pma.seeds), ("in_proj", pma.attention.in_proj_weight),
                            ("output", pma.output.weight)):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("side", ["left", "right"])
def test_mean_pooling_is_the_masked_mean_of_the_token_states(side):
    model = make_model(pooling="mean")
    assert model.pma is None and model.config.embedding_size == HIDDEN
    model.tokenizer = tiny_tokenizer(padding_side=side)
    batch = model.tokenize(TEXTS)
    with torch.no_grad():
        output = model(**batch, return_token_states=True)
    for row, text in enumerate(TEXTS):
        keep = batch["attention_mask"][row].bool()
        torch.testing.assert_close(output.embeddings[row], output.token_states[row][keep].mean(0))
        alone = model(**model.tokenize([text])).embeddings[0]
        torch.testing.assert_close(output.embeddings[row], alone, rtol=1e-4, atol=1e-5)


def test_unknown_task_lists_known_tasks():
    model = make_model()
    with pytest.raises(ValueError, match=r"unknown task 'retrieval'.*symmetric.*asymmetric"):
        model.similarity(torch.randn(1, HIDDEN), torch.randn(2, HIDDEN), task="retrieval")
    with pytest.raises(ValueError, match="unknown task"):
        model.encode_query(["dog"], task="retrieval")


def test_mismatched_embedding_sizes_raise_clear_errors():
    model = make_model()
    with pytest.raises(ValueError, match=f"size 7 .* embeddings have size {HIDDEN}"):
        model.similarity(torch.randn(2, 7), torch.randn(3, HIDDEN))
    with pytest.raises(ValueError, match="one shape"):
        model.similarity_pairwise(torch.randn(2, HIDDEN), torch.randn(3, HIDDEN))


def test_encode_returns_input_order_and_matches_single_encoding():
    model = make_model()
    texts = TEXTS + ["sun", "the dog ran in the garden on a sunny day"]
    batched = model.encode(texts, batch_size=3)
    single = np.stack([model.encode(text) for text in texts])
    assert batched.shape == (len(texts), HIDDEN) and single.shape == (len(texts), HIDDEN)
    np.testing.assert_allclose(batched, single, atol=1e-5)
    assert isinstance(model.encode(texts, convert_to_tensor=True), torch.Tensor)


def test_encode_bad_input():
    model = make_model()
    empty = model.encode([])
    assert empty.shape == (0, HIDDEN)
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        model.encode(["dog", 3])
    with pytest.raises(ValueError, match=r"texts\[0\] is empty"):
        model.encode(["  ", "dog"])


def test_encode_shows_a_progress_bar_on_long_inputs(capsys):
    model = make_model()
    model.encode(["dog"] * 20, batch_size=2)
    assert "Encoding" in capsys.readouterr().err
    model.encode(["dog"] * 4, batch_size=2)
    assert "Encoding" not in capsys.readouterr().err


def test_instructions_are_prepended_per_task():
    model = make_model(query_instructions={"asymmetric": "query "}, passage_instructions={"asymmetric": "passage "})
    np.testing.assert_allclose(model.encode_query(["dog"], task="asymmetric"), model.encode(["query dog"]))
    np.testing.assert_allclose(model.encode_document(["dog"], task="asymmetric"), model.encode(["passage dog"]))
    np.testing.assert_allclose(model.encode_query(["dog"], task="symmetric"), model.encode(["dog"]))


def test_rank_orders_passages_by_iem_score():
    model = make_model()
    ranking = model.rank("the cat", TEXTS, task="asymmetric")
    scores = [score for _, score in ranking]
    assert sorted(index for index, _ in ranking) == list(range(len(TEXTS)))
    assert scores == sorted(scores, reverse=True)


def test_config_rejects_bad_settings():
    with pytest.raises(ValueError, match="unknown tasks"):
        D2LLMConfig(backbone_config=tiny_llama().to_dict(), query_instructions={"qa": "x"})
    with pytest.raises(ValueError, match="bidirectional_layers"):
        D2LLMConfig(backbone_config=tiny_llama().to_dict(), bidirectional_layers=3)
    with pytest.raises(ValueError, match="model_type"):
        D2LLMConfig(backbone_config={"hidden_size": 8})
    with pytest.raises(ValueError, match="pooling"):
        D2LLMConfig(backbone_config=tiny_llama().to_dict(), pooling="cls")
    with pytest.raises(ValueError, match="iem_init"):
        D2LLMConfig(backbone_config=tiny_llama().to_dict(), iem_init="xavier")
    with pytest.raises(ValueError, match=r"pma_init must be one of \('normal', 'mean'\)"):
        D2LLMConfig(backbone_config=tiny_llama().to_dict(), pma_init="identity")
    with pytest.raises(ValueError, match="even iem_hidden_size"):
        D2LLMConfig(backbone_config=tiny_llama().to_dict(), iem_hidden_size=15)


def test_gradient_checkpointing_with_lora_trains_adapters_and_heads_only():
    model = make_model().train()
    model.enable_lora(r=4, lora_alpha=8, lora_dropout=0.0)
    batch = model.tokenize(TEXTS)

    def loss_and_grads():
        model.zero_grad()
        embeddings = model(**batch).embeddings
        loss = model.similarity(embeddings, embeddings, task="symmetric").logsumexp(-1).mean()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain_loss, plain_grads = loss_and_grads()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    assert model.backbone_model().is_activation_checkpointing
    loss, grads = loss_and_grads()
    torch.testing.assert_close(loss, plain_loss)
    assert set(grads) == set(plain_grads)
    for name in grads:
        torch.testing.assert_close(grads[name], plain_grads[name], atol=1e-6, rtol=1e-4)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in grads) and any(n.startswith("pma.") for n in grads)
    assert any(n.startswith("iem.") for n in grads)
    assert set(grads) <= trainable
    assert not any("lora" not in n and n.startswith("backbone.") for n in trainable)
