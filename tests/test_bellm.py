"""BeLLM backward dependency: ``bidirectional_layers = k`` opens the last k decoder layers in both directions."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaModel, MistralConfig

from configuration_d2llm import D2LLMConfig
from modeling_d2llm import D2LLMModel
from remote import run_isolated
from tiny import HIDDEN, VOCAB_SIZE, tiny_bert, tiny_llama, tiny_qwen2, tiny_tokenizer

LAYERS = 3
TEXTS = ["the cat sat on the mat", "dog", "what is the capital of france", "a big red apple"]


def tiny_mistral(**overrides) -> MistralConfig:
    values = dict(vocab_size=VOCAB_SIZE, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0,
                  sliding_window=4)
    values.update(overrides)
    return MistralConfig(**values)


DECODERS = {"llama": tiny_llama, "qwen2": tiny_qwen2, "mistral": tiny_mistral}


def make_model(family: str = "llama", k: int = 1, attn: str = "sdpa") -> D2LLMModel:
    torch.manual_seed(0)
    backbone = DECODERS[family](num_hidden_layers=LAYERS)
    backbone._attn_implementation = attn
    config = D2LLMConfig(backbone_config=backbone.to_dict(), pma_num_heads=4, iem_hidden_size=16,
                         bidirectional_layers=k)
    model = D2LLMModel(config).eval()
    model.backbone.config._attn_implementation = attn
    model.tokenizer = tiny_tokenizer()
    return model


def layer_states(model: D2LLMModel, ids: torch.Tensor, with_mask: bool) -> list[torch.Tensor]:
    """Hidden states after each decoder layer (index 0: the embeddings)."""
    mask = torch.ones_like(ids) if with_mask else None
    with torch.no_grad():
        return list(model.backbone(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states)


def changed_layers(model: D2LLMModel, with_mask: bool = True) -> list[bool]:
    """For each layer output: does replacing the last token change the states of the tokens before it?"""
    ids = torch.tensor([[5, 9, 14, 20, 31, 40]])
    other = ids.clone()
    other[0, -1] = 50
    before, after = layer_states(model, ids, with_mask), layer_states(model, other, with_mask)
    return [not torch.allclose(a[:, :-1], b[:, :-1], atol=1e-6, rtol=0) for a, b in zip(before, after)]


# eager and sdpa with a mask build a 4D mask (rewritten by the hook); sdpa without one relies on `is_causal`.
ATTENTION = [("eager", True), ("sdpa", True), ("sdpa", False)]


@pytest.mark.parametrize("family", sorted(DECODERS))
@pytest.mark.parametrize("attn,with_mask", ATTENTION)
def test_zero_bidirectional_layers_keep_the_backbone_exactly_causal(family, attn, with_mask):
    assert changed_layers(make_model(family, k=0, attn=attn), with_mask) == [False] * (LAYERS + 1)


@pytest.mark.parametrize("family", sorted(DECODERS))
@pytest.mark.parametrize("attn,with_mask", ATTENTION)
@pytest.mark.parametrize("k", [1, 2])
def test_later_token_changes_earlier_states_in_the_last_k_layers_only(family, attn, with_mask, k):
    expected = [False] * (LAYERS + 1 - k) + [True] * k
    assert changed_layers(make_model(family, k=k, attn=attn), with_mask) == expected


@pytest.mark.parametrize("family", sorted(DECODERS))
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_side_gives_the_unpadded_embedding_with_bidirectional_layers(family, attn, side):
    model = make_model(family, k=2, attn=attn)
    tokenizer = tiny_tokenizer(padding_side=side)
    alone = torch.cat([model(**tokenizer([text], return_tensors="pt")).embeddings for text in TEXTS])
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any(), "the batch must contain padding"
    torch.testing.assert_close(model(**batch).embeddings, alone, atol=1e-5, rtol=1e-5)


def test_lora_and_gradient_checkpointing_keep_backward_dependency():
    model = make_model(k=1).train()
    model.enable_lora(r=4, lora_alpha=8, lora_dropout=0.0)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    assert changed_layers(model) == [False] * LAYERS + [True]
    batch = model.tokenize(TEXTS)
    model(**batch).embeddings.square().sum().backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(f"layers.{LAYERS - 1}." in n and "lora_" in n for n in grads)


def test_applying_twice_adds_no_second_hook():
    model = make_model(k=1)
    before = changed_layers(model)
    from backbone_d2llm import apply_bidirectional_layers

    apply_bidirectional_layers(model.backbone, 1)
    attention = model.backbone.layers[-1].self_attn
    assert len(attention._forward_pre_hooks) == 1 and changed_layers(model) == before


def test_encoder_backbone_refuses_bidirectional_layers():
    config = D2LLMConfig(backbone_config=tiny_bert().to_dict(), pma_num_heads=4, bidirectional_layers=1)
    with pytest.raises(ValueError, match="decoder backbone"):
        D2LLMModel(config)


# In a process that cannot import this repository: load through AutoModel, check the flags, embed.
FRESH = """
import torch
from safetensors.torch import save_file
from transformers import AutoModel
model = AutoModel.from_pretrained({path!r}, trust_remote_code=True).eval()
assert model.config.bidirectional_layers == 1
assert [layer.self_attn.is_causal for layer in model.backbone.layers] == [True, True, False]
with torch.no_grad():
    batch = model.tokenize({texts!r})
    save_file({{"embeddings": model(**batch).embeddings.contiguous()}}, {out!r})
"""


def test_save_and_automodel_reload_keep_bidirectional_layers(tmp_path):
    model = make_model(k=1)
    model.save_pretrained(tmp_path / "ckpt")
    with torch.no_grad():
        expected = model(**model.tokenize(TEXTS)).embeddings
    out = tmp_path / "embeddings.safetensors"
    run_isolated(FRESH.format(path=str(tmp_path / "ckpt"), texts=TEXTS, out=str(out)), cwd=tmp_path)
    torch.testing.assert_close(load_file(out)["embeddings"], expected, atol=1e-5, rtol=1e-5)
    reloaded = D2LLMModel.from_pretrained(tmp_path / "ckpt").eval()
    assert changed_layers(reloaded) == [False] * LAYERS + [True]


def test_lora_adapter_checkpoint_reloads_with_bidirectional_layers(tmp_path):
    base = tmp_path / "base"
    torch.manual_seed(0)
    LlamaModel(tiny_llama(num_hidden_layers=LAYERS)).save_pretrained(base)
    tiny_tokenizer().save_pretrained(base)
    model = D2LLMModel.from_backbone(str(base), pma_num_heads=4, iem_hidden_size=16, bidirectional_layers=1)
    model.enable_lora(r=4).save_pretrained(tmp_path / "adapter", merge_lora=False)
    reloaded = D2LLMModel.from_pretrained(tmp_path / "adapter").eval()
    assert reloaded.has_lora and changed_layers(reloaded) == [False] * LAYERS + [True]
