"""LLM-QL: query-likelihood pre-training of a causal LM, so that a document's final token condenses the document.

Each example is laid out as ``[d_1 .. d_n, END, q_1 .. q_m, EOS]`` then right-padded (``END`` is the tokenizer's
EOS, the token a retriever later pools). The loss is ``-log P(query | document) = -sum_t log P(q_t | ...)`` over
the query tokens (and the query's EOS), with two changes from plain language modelling:

* **Attention Stop**: query tokens attend to earlier query tokens and to ``END`` only, never to ``d_1 .. d_n``;
  document tokens (and ``END``) attend causally among themselves. ``q_1`` is predicted from ``END``'s state, so
  everything the query needs from the document must pass through that one token.
* **Input Corruption**: ``round(fraction * n)`` of ``d_1 .. d_n``, drawn at random per example and per batch, are
  replaced by a mask token (``END`` never is).

The 4D mask is built explicitly: boolean (``True`` = attend) for sdpa, additive float (0 / dtype min) for eager.
Flash-attention cannot take a 4D mask.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

IGNORE_INDEX = -100


@dataclass
class QLInputs:
    """Right-padded ``[B, L]`` token ids and labels (``-100`` outside the query), ``END`` index and real length."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    document_end: torch.Tensor
    lengths: torch.Tensor


def tokenize_pairs(tokenizer, documents: Sequence[str], queries: Sequence[str], max_document_length: int = 200,
                   max_query_length: int = 64) -> QLInputs:
    """Lay out ``[d_1 .. d_n, END, q_1 .. q_m, EOS]`` per pair (n, m truncated to the limits), right-padded."""
    if len(documents) != len(queries):
        raise ValueError(f"{len(documents)} documents but {len(queries)} queries")
    end = tokenizer.eos_token_id
    if end is None:
        raise ValueError("LLM-QL needs a tokenizer with an EOS token (the document's final token)")
    docs = tokenizer(list(documents), add_special_tokens=False)["input_ids"]
    asks = tokenizer(list(queries), add_special_tokens=False)["input_ids"]
    rows = [(doc[:max_document_length] + [end], ask[:max_query_length] + [end]) for doc, ask in zip(docs, asks)]
    total = max(len(doc) + len(ask) for doc, ask in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end
    input_ids = torch.full((len(rows), total), pad, dtype=torch.long)
    labels = torch.full((len(rows), total), IGNORE_INDEX, dtype=torch.long)
    for i, (doc, ask) in enumerate(rows):
        input_ids[i, : len(doc) + len(ask)] = torch.tensor(doc + ask)
        labels[i, len(doc) : len(doc) + len(ask)] = torch.tensor(ask)
    document_end = torch.tensor([len(doc) - 1 for doc, _ in rows])
    lengths = torch.tensor([len(doc) + len(ask) for doc, ask in rows])
    return QLInputs(input_ids, labels, document_end, lengths)


def attention_stop_mask(document_end: torch.Tensor, lengths: torch.Tensor, total_length: int) -> torch.Tensor:
    """``[B, 1, L, L]`` booleans, ``True`` where query position ``i`` may attend to key ``j``.

    With ``e`` the ``END`` index and ``n`` the real length: for ``i <= e``, ``j <= i``; for ``e < i < n``,
    ``j == e`` or ``e < j <= i``; padding rows ``i >= n`` see only themselves (no fully masked row, so no NaN).
    """
    i = torch.arange(total_length).view(1, -1, 1)
    j = torch.arange(total_length).view(1, 1, -1)
    e, n = document_end.view(-1, 1, 1), lengths.view(-1, 1, 1)
    real = (i < n) & (j <= i) & ((i <= e) | (j >= e))
    return (real | ((i >= n) & (i == j))).unsqueeze(1)


def corrupt_documents(input_ids: torch.Tensor, document_end: torch.Tensor, fraction: float, mask_token_id: int,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Copy of ``input_ids`` with ``round(fraction * n)`` random tokens among each row's ``d_1 .. d_n`` masked."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"corruption fraction must be in [0, 1], got {fraction}")
    corrupted = input_ids.clone()
    for row, n in enumerate(document_end.tolist()):
        chosen = torch.randperm(n, generator=generator)[: round(fraction * n)]
        corrupted[row, chosen] = mask_token_id
    return corrupted


def corruption_token_id(tokenizer) -> int:
    """The replacement token: the tokenizer's mask token, else its unknown token, else its padding token."""
    for token_id in (tokenizer.mask_token_id, tokenizer.unk_token_id, tokenizer.pad_token_id):
        if token_id is not None:
            return token_id
    raise ValueError("the tokenizer has no mask, unknown or padding token to corrupt documents with")


@dataclass
class QLCollator:
    """Rows with ``query`` and ``positive`` (``common.schema.EXAMPLE_FEATURES``) -> causal-LM inputs under LLM-QL.

    ``mask_dtype``: ``None`` for a boolean mask (sdpa), a float dtype for an additive one (eager attention).
    """

    tokenizer: Any
    max_document_length: int = 200
    max_query_length: int = 64
    corruption: float = 0.6
    mask_dtype: torch.dtype | None = None
    seed: int = 0
    generator: torch.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.generator = torch.Generator().manual_seed(self.seed)
        self.mask_token_id = corruption_token_id(self.tokenizer)

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        inputs = tokenize_pairs(self.tokenizer, [row["positive"] for row in rows], [row["query"] for row in rows],
                                self.max_document_length, self.max_query_length)
        allowed = attention_stop_mask(inputs.document_end, inputs.lengths, inputs.input_ids.shape[1])
        if self.mask_dtype is not None:
            allowed = torch.zeros(allowed.shape, dtype=self.mask_dtype).masked_fill(
                ~allowed, torch.finfo(self.mask_dtype).min)
        return {
            "input_ids": corrupt_documents(inputs.input_ids, inputs.document_end, self.corruption,
                                           self.mask_token_id, self.generator),
            "attention_mask": allowed,
            "position_ids": torch.arange(inputs.input_ids.shape[1]).expand_as(inputs.input_ids),
            "labels": inputs.labels,
        }


def load_pairs(path: str):
    """(query, positive) rows from a JSONL file or a ``datasets.save_to_disk`` folder (``EXAMPLE_FEATURES``; of a
    ``DatasetDict``, its ``train`` split). A missing or unreadable file, or one without those columns, is a
    ``DataError`` naming it."""
    from datasets import DatasetDict, load_dataset, load_from_disk
    from datasets.exceptions import DatasetGenerationError

    from preprocess.readers import DataError

    try:
        data = load_from_disk(path) if os.path.isdir(path) else load_dataset("json", data_files=path, split="train")
    except FileNotFoundError as error:
        raise DataError(f"{path}: no such JSONL file or datasets folder ({error})") from None
    except DatasetGenerationError as error:
        cause = " ".join(str(error.__cause__ or error).split())[:200]
        raise DataError(f"{path}: not readable as JSONL rows ({cause})") from None
    if isinstance(data, DatasetDict):
        data = data["train"]
    missing = {"query", "positive"} - set(data.column_names)
    if missing:
        raise DataError(f"{path} lacks the column(s) {sorted(missing)} of the example schema "
                        f"(query, positive, task, language); it has {data.column_names}")
    return data
