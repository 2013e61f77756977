"""Trainer checkpoints without pickle: optimizer, scheduler, scaler and random states as safetensors + JSON.

transformers' ``Trainer`` writes these states with ``torch.save`` (``optimizer.pt``, ``scheduler.pt``, ``scaler.pt``,
``rng_state.pth``), which are pickles. ``SafeCheckpointMixin`` replaces its save and load hooks: ``to_safe`` splits a
state into its tensors (``NAME.safetensors``) and a JSON skeleton that names them (``NAME.json``); ``from_safe``
rebuilds it. Checkpoints written by the plain Trainer still resume (its own loader reads them, ``weights_only``).
DeepSpeed and FSDP keep their own checkpoint formats.
"""

from __future__ import annotations

import json
import os
import random
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

OPTIMIZER, SCHEDULER, SCALER = "optimizer", "scheduler", "scaler"


def to_safe(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """A JSON-able skeleton of ``value``; its tensors are added to ``tensors`` and named in the skeleton.

    Every dict becomes ``{"dict": [[key, value], ...]}`` (keys keep their type), every tuple ``{"tuple": [...]}``,
    every tensor ``{"tensor": name}`` and every numpy array ``{"ndarray": [...], "dtype": ...}``; lists and scalars
    stay as they are. Anything else raises ``TypeError``."""
    if isinstance(value, torch.Tensor):
        name = str(len(tensors))
        tensors[name] = value.detach().cpu().clone()
        return {"tensor": name}
    if isinstance(value, np.ndarray):
        return {"ndarray": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {"dict": [[to_safe(key, tensors), to_safe(item, tensors)] for key, item in value.items()]}
    if isinstance(value, tuple):
        return {"tuple": [to_safe(item, tensors) for item in value]}
    if isinstance(value, list):
        return [to_safe(item, tensors) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint without pickle")


def from_safe(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of ``to_safe``."""
    if isinstance(skeleton, list):
        return [from_safe(item, tensors) for item in skeleton]
    if not isinstance(skeleton, dict):
        return skeleton
    if "tensor" in skeleton:
        return tensors[skeleton["tensor"]]
    if "ndarray" in skeleton:
        return np.array(skeleton["ndarray"], dtype=skeleton["dtype"])
    if "tuple" in skeleton:
        return tuple(from_safe(item, tensors) for item in skeleton["tuple"])
    return {from_safe(key, tensors): from_safe(item, tensors) for key, item in skeleton["dict"]}


def save_state(state: Any, folder: str, name: str) -> None:
    """``folder/name.json`` (the skeleton) and ``folder/name.safetensors`` (its tensors, when it has any)."""
    os.makedirs(folder, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = to_safe(state, tensors)
    if tensors:
        save_file(tensors, os.path.join(folder, f"{name}.safetensors"))
    with open(os.path.join(folder, f"{name}.json"), "w", encoding="utf-8") as handle:
        json.dump(skeleton, handle)


def has_state(folder: str, name: str) -> bool:
    return os.path.isfile(os.path.join(folder, f"{name}.json"))


def load_state(folder: str, name: str, device: str | torch.device = "cpu") -> Any:
    """What ``save_state(state, folder, name)`` stored, tensors on ``device``."""
    with open(os.path.join(folder, f"{name}.json"), encoding="utf-8") as handle:
        skeleton = json.load(handle)
    path = os.path.join(folder, f"{name}.safetensors")
    tensors = load_file(path, device=str(device)) if os.path.isfile(path) else {}
    return from_safe(skeleton, tensors)


def random_states() -> dict[str, Any]:
    """The python, numpy, torch CPU and (when present) CUDA generator states."""
    states: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                              "cpu": torch.random.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.random.get_rng_state_all()
    return states


def set_random_states(states: dict[str, Any]) -> None:
    """Restore what ``random_states`` returned."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.random.set_rng_state(states["cpu"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.random.set_rng_state_all(states["cuda"])


class SafeCheckpointMixin:
    """Mixed into a ``Trainer`` subclass (before ``Trainer``): its checkpoints hold no pickle."""

    def _keeps_own_format(self) -> bool:
        return bool(self.is_deepspeed_enabled or self.is_fsdp_enabled)

    def _random_state_name(self) -> str:
        return "rng_state" if self.args.world_size <= 1 else f"rng_state_{self.args.process_index}"

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        if self._keeps_own_format():
            return super()._save_optimizer_and_scheduler(output_dir)
        if self.args.should_save:
            save_state(self.optimizer.state_dict(), output_dir, OPTIMIZER)
            save_state(self.lr_scheduler.state_dict(), output_dir, SCHEDULER)

    def _save_scaler(self, output_dir: str) -> None:
        scaler = getattr(self.accelerator, "scaler", None)
        if scaler is not None and self.args.should_save:
            save_state(scaler.state_dict(), output_dir, SCALER)

    def _save_rng_state(self, output_dir: str) -> None:
        save_state(random_states(), output_dir, self._random_state_name())

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        if checkpoint is None or self._keeps_own_format() or not has_state(checkpoint, OPTIMIZER):
            return super()._load_optimizer_and_scheduler(checkpoint)
        self.optimizer.load_state_dict(load_state(checkpoint, OPTIMIZER, self.args.device))
        self.lr_scheduler.load_state_dict(load_state(checkpoint, SCHEDULER))

    def _load_scaler(self, checkpoint: str | None) -> None:
        scaler = getattr(self.accelerator, "scaler", None)
        if checkpoint is None or scaler is None or not has_state(checkpoint, SCALER):
            return super()._load_scaler(checkpoint)
        scaler.load_state_dict(load_state(checkpoint, SCALER))

    def _load_rng_state(self, checkpoint: str | None) -> None:
        if checkpoint is None or not has_state(checkpoint, self._random_state_name()):
            return super()._load_rng_state(checkpoint)
        set_random_states(load_state(checkpoint, self._random_state_name()))
