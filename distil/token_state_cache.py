"""A disk cache of the frozen backbone's token states, so that PMA and IEM can be trained without the backbone.

The student's backbone is run once over every distinct text of a scored dataset (each text exactly as the
collator feeds it: the task's instruction, then the text, cut at ``max_seq_length`` tokens). The states of the
layer PMA reads are kept without padding, in half precision, in safetensors pieces that are read memory-mapped:

    CACHE/piece-00000.safetensors   states [sum of the texts' lengths, d] (float16; bfloat16 where a value
                                    exceeds float16's range; float32 on request), lengths [n] (int64)
    CACHE/cache.json                fingerprint, text count, piece size, hidden size, compute dtype; written last,
                                    so a cache without it is incomplete and is finished, never read

Texts are split into pieces of ``piece_size`` in a fixed order (sorted); a piece is written whole or not at all
(``common.stages.write_whole``), so a killed build resumes with the pieces on disk. Under ``accelerate launch``
process r encodes the pieces with ``index % world_size == r``; the main process writes ``cache.json``; every process
then reads the whole cache (memory-mapped: one copy in the page cache per machine).

The fingerprint covers the texts, the backbone (config and a digest of its weights), the tokenizer, the pooled
layer, the token limit and the compute dtype: a cache built for anything else is refused, never reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from common.fingerprints import backbone_digest
from common.hardware import DtypeChoice
from common.stages import write_whole

logger = logging.getLogger(__name__)

CACHE_FILE = "cache.json"
FLOAT16_MAX = torch.finfo(torch.float16).max


class CacheMismatchError(ValueError):
    """A cache folder built from another dataset, backbone, tokenizer, layer, token limit or dtype."""


def collator_texts(rows: Iterable[Mapping[str, Any]], collator: Any) -> list[str]:
    """Every distinct text of the scored batches exactly as ``collator.texts(row)`` feeds it (instructions
    prepended); sorted."""
    return sorted({text for row in rows for text in collator.texts(row)})


def cache_fingerprint(texts: Sequence[str], model: Any, compute: DtypeChoice, half: bool = True) -> str:
    """What the cached states depend on: texts, backbone, tokenizer, pooled layer, token limit, dtypes."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\x1f")
    tokenizer = model.tokenizer
    if tokenizer.is_fast:  # the backend records the last call's padding and truncation: leave those out
        backend = json.loads(tokenizer.backend_tokenizer.to_str())
        vocabulary = json.dumps({k: v for k, v in backend.items() if k not in ("padding", "truncation")})
    else:
        vocabulary = json.dumps(tokenizer.get_vocab())
    settings = {"backbone": backbone_digest(model), "tokenizer": hashlib.sha256(vocabulary.encode()).hexdigest(),
                "pooling_layer": model.config.pooling_layer, "max_seq_length": model.config.max_seq_length,
                "bidirectional_layers": model.config.bidirectional_layers, "dtype": compute.dtype, "half": half}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


def _piece_path(folder: Path, piece: int) -> Path:
    return folder / f"piece-{piece:05d}.safetensors"


