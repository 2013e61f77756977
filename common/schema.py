"""The one place where the data formats shared by preprocessing and training are fixed.

* Training examples (``EXAMPLE_FEATURES``): one row per (query, positive) pair, after reading any source.
* Mined examples (``MINED_FEATURES``): the same plus ``negatives``, K hard negatives per row.
* Pair batches (``PAIR_BATCH_FEATURES``): one row per batch of B labelled pairs ``(queries[i], positives[i])`` with a
  gold ``targets[i]`` in [0, 1] (a graded score / its maximum, or 1 / 0); the bi-encoder baseline trains on them
  without a teacher.
* Teacher-scored fixed batches (``SCORED_BATCH_FEATURES``): **one row per training batch**, so that the
  in-batch teacher matrix ``S_ib`` always belongs to the batch trained on (docs/method.md, section 4). Shuffling the
  dataset shuffles batches, never rows inside a batch.

Shapes inside one scored-batch row (B queries, K hard negatives):
    queries [B], positives [B], negatives [B][K]
    teacher_hard_logits     [B][1+K][2]   ``[l_yes, l_no]`` of (query i, candidate k); k = 0 is the positive
    teacher_inbatch_logits  [B][B][2]     ``[l_yes, l_no]`` of (query i, positive of query j)
    teacher_feature_cosine  [B][1+K][1+K] cosine of the teacher's final-token states over {positive, negatives}
"""

from __future__ import annotations

from datasets import Features, List, Value

TASKS = ("symmetric", "asymmetric")

EXAMPLE_FEATURES = Features({
    "query": Value("string"),
    "positive": Value("string"),
    "task": Value("string"),
    "language": Value("string"),
})

MINED_FEATURES = Features({**EXAMPLE_FEATURES, "negatives": List(Value("string"))})

PAIR_BATCH_FEATURES = Features({
    "task": Value("string"),
    "queries": List(Value("string")),
    "positives": List(Value("string")),
    "targets": List(Value("float32")),
})

SCORED_BATCH_FEATURES = Features({
    "batch_id": Value("int64"),
    "task": Value("string"),
    "language": Value("string"),
    "queries": List(Value("string")),
    "positives": List(Value("string")),
    "negatives": List(List(Value("string"))),
    "teacher_hard_logits": List(List(List(Value("float32")))),
    "teacher_inbatch_logits": List(List(List(Value("float32")))),
    "teacher_feature_cosine": List(List(List(Value("float32")))),
})

SCORED_BATCH_COLUMNS = tuple(SCORED_BATCH_FEATURES)
