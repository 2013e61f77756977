"""Head warm-up: PMA and IEM trained alone, on a frozen backbone, before end-to-end training.

A fresh PMA and IEM (about 2.4 M parameters on SmolLM2-135M) need thousands of queries to learn, and an end-to-end
LoRA step costs a full backbone forward and backward per stored batch. The warm-up trains only the heads, for
``head_warmup_epochs`` epochs, with the same loss (``D2LLMTrainer.compute_loss``), the same fixed batches and the
same logged terms; training then continues end to end (LoRA and heads) as without it. Two ways to feed the heads:

* ``head_warmup_states="cache"`` (the default): the backbone runs once over every distinct text and its token
  states are kept on disk (``token_state_cache``); warm-up steps never run the backbone. The cache takes
  ``tokens x d x 2`` bytes: about 0.1 GB for 10,000 short texts on SmolLM2-135M (d = 576). Use it whenever that
  fits the disk.
* ``"recompute"``: the frozen backbone runs forward at every step, without a backward pass through it (none of its
  parameters needs a gradient). For large backbones, where the cache would not fit (7B: d = 4096, so 10,000 texts of
  200 tokens are 16 GB).

Resuming: when the warm-up finishes, its log history (``OUTPUT/_head_warmup/log_history.json``) and then the heads
(``heads.safetensors`` beside it) are written, each whole or not at all; a later run with the heads file skips the
warm-up and loads it. The folder's leading underscore keeps it (and the cache inside it) out of ``push_to_hub``
uploads. A warm-up killed before the end is run again (the cache keeps its finished pieces). The warm-up's optimizer
state is not carried into the end-to-end phase, which starts AdamW afresh.
"""

from __future__ import annotations

import copy
import gc
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from transformers import Trainer

from common.hardware import resolve_dtype
from common.stages import write_whole
from data_collator import D2LLMDataCollator
from distil.token_state_cache import TokenStateCache, build_cache, collator_texts
from heads_d2llm import HEADS_FILE, load_heads, save_heads

logger = logging.getLogger(__name__)

WARMUP_DIR = "_head_warmup"  # "_*" folders stay out of push_to_hub uploads
LOG_FILE = "log_history.json"
STATES_CHOICES = ("cache", "recompute")


@dataclass
class CachedStatesCollator:
    """One stored batch -> cached ``token_states [B(2+K), T, d]`` and ``attention_mask`` (same text order as
    ``D2LLMDataCollator``) plus the same teacher tensors."""

    base: D2LLMDataCollator
    cache: TokenStateCache

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if len(features) != 1:
            raise ValueError(f"a training step takes exactly one stored fixed batch per device, got {len(features)}")
        row = features[0]
        states, mask = self.cache.states(self.base.texts(row))
        return {"token_states": states, "attention_mask": mask, **self.base.supervision(row)}


def cached_collator(model: Any, train_dataset: Any, cache_dir: str | os.PathLike, dtype: str = "auto",
                    half: bool = True) -> CachedStatesCollator:
    """Build (or reopen) the token-state cache of ``train_dataset`` and the collator that reads it."""
    from accelerate import PartialState

    state = PartialState()
    base = D2LLMDataCollator.from_model(model)
    texts = collator_texts(train_dataset, base)
    compute = resolve_dtype(dtype, next(model.parameters()).device)
    was_training = model.training
    model.eval()
    cache = build_cache(model, texts, cache_dir, compute, half=half, process_index=state.process_index,
                        num_processes=state.num_processes, wait_for_everyone=state.wait_for_everyone)
    model.train(was_training)
    return CachedStatesCollator(base, cache)


def run_head_warmup(model: Any, train_dataset: Any, args: Any, trainer_class: type[Trainer],
                    **trainer_kwargs: Any) -> None:
    """Train ``model``'s heads for ``args.head_warmup_epochs`` epochs with the backbone frozen (see the module
    docstring), or load the heads of a finished warm-up. ``trainer_class`` (``D2LLMTrainer``) trains them, with
    ``trainer_kwargs``."""
    folder = Path(args.output_dir) / WARMUP_DIR
    heads_file = folder / HEADS_FILE
    if heads_file.exists():
        load_heads(model, str(heads_file))
        logger.info("head warm-up done already: heads loaded from %s", heads_file)
        return
    frozen = [param for param in model.backbone.parameters() if param.requires_grad]
    for param in frozen:
        param.requires_grad_(False)
    warmup_args = copy.deepcopy(args)
    for name, value in {"output_dir": str(folder), "num_train_epochs": args.head_warmup_epochs, "max_steps": -1,
                        "save_strategy": "no", "eval_strategy": "no", "push_to_hub": False,
                        "resume_from_checkpoint": None}.items():
        setattr(warmup_args, name, value)
    collator = None
    if args.head_warmup_states == "cache":
        cache_dir = args.head_warmup_cache_dir or folder / "token_states"
        collator = cached_collator(model, train_dataset, cache_dir, args.head_warmup_dtype)
    logger.info("head warm-up: %s epochs, %s states, backbone frozen", args.head_warmup_epochs,
                args.head_warmup_states)
    trainer = trainer_class(model=model, args=warmup_args, train_dataset=train_dataset, data_collator=collator,
                           **trainer_kwargs)
    trainer.train()
    if trainer.is_world_process_zero():
        history = json.dumps(trainer.state.log_history, indent=2)
        write_whole(folder / LOG_FILE, lambda partial: partial.write_text(history))
        write_whole(heads_file, lambda partial: save_heads(model, str(partial)))
    trainer.accelerator.wait_for_everyone()
    del trainer  # its DDP wrapper and reducer hooks go with it before the end-to-end trainer wraps the model
    gc.collect()
    for param in frozen:
        param.requires_grad_(True)
