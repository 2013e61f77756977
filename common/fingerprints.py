"""Fingerprints of a D2LLM model: sha256 hex digests that change when what they cover changes, and only then.

* ``backbone_digest``: the backbone's config and every weight, exactly; for data computed by the backbone alone
  (the token-state cache of ``distil.token_state_cache``).
* ``model_fingerprint``: what makes the model's scores (config, PMA/IEM weights, a sample of each backbone tensor);
  for data scored by the whole model (a search index, ``search.py``). Cheap on billions of parameters.
* ``saved_digest``: the bytes of a saved model or data (a file, or a folder's files), for results computed from
  what is on disk and not loaded yet (the benchmarks' evaluations, the recipes' stage keys).

The first two read the model through its ``config``, ``backbone``, ``backbone_model()`` and ``state_dict()`` only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

FINGERPRINT_SAMPLES = 4096
_VOLATILE_CONFIG_KEYS = {"_name_or_path", "transformers_version", "dtype", "torch_dtype", "architectures",
                         "use_cache", "attn_implementation", "_attn_implementation"}


def backbone_digest(model: Any) -> str:
    """sha256 of the backbone's config and weights (a fresh LoRA, whose B matrices are zero, changes nothing)."""
    digest = hashlib.sha256(model.backbone_model().config.to_json_string(use_diff=False).encode())
    lora_is_identity = all(not param.any() for name, param in model.backbone.named_parameters() if "lora_B" in name)
    for name, param in sorted(model.backbone.named_parameters()):
        if lora_is_identity and "lora_" in name:
            continue
        digest.update(name.encode())
        digest.update(param.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def model_fingerprint(model: Any) -> str:
    """sha256 of what makes a model's scores: its config (backbone included, paths and dtype left out), every
    PMA/IEM weight, and of each backbone tensor its name, shape and ``FINGERPRINT_SAMPLES`` evenly spaced values
    (rounded to bf16, so an fp32 and a bf16 load of one checkpoint agree; any fine-tune moves them)."""
    digest = hashlib.sha256(json.dumps(_config_identity(model.config.to_dict()), sort_keys=True,
                                       default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
        values = tensor.detach().flatten()
        if name.startswith("backbone."):
            step = max(1, values.numel() // FINGERPRINT_SAMPLES)
            values = values[::step].to(torch.bfloat16)
        digest.update(values.float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def saved_digest(path: str | Path) -> str:
    """sha256 of what is saved at ``path``: a file's bytes, or every file of a folder, recursively (its relative
    name, then its bytes, in name order). Where it lives does not count, only what it holds."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_file():
        _add_bytes(digest, path)
        return digest.hexdigest()
    for file in sorted(item for item in path.rglob("*") if item.is_file()):
        digest.update(file.relative_to(path).as_posix().encode())
        _add_bytes(digest, file)
    return digest.hexdigest()


def _add_bytes(digest: Any, file: Path) -> None:
    with file.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)


def _config_identity(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _config_identity(item) for key, item in sorted(value.items()) if key not in _VOLATILE_CONFIG_KEYS}
    return value