@torch.no_grad()
def _encode_piece(model: Any, texts: Sequence[str], compute: DtypeChoice, batch_size: int, half: bool,
                  progress: tqdm) -> dict[str, torch.Tensor]:
    """The piece's tensors: unpadded states of every text in order (half precision unless not ``half``), and their
    lengths."""
    encoded = model.tokenizer(list(texts), truncation=True, max_length=model.config.max_seq_length)["input_ids"]
    order = sorted(range(len(texts)), key=lambda i: -len(encoded[i]))
    states: list[torch.Tensor] = [torch.empty(0)] * len(texts)
    device = next(model.parameters()).device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=compute.dtype == "bfloat16")
    for start in range(0, len(order), batch_size):
        members = order[start:start + batch_size]
        batch = model.tokenizer.pad({"input_ids": [encoded[i] for i in members]}, return_tensors="pt").to(device)
        with autocast:
            hidden = model.backbone_states(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        for row, index in enumerate(members):
            states[index] = hidden[row][batch["attention_mask"][row].bool()].float().cpu()
        progress.update(len(members))
    flat = torch.cat(states)
    storage = torch.float32 if not half else torch.float16 if flat.abs().max() <= FLOAT16_MAX else torch.bfloat16
    return {"states": flat.to(storage).contiguous(),
            "lengths": torch.tensor([len(state) for state in states], dtype=torch.int64)}


def build_cache(model: Any, texts: Sequence[str], folder: str | os.PathLike, compute: DtypeChoice, *,
                piece_size: int = 4096, batch_size: int = 32, half: bool = True, process_index: int = 0,
                num_processes: int = 1, wait_for_everyone: Callable[[], None] = lambda: None) -> "TokenStateCache":
    """Encode ``texts`` (see ``collator_texts``) into ``folder`` unless a complete cache of them is there.

    ``half=False`` stores float32 states (twice the disk; the warm-up then sees exactly the backbone's output)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    fingerprint = cache_fingerprint(texts, model, compute, half)
    if (folder / CACHE_FILE).exists():
        return TokenStateCache(folder, texts, fingerprint)
    folder.mkdir(parents=True, exist_ok=True)
    pieces = range(0, (len(texts) + piece_size - 1) // piece_size)
    mine = [piece for piece in pieces if piece % num_processes == process_index]
    todo = [piece for piece in mine if not _piece_path(folder, piece).exists()]
    with tqdm(total=sum(len(texts[p * piece_size:(p + 1) * piece_size]) for p in todo), unit="text",
              desc=f"caching token states (process {process_index})", dynamic_ncols=True) as progress:
        for piece in todo:
            tensors = _encode_piece(model, texts[piece * piece_size:(piece + 1) * piece_size], compute, batch_size,
                                    half, progress)
            write_whole(_piece_path(folder, piece), lambda partial: save_file(
                tensors, str(partial), metadata={"fingerprint": fingerprint}), shared_folder=True)
    wait_for_everyone()
    if process_index == 0:
        record = {"fingerprint": fingerprint, "num_texts": len(texts), "piece_size": piece_size,
                  "hidden_size": model.config.hidden_size, "compute": compute.to_dict()}
        write_whole(folder / CACHE_FILE, lambda partial: partial.write_text(json.dumps(record, indent=2)))
    wait_for_everyone()
    return TokenStateCache(folder, texts, fingerprint)


class TokenStateCache:
    """Read side: ``states(texts)`` gives right-padded float32 ``[N, T, d]`` states and their ``[N, T]`` mask."""

    def __init__(self, folder: str | os.PathLike, texts: Sequence[str], fingerprint: str) -> None:
        from safetensors import safe_open

        self.folder = Path(folder)
        record = json.loads((self.folder / CACHE_FILE).read_text())
        if record["fingerprint"] != fingerprint or record["num_texts"] != len(texts):
            raise CacheMismatchError(
                f"{self.folder} holds token states of another dataset, backbone, tokenizer, layer, token limit or "
                "dtype (its fingerprint differs); remove it or choose another --head_warmup_cache_dir")
        size = record["piece_size"]
        self._pieces = []
        for piece in range((len(texts) + size - 1) // size):
            handle = safe_open(str(_piece_path(self.folder, piece)), framework="pt")
            if handle.metadata().get("fingerprint") != fingerprint:
                raise CacheMismatchError(f"{_piece_path(self.folder, piece)} belongs to another cache")
            lengths = handle.get_tensor("lengths")
            starts = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
            self._pieces.append((handle.get_slice("states"), starts))
        self._where = {text: (index // size, index % size) for index, text in enumerate(texts)}

    def __len__(self) -> int:
        return len(self._where)

    def states(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded float32 states ``[N, T, d]`` of ``texts`` (each must be cached) and the ``[N, T]`` mask."""
        rows = []
        for text in texts:
            if text not in self._where:
                raise KeyError(f"text not in the token-state cache {self.folder}: {text[:80]!r}")
            piece, position = self._where[text]
            states, starts = self._pieces[piece]
            rows.append(states[int(starts[position]):int(starts[position + 1])].float())
        width = max(len(row) for row in rows)
        padded = torch.zeros(len(rows), width, rows[0].shape[-1])
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for index, row in enumerate(rows):
            padded[index, :len(row)] = row
            mask[index, :len(row)] = 1
        return padded, mask
