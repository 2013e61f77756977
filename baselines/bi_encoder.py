"""The BeLLM-style baseline: an LLM backbone, mean or last-token pooling, an optional prompt, cosine similarity.

``BiEncoder`` embeds texts separately (no PMA, no IEM) and compares them by cosine; ``train.py --objective
bi-encoder`` (``baselines.trainer_bi_encoder``) trains it with in-batch InfoNCE plus AnglE's angle (and optionally
cosine) objectives, as BeLLM does (``bi_encoder_loss_terms``, ``pair_loss_terms``). A saved ``BiEncoder``
folder is a plain transformers backbone + tokenizer (+ ``bi_encoder.json``), so ``D2LLMModel.from_backbone`` also
starts from it. ``bidirectional_layers`` is the BeLLM backward dependency (see ``apply_bidirectional_layers``).
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PreTrainedModel

from backbone_d2llm import apply_bidirectional_layers, load_backbone, mean_pool
from baselines.bi_encoder_losses import angle_loss, cosine_loss, info_nce_loss

SETTINGS_FILE = "bi_encoder.json"
BELLM_PROMPT = 'The representative word for sentence {text} is:"'
POOLINGS = ("mean", "last")


@dataclass
class BiEncoderSettings:
    """``pooling``: ``mean`` over real tokens or the ``last`` real token; ``prompt_template``: text with a
    ``{text}`` slot wrapped around every input (BeLLM: ``BELLM_PROMPT``); ``bidirectional_layers``: BeLLM's k."""

    pooling: str = "mean"
    prompt_template: str | None = None
    max_seq_length: int = 512
    bidirectional_layers: int = 0

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.prompt_template is not None and "{text}" not in self.prompt_template:
            raise ValueError(f"prompt_template needs a {{text}} slot, got {self.prompt_template!r}")


