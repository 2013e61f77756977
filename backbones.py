"""Loading a pretrained backbone and its tokenizer from a folder, a hub id or a ``.gguf`` file path."""

from __future__ import annotations

import os
from typing import Any

import torch
from transformers import GgufConfig

from modeling_d2llm import default_attn_implementation, load_tokenizer


def load_backbone(auto_class: Any, name_or_path: str, *, gguf_file: str | None = None,
                  dtype: torch.dtype | str | None = None, attn_implementation: str | None = None) -> tuple[Any, Any]:
    """``(auto_class.from_pretrained(...), tokenizer)``; a path ending in ``.gguf`` names its folder and file.

    ``auto_class``: ``AutoModel`` for an encoder backbone, ``AutoModelForCausalLM`` to keep the LM head. GGUF
    weights are unpacked into a plain dense model: packed ones can be neither trained nor saved.
    """
    if gguf_file is None and str(name_or_path).endswith(".gguf"):
        name_or_path, gguf_file = os.path.split(os.path.abspath(name_or_path))
    kwargs: dict[str, Any] = {"attn_implementation": attn_implementation or default_attn_implementation()}
    if gguf_file is not None:
        kwargs.update(gguf_file=gguf_file, quantization_config=GgufConfig(dequantize=True))
    if dtype is not None:
        kwargs["dtype"] = dtype
    return auto_class.from_pretrained(name_or_path, **kwargs), load_tokenizer(name_or_path, gguf_file=gguf_file)
