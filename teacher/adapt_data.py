"""Training rows for teacher adaptation, and the collator that turns them into prompt batches.

A row (``TRAIN_FEATURES``) is either a **pair** (one passage, a target in [0, 1] and a weight) or a **group**
(a query, its positive first, then K mined hard negatives; targets 1, 0, ..., 0). Pairs feed the pointwise,
graded and CoSENT objectives, groups the listwise one (``teacher.objectives``). ``TeacherCollator`` flattens a
batch of rows into left-padded prompts, one per (query, passage), and says which prompts are pairs and which
form each group.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from datasets import Dataset, Features, Value
from datasets import Sequence as ListOf

from preprocess.readers import PAIR_FEATURES, DataError
from teacher.model import YesNoTeacher
from teacher.objectives import class_weights

TRAIN_FEATURES = Features({
    "query": Value("string"), "passages": ListOf(Value("string")), "targets": ListOf(Value("float32")),
    "weights": ListOf(Value("float32")), "task": Value("string"), "language": Value("string"),
    "kind": Value("string")})
"""One training row: ``kind`` is ``pair`` (one passage) or ``group`` (positive first, then the negatives)."""
LENGTH_COLUMN = "length"
"""Added by ``teacher.adapt`` for the length-grouped sampler; the collator ignores it."""


def row_lengths(rows: Dataset) -> list[int]:
    """Each row's text length in characters, ``sum over passages p of len(query) + len(p)``: a proxy, free to
    compute, for the tokens its prompts hold."""
    return [len(row["passages"]) * len(row["query"]) + sum(map(len, row["passages"]))
            for row in rows.select_columns(["query", "passages"])]


def pair_rows(pairs: Dataset, *, weighted: bool = True, both_orders: bool = False) -> Dataset:
    """Pair rows of ``PAIR_FEATURES`` pairs: class-balanced weights (``class_weights``) when ``weighted``, else 1;
    with ``both_orders`` each pair also appears as (passage, query), which a symmetric task should not tell apart."""
    weights = class_weights(pairs["target"]) if weighted else [1.0] * len(pairs)
    rows = []
    for pair, weight in zip(pairs, weights):
        orders = [(pair["query"], pair["passage"])]
        if both_orders:
            orders.append((pair["passage"], pair["query"]))
        rows += [{"query": query, "passages": [passage], "targets": [pair["target"]], "weights": [weight],
                  "task": pair["task"], "language": pair["language"], "kind": "pair"} for query, passage in orders]
    return Dataset.from_list(rows, features=TRAIN_FEATURES)


def pairs_from_mined(mined: Dataset, seed: int = 0) -> Dataset:
    """Balanced ``PAIR_FEATURES`` pairs of mined examples: (query, positive) target 1 and (query, a seeded
    negative) target 0."""
    rows = []
    for row in mined:
        negative = random.Random(f"{seed}\x1f{row['query']}\x1f{row['positive']}").choice(row["negatives"])
        common = {"query": row["query"], "task": row["task"], "language": row["language"]}
        rows += [{**common, "passage": row["positive"], "target": 1.0},
                 {**common, "passage": negative, "target": 0.0}]
    return Dataset.from_list(rows, features=PAIR_FEATURES)


def group_rows(mined: Dataset, negatives: int, source: str = "mined examples") -> Dataset:
    """Group rows of mined examples: the positive, then the first ``negatives`` mined negatives (the miner ranks
    the hardest first). A row with fewer negatives, or an empty text, is a ``DataError`` naming ``source``, the row
    and the field."""
    if negatives < 1:
        raise ValueError(f"a group needs at least one negative, got {negatives}")
    rows = []
    for index, row in enumerate(mined):
        location = f"{source}, row {index + 1}"
        if not row["positive"].strip():
            raise DataError(f"{location}: field 'positive' is empty (a query needs a positive)")
        if len(row["negatives"]) < negatives:
            raise DataError(f"{location}: field 'negatives' has {len(row['negatives'])} texts, fewer than the "
                            f"{negatives} a group takes (mine with --k {negatives} or lower --negatives)")
        passages = [row["positive"], *row["negatives"][:negatives]]
        if not row["query"].strip() or not all(text.strip() for text in passages):
            field = "query" if not row["query"].strip() else "negatives"
            raise DataError(f"{location}: field {field!r} holds an empty text")
        rows.append({"query": row["query"], "passages": passages, "targets": [1.0] + [0.0] * negatives,
                     "weights": [1.0] * (1 + negatives), "task": row["task"], "language": row["language"],
                     "kind": "group"})
    return Dataset.from_list(rows, features=TRAIN_FEATURES)


class TeacherCollator:
    """Rows -> one prompt per (query, passage), left-padded by ``YesNoTeacher.collate``, plus:

    ``answer_ids`` [N, 2] (each prompt's yes/no token ids), ``targets`` and ``weights`` [N], ``pair_index`` [P]
    (the prompts of pair rows) and ``group_index`` [G, 1 + K] (each group's prompts, positive first; all groups of
    a run have the same K).
    """

    def __init__(self, teacher: YesNoTeacher) -> None:
        self.teacher = teacher

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        queries, passages, keys, pair_index, groups = [], [], [], [], []
        targets: list[float] = []
        weights: list[float] = []
        for row in rows:
            start = len(passages)
            for passage in row["passages"]:
                queries.append(row["query"]), passages.append(passage), keys.append((row["task"], row["language"]))
            targets += row["targets"]
            weights += row["weights"]
            indices = list(range(start, len(passages)))
            if row["kind"] == "group":
                groups.append(indices)
            else:
                pair_index += indices
        sequences: list[list[int]] = [[] for _ in passages]
        answers: list[tuple[int, int]] = [(0, 0)] * len(passages)
        by_key: dict[tuple[str, str], list[int]] = defaultdict(list)
        for index, key in enumerate(keys):
            by_key[key].append(index)
        for (task, language), indices in by_key.items():
            encoded = self.teacher.encode_pairs([queries[i] for i in indices], [passages[i] for i in indices], task,
                                                language)
            answer = self.teacher.answer_ids(task, language)
            for index, ids in zip(indices, encoded):
                sequences[index], answers[index] = ids, answer
        batch = {key: value.cpu() for key, value in self.teacher.collate(sequences).items()}
        sizes = {len(group) for group in groups}
        if len(sizes) > 1:
            raise ValueError("groups of one batch must have the same size")
        return {**batch, "answer_ids": torch.tensor(answers, dtype=torch.long),
                "targets": torch.tensor(targets, dtype=torch.float32),
                "weights": torch.tensor(weights, dtype=torch.float32),
                "pair_index": torch.tensor(pair_index, dtype=torch.long),
                "group_index": torch.tensor(groups, dtype=torch.long).reshape(len(groups), max(sizes, default=0))}
