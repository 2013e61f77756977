"""Backbone loading and pooling shared by the D2LLM model, the teacher and the baselines: a pretrained backbone and
tokenizer from a folder, a hub id or a ``.gguf`` file, the attention kernel to use, masked mean pooling, and BeLLM's
bidirectional last layers.

Remote-code file, saved with every D2LLM checkpoint next to ``modeling_d2llm.py``: module-level imports are torch
and transformers only.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn
from transformers import AutoTokenizer, GgufConfig


def mean_pool(token_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Masked mean ``sum_t m_t x_t / sum_t m_t``: ``[N, T, d], [N, T] -> [N, d]`` (padded states ignored, even NaN)."""
    keep = attention_mask.bool().unsqueeze(-1)
    total = token_states.masked_fill(~keep, 0.0).sum(dim=1)
    return total / keep.sum(dim=1).clamp_min(1).to(total.dtype)


def apply_bidirectional_layers(backbone: nn.Module, num_layers: int) -> nn.Module:
    """BeLLM: the last ``num_layers`` self-attention layers of a decoder backbone attend in both directions.

    The backbone's code is untouched: each chosen attention module (by ``layer_idx``) gets ``is_causal = False``
    (read by sdpa and flash-attention when no mask is materialised) and a forward pre-hook that widens the 4D mask
    it receives to ``M_bi[b, :, i, j] = max_i' M[b, :, i', j]``: a key is visible to every query iff some query
    sees it. Under causal, sliding-window and padding masks that keeps exactly the real tokens, for either padding
    side. Flash-attention's 2D padding masks pass unchanged. Hooks travel with the modules, so peft LoRA, gradient
    checkpointing and ``save_pretrained`` (the count is in the config) keep them. Idempotent; 0 is a no-op.
    Encoder backbones (no causal attention module) refuse ``num_layers > 0``: they are bidirectional already.
    """
    if num_layers == 0:
        return backbone
    attentions = [module for module in backbone.modules()
                  if isinstance(getattr(module, "layer_idx", None), int) and hasattr(module, "is_causal")]
    if not any(module.is_causal or hasattr(module, "_d2llm_bidirectional") for module in attentions):
        raise ValueError(f"bidirectional_layers={num_layers} needs a decoder backbone with causal self-attention; "
                         f"{type(backbone).__name__} has none (an encoder is bidirectional already: use 0)")
    total = backbone.config.num_hidden_layers
    chosen = [module for module in attentions if module.layer_idx >= total - num_layers]
    if len(chosen) != num_layers:
        raise ValueError(f"found {len(chosen)} self-attention modules among the last {num_layers} of {total} layers "
                         f"of {type(backbone).__name__}; expected one per layer")
    for module in chosen:
        if not hasattr(module, "_d2llm_bidirectional"):
            module.is_causal = False
            module.register_forward_pre_hook(_bidirectional_mask_hook, with_kwargs=True)
            module._d2llm_bidirectional = True
    return backbone


def _bidirectional_mask_hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Forward pre-hook of a bidirectional attention module: replace its causal 4D mask by the padding mask."""
    if "attention_mask" not in kwargs and len(args) > 2:
        raise TypeError(f"{type(module).__name__} got its attention mask by position; bidirectional_layers needs it "
                        "by keyword")
    mask = kwargs.get("attention_mask")
    if mask is None or (isinstance(mask, torch.Tensor) and mask.dim() == 2):
        return args, kwargs  # no materialised causal pattern: `is_causal = False` suffices
    if not isinstance(mask, torch.Tensor) or mask.dim() != 4:
        raise NotImplementedError(f"bidirectional_layers supports eager, sdpa and flash attention masks, "
                                  f"not {type(mask).__name__}")
    visible = mask.any(dim=-2, keepdim=True) if mask.dtype == torch.bool else mask.amax(dim=-2, keepdim=True)
    return args, {**kwargs, "attention_mask": visible.expand_as(mask)}


def default_attn_implementation() -> str:
    """flash-attention 2 where it is installed and a GPU is present, else PyTorch's sdpa."""
    from transformers.utils import is_flash_attn_2_available

    if torch.cuda.is_available() and is_flash_attn_2_available():
        return "flash_attention_2"
    return "sdpa"


def split_gguf_path(name_or_path: str, gguf_file: str | None = None) -> tuple[str, str | None]:
    """``(folder or hub id, gguf file name or None)``: a path ending in ``.gguf`` names its folder and file."""
    if gguf_file is None and str(name_or_path).endswith(".gguf"):
        return os.path.split(os.path.abspath(name_or_path))
    return str(name_or_path), gguf_file


def load_backbone(auto_class: Any, name_or_path: str, *, gguf_file: str | None = None,
                  dtype: torch.dtype | str | None = None, attn_implementation: str | None = None) -> tuple[Any, Any]:
    """``(auto_class.from_pretrained(...), tokenizer)`` from a folder, a hub id or a ``.gguf`` file path.

    ``auto_class``: ``AutoModel`` for an encoder backbone, ``AutoModelForCausalLM`` to keep the LM head. GGUF
    weights are unpacked into a plain dense model: packed ones can be neither trained nor saved.
    """
    name_or_path, gguf_file = split_gguf_path(name_or_path, gguf_file)
    kwargs: dict[str, Any] = {"attn_implementation": attn_implementation or default_attn_implementation()}
    if gguf_file is not None:
        kwargs.update(gguf_file=gguf_file, quantization_config=GgufConfig(dequantize=True))
    if dtype is not None:
        kwargs["dtype"] = dtype
    return auto_class.from_pretrained(name_or_path, **kwargs), load_tokenizer(name_or_path, gguf_file=gguf_file)


def load_tokenizer(name_or_path: str, gguf_file: str | None = None, trust_remote_code: bool = False):
    """AutoTokenizer with a pad token (decoder LLMs often lack one: their EOS is used)."""
    kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer
