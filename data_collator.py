"""Teacher-scored fixed batches (``common.schema.SCORED_BATCH_FEATURES``), or pair batches with gold targets
(``common.schema.PAIR_BATCH_FEATURES``), into training steps.

* ``validate_scored_dataset`` / ``validate_pair_batches`` refuse bad input before training, naming the batch and
  the column.
* ``FixedBatchSampler`` shuffles stored batches, never the rows inside them, and keeps the batches that run at
  the same step on different processes to one task (their positives are gathered as in-batch negatives).
* ``D2LLMDataCollator`` turns one stored batch into token ids (dynamic padding) plus the teacher tensors (or the
  gold targets).

Token order inside a step: the B queries, the B positives, then the B * K negatives row by row (query i's
negatives at ``2B + i*K : 2B + (i+1)*K``); a pair batch has no negatives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from common.schema import PAIR_BATCH_FEATURES, SCORED_BATCH_COLUMNS

REQUIRED_COLUMNS = ("task", "queries", "positives", "negatives", "teacher_hard_logits", "teacher_inbatch_logits",
                    "teacher_feature_cosine")


class ScoredBatchError(ValueError):
    """A stored batch that training cannot use; the message names the batch (row) and the column."""


def _where(row: Mapping[str, Any], index: int) -> str:
    batch_id = row.get("batch_id")
    return f"batch {batch_id} (row {index})" if batch_id is not None else f"row {index}"


def _teacher_array(row: Mapping[str, Any], index: int, column: str, shape: tuple[int, ...]) -> np.ndarray:
    """``row[column]`` as a float32 array of ``shape`` with finite values, or a ``ScoredBatchError``."""
    try:
        values = np.asarray(row[column], dtype=np.float32)
    except (ValueError, TypeError) as error:
        raise ScoredBatchError(f"{_where(row, index)}: column '{column}' is ragged or not numeric "
                               f"(expected shape {list(shape)}): {error}") from None
    if values.shape != shape:
        raise ScoredBatchError(f"{_where(row, index)}: column '{column}' has shape {list(values.shape)}, "
                               f"expected {list(shape)}")
    if not np.isfinite(values).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(values))[0])
        raise ScoredBatchError(f"{_where(row, index)}: column '{column}' holds a non-finite value at {list(bad)}")
    return values


def _check_texts(row: Mapping[str, Any], index: int, column: str, texts: Sequence[Any]) -> None:
    for position, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ScoredBatchError(f"{_where(row, index)}: column '{column}' has an empty text at {position}")


def check_scored_batch(row: Mapping[str, Any], index: int, task_names: Sequence[str]) -> tuple[int, int]:
    """Check one stored batch against the schema; return ``(B, K)``.

    Refused: missing columns, an unknown task, a query without positive, inconsistent K, empty texts, teacher
    tensors of the wrong shape or with NaN/inf.
    """
    missing = [column for column in REQUIRED_COLUMNS if column not in row]
    if missing:
        raise ScoredBatchError(f"{_where(row, index)}: missing column(s) {missing}")
    task = row["task"]
    if task not in task_names:
        raise ScoredBatchError(f"{_where(row, index)}: column 'task' is {task!r}; one batch holds one task of "
                               f"{list(task_names)}")
    queries, positives, negatives = row["queries"], row["positives"], row["negatives"]
    size = len(queries)
    if size < 2:
        raise ScoredBatchError(f"{_where(row, index)}: column 'queries' holds {size} query; a batch needs >= 2 "
                               "for in-batch negatives")
    if len(positives) != size or len(negatives) != size:
        raise ScoredBatchError(f"{_where(row, index)}: columns 'positives' ({len(positives)}) and 'negatives' "
                               f"({len(negatives)}) must have one entry per query ({size})")
    counts = {len(row_negatives) for row_negatives in negatives}
    if len(counts) != 1 or 0 in counts:
        raise ScoredBatchError(f"{_where(row, index)}: column 'negatives' has inconsistent or zero K within the "
                               f"batch: {[len(row_negatives) for row_negatives in negatives]}")
    negatives_per_query = counts.pop()
    _check_texts(row, index, "queries", queries)
    _check_texts(row, index, "positives", positives)
    _check_texts(row, index, "negatives", [text for row_negatives in negatives for text in row_negatives])
    candidates = 1 + negatives_per_query
    _teacher_array(row, index, "teacher_hard_logits", (size, candidates, 2))
    if has_inbatch_scores(row):
        _teacher_array(row, index, "teacher_inbatch_logits", (size, size, 2))
    _teacher_array(row, index, "teacher_feature_cosine", (size, candidates, candidates))
    return size, negatives_per_query


def has_inbatch_scores(row: Mapping[str, Any]) -> bool:
    """False where the batch was scored with ``--inbatch-scores none`` (an empty ``teacher_inbatch_logits``)."""
    return len(row["teacher_inbatch_logits"]) > 0


def inbatch_scores_present(dataset) -> bool:
    """Whether the dataset's batches carry in-batch teacher scores; a mix of both kinds is refused."""
    present = {len(logits) > 0 for logits in dataset["teacher_inbatch_logits"]}
    if len(present) > 1:
        raise ScoredBatchError("column 'teacher_inbatch_logits' is empty in some batches and filled in others; "
                               "score every batch with the same --inbatch-scores")
    return present == {True}


def validate_scored_dataset(dataset, task_names: Sequence[str], batch_size: int | None = None,
                            num_negatives: int | None = None) -> tuple[int, int]:
    """Check every stored batch of a teacher-scored dataset; return the common ``(B, K)``.

    ``batch_size`` (B) and ``num_negatives`` (K) are the configured sizes; ``None`` takes them from the first batch.
    Every batch must have the same B and K (processes gather equal-sized in-batch blocks).
    """
    columns = set(dataset.column_names)
    missing = [column for column in REQUIRED_COLUMNS if column not in columns]
    if missing:
        raise ScoredBatchError(f"the dataset lacks column(s) {missing}; expected the columns of "
                               f"common.schema.SCORED_BATCH_FEATURES: {list(SCORED_BATCH_COLUMNS)}")
    if len(dataset) == 0:
        raise ScoredBatchError("the dataset holds no batch")
    for index, row in enumerate(dataset):
        size, negatives = check_scored_batch(row, index, task_names)
        batch_size = size if batch_size is None else batch_size
        num_negatives = negatives if num_negatives is None else num_negatives
        if size != batch_size:
            raise ScoredBatchError(f"{_where(row, index)}: column 'queries' holds {size} queries; the configured "
                                   f"fixed batch size is {batch_size}")
        if negatives != num_negatives:
            raise ScoredBatchError(f"{_where(row, index)}: column 'negatives' holds {negatives} negatives per "
                                   f"query; the configured number is {num_negatives}")
    return batch_size, num_negatives


def is_pair_batches(dataset: Any) -> bool:
    """Whether ``dataset`` holds pair batches (``common.schema.PAIR_BATCH_FEATURES``) rather than scored batches."""
    return "targets" in dataset.column_names


def validate_pair_batches(dataset: Any, ibn_weight: float = 0.0, task_names: Sequence[str] | None = None) -> None:
    """Every pair batch has B >= 2 pairs, one target in [0, 1] per pair, non-empty texts and (where ``task_names``
    is given) one of those tasks; in-batch InfoNCE (``ibn_weight > 0``) needs positive pairs only."""
    missing = [column for column in PAIR_BATCH_FEATURES if column not in dataset.column_names]
    if missing:
        raise ScoredBatchError(f"the pair batches lack column(s) {missing}")
    if len(dataset) == 0:
        raise ScoredBatchError("the dataset holds no batch")
    for index, row in enumerate(dataset):
        size = len(row["queries"])
        where = f"pair batch {index}"
        if task_names is not None and row["task"] not in task_names:
            raise ScoredBatchError(f"{where}: column 'task' is {row['task']!r}, not one of the model's tasks "
                                   f"{list(task_names)}")
        if size < 2 or len(row["positives"]) != size or len(row["targets"]) != size:
            raise ScoredBatchError(f"{where}: columns 'queries', 'positives', 'targets' need the same length >= 2")
        if not all(isinstance(text, str) and text.strip() for text in [*row["queries"], *row["positives"]]):
            raise ScoredBatchError(f"{where}: an empty text in column 'queries' or 'positives'")
        if not all(0.0 <= target <= 1.0 for target in row["targets"]):
            raise ScoredBatchError(f"{where}: column 'targets' holds a value outside [0, 1]")
        if ibn_weight and any(target != 1.0 for target in row["targets"]):
            raise ScoredBatchError(f"{where}: column 'targets' holds graded or negative pairs, but in-batch "
                                   "InfoNCE (ibn_weight > 0) needs positive pairs only: set --ibn_weight 0")


class FixedBatchSampler(Sampler[int]):
    """Order of the stored batches (rows) for one epoch: shuffled, seeded by ``seed + epoch``.

    With ``num_replicas`` processes each run of ``num_replicas`` consecutive rows (one step, one row per process)
    shares a task; a task's rows are padded by repeating its first shuffled rows to a multiple of
    ``num_replicas``, as ``DistributedSampler`` pads. With one process this is a plain shuffle of the rows.
    """

    def __init__(self, tasks: Sequence[str], num_replicas: int = 1, seed: int = 0, shuffle: bool = True) -> None:
        if num_replicas < 1:
            raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
        self.tasks = list(tasks)
        self.num_replicas = num_replicas
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _groups(self) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        groups: list[list[int]] = []
        for task in sorted(set(self.tasks)):
            rows = [index for index, name in enumerate(self.tasks) if name == task]
            if self.shuffle:
                rows = [rows[i] for i in torch.randperm(len(rows), generator=generator).tolist()]
            padded = math.ceil(len(rows) / self.num_replicas) * self.num_replicas
            rows = (rows * math.ceil(padded / len(rows)))[:padded]
            groups.extend(rows[start : start + self.num_replicas] for start in range(0, padded, self.num_replicas))
        if self.shuffle:
            groups = [groups[i] for i in torch.randperm(len(groups), generator=generator).tolist()]
        return groups

    def __iter__(self) -> Iterator[int]:
        return iter([index for group in self._groups() for index in group])

    def __len__(self) -> int:
        return sum(math.ceil(self.tasks.count(task) / self.num_replicas) * self.num_replicas
                   for task in set(self.tasks))


@dataclass
class D2LLMDataCollator:
    """One stored batch -> ``input_ids``/``attention_mask [B(2+K), T]`` (dynamic padding, queries, positives, then
    negatives), ``teacher_hard_logits [B, 1+K, 2]``, ``teacher_inbatch_logits [B, B, 2]`` (``[0]`` where the batch
    was scored without in-batch pairs), ``teacher_feature_cosine [B, 1+K, 1+K]`` and ``task_id`` (index into
    ``task_names``). A pair batch gives ``[2B, T]`` (queries, then passages), ``targets [B]`` and ``task_id``.

    Per-task instructions are prepended to queries and to passages (positives and negatives).
    """

    tokenizer: Any
    task_names: Sequence[str]
    max_seq_length: int = 512
    query_instructions: Mapping[str, str] = field(default_factory=dict)
    passage_instructions: Mapping[str, str] = field(default_factory=dict)
    pad_to_multiple_of: int | None = None

    @classmethod
    def from_model(cls, model, **kwargs: Any) -> "D2LLMDataCollator":
        """A collator with the model's tokenizer, task names, ``max_seq_length`` and instructions."""
        config = model.config
        return cls(tokenizer=model.tokenizer, task_names=list(config.task_names), max_seq_length=config.max_seq_length,
                   query_instructions=dict(config.query_instructions),
                   passage_instructions=dict(config.passage_instructions), **kwargs)

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if len(features) != 1:
            raise ValueError(f"a training step takes exactly one stored fixed batch per device, got {len(features)} "
                             "rows: set per_device_train_batch_size=1 (the batch size lives in the dataset)")
        row = features[0]
        encoded = self.tokenizer(self.texts(row), padding=True, truncation=True, max_length=self.max_seq_length,
                                 pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
                **self.supervision(row)}

    def texts(self, row: Mapping[str, Any]) -> list[str]:
        """The step's texts in token order (queries, positives, negatives; a pair batch: its B queries, then its
        B passages), instructions prepended; checks a scored row."""
        if "targets" not in row:
            check_scored_batch(row, 0, self.task_names)
        query_prefix = self.query_instructions.get(row["task"], "")
        passage_prefix = self.passage_instructions.get(row["task"], "")
        texts = [query_prefix + text for text in row["queries"]]
        texts += [passage_prefix + text for text in row["positives"]]
        return texts + [passage_prefix + text for row_negatives in row.get("negatives", []) for text in row_negatives]

    def supervision(self, row: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """The row's ``task_id`` and, as float32 tensors, its teacher scores or (a pair batch) its gold ``targets``."""
        task_id = torch.tensor(list(self.task_names).index(row["task"]), dtype=torch.long)
        if "targets" in row:
            return {"targets": torch.tensor(row["targets"], dtype=torch.float32), "task_id": task_id}
        return {
            "teacher_hard_logits": torch.tensor(row["teacher_hard_logits"], dtype=torch.float32),
            "teacher_inbatch_logits": torch.tensor(row["teacher_inbatch_logits"], dtype=torch.float32),
            "teacher_feature_cosine": torch.tensor(row["teacher_feature_cosine"], dtype=torch.float32),
            "task_id": task_id,
        }
