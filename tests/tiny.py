"""Tiny backbones and a word-level tokenizer built in-process, so tests never touch a hub."""

from __future__ import annotations

import string

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import BertConfig, LlamaConfig, PreTrainedTokenizerFast, Qwen2Config

WORDS = sorted(set(
    "the a an of to in is was what who how why when where which cat dog bird fish sat ran flew swam on mat log "
    "sky sea house garden paris france capital city river bank money loan rate interest tree leaf green blue "
    "red big small fast slow yes no query passage answer question good bad happy sad music song play game "
    "sun moon star night day water fire earth wind apple banana fruit food eat drink milk coffee tea".split()
) | set(string.ascii_lowercase))
CONTROL_TOKENS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
VOCAB_SIZE = len(CONTROL_TOKENS) + len(WORDS)
HIDDEN = 32
PICKLES = ("*.pt", "*.pth", "*.bin", "*.pkl", "*.pickle")  # what a checkpoint must not hold


def tiny_tokenizer(padding_side: str = "right") -> PreTrainedTokenizerFast:
    vocab = {token: index for index, token in enumerate(CONTROL_TOKENS + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]",
                                   bos_token="[BOS]", eos_token="[EOS]", padding_side=padding_side)


def tiny_llama(**overrides) -> LlamaConfig:
    values = dict(vocab_size=VOCAB_SIZE, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0)
    values.update(overrides)
    return LlamaConfig(**values)


def tiny_qwen2(**overrides) -> Qwen2Config:
    values = dict(vocab_size=VOCAB_SIZE, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0)
    values.update(overrides)
    return Qwen2Config(**values)


def tiny_bert(**overrides) -> BertConfig:
    values = dict(vocab_size=VOCAB_SIZE, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=128, pad_token_id=0)
    values.update(overrides)
    return BertConfig(**values)


BACKBONES = {"llama": tiny_llama, "qwen2": tiny_qwen2, "bert": tiny_bert}