def last_token_pool(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The state of each row's last real token (left or right padding): ``[N, T, d], [N, T] -> [N, d]``."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last = (attention_mask.bool() * positions).argmax(dim=1)
    return states[torch.arange(states.shape[0], device=states.device), last]


class BiEncoder(nn.Module):
    """Backbone + pooling; ``embed`` keeps gradients, ``encode`` does not and L2-normalises."""

    def __init__(self, backbone: PreTrainedModel, tokenizer, settings: BiEncoderSettings | None = None) -> None:
        super().__init__()
        self.settings = settings or BiEncoderSettings()
        self.backbone = apply_bidirectional_layers(backbone, self.settings.bidirectional_layers)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, gguf_file: str | None = None, dtype: torch.dtype | None = None,
                        attn_implementation: str | None = None, **settings: Any) -> "BiEncoder":
        """Load a backbone folder (a saved ``BiEncoder``, an LLM-QL output, any causal LM) or a ``.gguf`` file.

        ``settings`` override those saved in ``bi_encoder.json`` (``pooling``, ``prompt_template``, ...).
        """
        saved = os.path.join(name_or_path, SETTINGS_FILE)
        values = {}
        if os.path.isfile(saved):
            with open(saved, encoding="utf-8") as handle:
                values = json.load(handle)
        values.update(settings)
        backbone, tokenizer = load_backbone(AutoModel, name_or_path, gguf_file=gguf_file, dtype=dtype,
                                            attn_implementation=attn_implementation)
        return cls(backbone, tokenizer, BiEncoderSettings(**values))

    def save_pretrained(self, save_directory: str) -> None:
        """Write the backbone (LoRA merged in), the tokenizer and ``bi_encoder.json``."""
        os.makedirs(save_directory, exist_ok=True)
        backbone = copy.deepcopy(self.backbone).merge_and_unload() if self.has_lora else self.backbone
        backbone.save_pretrained(save_directory)
        self.tokenizer.save_pretrained(save_directory)
        with open(os.path.join(save_directory, SETTINGS_FILE), "w", encoding="utf-8") as handle:
            json.dump(asdict(self.settings), handle, indent=2)

    # ------------------------------------------------------------------ training options
    def enable_lora(self, r: int = 16, lora_alpha: int = 32, lora_dropout: float = 0.05,
                    target_modules: str | list[str] = "all-linear") -> "BiEncoder":
        """Wrap the backbone in a peft LoRA adapter (its own weights frozen)."""
        from peft import LoraConfig, get_peft_model

        self.backbone = get_peft_model(self.backbone, LoraConfig(r=r, lora_alpha=lora_alpha,
                                                                 lora_dropout=lora_dropout,
                                                                 target_modules=target_modules))
        return self

    @property
    def has_lora(self) -> bool:
        return hasattr(self.backbone, "peft_config")

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs: dict | None = None,
                                        **kwargs: Any) -> None:
        """Recompute the backbone's layer activations in the backward pass (the Trainer calls this for
        ``activation_checkpointing``); with LoRA the embedding output requires grad, so reentrant checkpoints too
        pass gradients to the adapters."""
        base = self.backbone.get_base_model() if self.has_lora else self.backbone
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=activation_checkpointing_kwargs, **kwargs)
        if self.has_lora:
            base.enable_input_require_grads()

    # ------------------------------------------------------------------ embedding
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled ``[N, d]`` states of ``[N, T]`` tokens; positions count real tokens, so padding side is free."""
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        states = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                               use_cache=False).last_hidden_state
        pool = mean_pool if self.settings.pooling == "mean" else last_token_pool
        return pool(states, attention_mask)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Padded token ids; with a prompt template, a long text is cut (by tokens) before the template wraps it,
        so the prompt's ending survives truncation."""
        template, limit = self.settings.prompt_template, self.settings.max_seq_length
        if template:
            budget = max(1, limit - len(self.tokenizer(template.replace("{text}", ""))["input_ids"]))
            texts = [template.replace("{text}", self._cut(text, budget)) for text in texts]
        return self.tokenizer(list(texts), padding=True, truncation=True, max_length=limit, return_tensors="pt")

    def _cut(self, text: str, budget: int) -> str:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= budget else self.tokenizer.decode(ids[:budget])

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """``[N, d]`` pooled embeddings of texts, with gradients (one padded batch)."""
        device = next(self.parameters()).device
        batch = self.tokenize(texts)
        return self(batch["input_ids"].to(device), batch["attention_mask"].to(device))

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        """L2-normalised float32 ``[N, d]`` embeddings on the CPU, batched by length, in input order."""
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = torch.empty(len(texts), self.backbone.config.hidden_size)
        was_training = self.training
        self.eval()
        try:
            for start in range(0, len(order), batch_size):
                index = order[start : start + batch_size]
                out[index] = F.normalize(self.embed([texts[i] for i in index]).float(), dim=-1).cpu()
        finally:
            self.train(was_training)
        return out

    @staticmethod
    def similarity(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """Cosine of every row pair: ``[N, d], [M, d] -> [N, M]``."""
        return F.normalize(first, dim=-1) @ F.normalize(second, dim=-1).T


def bi_encoder_loss_terms(queries: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None, *,
                          temperature: float = 0.05, ibn_weight: float = 1.0, angle_weight: float = 1.0,
                          cosine_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """The weighted BeLLM/AnglE terms of one batch of embeddings: ``queries``/``positives [B, d]``, ``negatives
    [B, K, d]`` or None; ``L = sum`` of the returned ``{term: weight * value}``.

    ``info_nce`` at ``temperature`` over in-batch positives (and hard negatives); ``angle`` and ``cosine`` rank
    label-1 pairs ``(q_i, p_i)`` above label-0 pairs ``(q_i, n_ik)``, or, without hard negatives, above
    ``(q_i, p_{i+1 mod B})``.
    """
    size, k = queries.shape[0], 0 if negatives is None else negatives.shape[1]
    flat = positives.roll(-1, dims=0) if not k else negatives.reshape(size * k, -1)
    first = torch.cat([queries, queries.repeat_interleave(k, dim=0) if k else queries])
    second = torch.cat([positives, flat])
    labels = torch.cat([torch.ones(size), torch.zeros(first.shape[0] - size)]).to(queries.device)
    terms = {
        "info_nce": (ibn_weight, lambda: info_nce_loss(queries, positives, negatives if k else None, temperature)),
        "angle": (angle_weight, lambda: angle_loss(first, second, labels, temperature)),
        "cosine": (cosine_weight, lambda: cosine_loss(first, second, labels, temperature)),
    }
    parts = {name: weight * term() for name, (weight, term) in terms.items() if weight}
    if not parts:
        raise ValueError("all loss weights are 0")
    return parts


def pair_loss_terms(first: torch.Tensor, second: torch.Tensor, targets: torch.Tensor, *, temperature: float = 0.05,
                    ibn_weight: float = 1.0, angle_weight: float = 1.0, cosine_weight: float = 0.0
                    ) -> dict[str, torch.Tensor]:
    """The weighted terms of one pair batch: embeddings ``first``/``second [B, d]`` of B pairs with gold
    ``targets [B]`` in [0, 1] (``common.schema.PAIR_BATCH_FEATURES``).

    Positive pairs only (every target 1): :func:`bi_encoder_loss_terms` without hard negatives (InfoNCE over the
    in-batch positives; AnglE / CoSENT rank ``(u_i, v_i)`` above ``(u_i, v_{i+1})``). Graded or mixed targets:
    ``angle`` and ``cosine`` rank the B pairs by target (CoSENT: ``log(1 + sum_{t_a < t_b} e^{(s_a - s_b) / tau})``);
    InfoNCE needs positive pairs, so ``ibn_weight`` must be 0.
    """
    if bool((targets == 1).all()):
        return bi_encoder_loss_terms(first, second, None, temperature=temperature, ibn_weight=ibn_weight,
                                     angle_weight=angle_weight, cosine_weight=cosine_weight)
    if ibn_weight:
        raise ValueError("in-batch InfoNCE needs positive pairs only (every target 1): train graded or labelled "
                         "pairs with ibn_weight 0 and the angle / cosine terms")
    terms = {"angle": (angle_weight, lambda: angle_loss(first, second, targets, temperature)),
             "cosine": (cosine_weight, lambda: cosine_loss(first, second, targets, temperature))}
    parts = {name: weight * term() for name, (weight, term) in terms.items() if weight}
    if not parts:
        raise ValueError("angle_weight and cosine_weight are both 0: nothing ranks graded pairs")
    return parts
