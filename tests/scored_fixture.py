"""A synthetic teacher-scored dataset in ``schema.SCORED_BATCH_FEATURES``, with a learnable signal.

Texts are bags of words from six topics (all in ``tiny.WORDS``, so the tiny tokenizer knows them). A query asks
about two words of a topic and its positive repeats them with a third; a hard negative holds words of another
topic and maybe one other word of the query's topic; the synthetic "teacher" says yes in proportion to how much
of a candidate's words belong to the query's topic. Teacher features of a pair are the candidate's topic
histogram plus half the query's, so the cosine matrices carry the same signal.

``python tests/scored_fixture.py OUT_DIR [--num_batches N --batch_size B --num_negatives K --seed S]`` writes one
with ``Dataset.save_to_disk`` (for ``train.py`` demos: ``configs/smollm2.yaml`` reads ``outputs/scored_fixture``).
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from datasets import Dataset

if __name__ == "__main__":  # run as a script: the repository root holds schema.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common.schema import SCORED_BATCH_FEATURES  # noqa: E402

TOPICS = (
    ("cat", "dog", "bird", "fish", "sat", "ran", "flew", "swam", "mat", "log"),
    ("paris", "france", "capital", "city", "river", "house", "garden", "bank"),
    ("money", "loan", "rate", "interest", "big", "small", "fast", "slow"),
    ("tree", "leaf", "green", "sky", "sea", "sun", "moon", "star", "night", "day", "wind", "earth"),
    ("apple", "banana", "fruit", "food", "eat", "drink", "milk", "coffee", "tea", "water"),
    ("music", "song", "play", "game", "happy", "sad", "good", "bad"),
)
QUESTION_WORDS = ("what", "who", "how", "why", "when", "where", "which")


def _words(rng: random.Random, topic: int, count: int) -> list[str]:
    return rng.sample(TOPICS[topic], count)


def _histogram(words: Sequence[str]) -> np.ndarray:
    counts = np.zeros(len(TOPICS), dtype=np.float64)
    for word in words:
        for topic, vocabulary in enumerate(TOPICS):
            if word in vocabulary:
                counts[topic] += 1
    return counts / max(1.0, counts.sum())


def _teacher_logits(query_topic: int, candidate: Sequence[str], rng: random.Random) -> list[float]:
    """``[l_yes, l_no]`` with ``l_yes - l_no = 6 * (share of the candidate in the query's topic) - 3 + noise``."""
    margin = 6.0 * _histogram(candidate)[query_topic] - 3.0 + rng.gauss(0.0, 0.3)
    return [margin / 2.0, -margin / 2.0]


def _cosines(vectors: np.ndarray) -> list[list[float]]:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return (unit @ unit.T).clip(-1.0, 1.0).tolist()


def scored_row(rng: random.Random, batch_id: int, batch_size: int, num_negatives: int, task: str) -> dict[str, Any]:
    """One stored batch: B queries on distinct topics (while there are topics), positives, K hard negatives each."""
    topics = rng.sample(range(len(TOPICS)), min(batch_size, len(TOPICS)))
    topics += [rng.randrange(len(TOPICS)) for _ in range(batch_size - len(topics))]
    query_words, positive_words, negative_words = [], [], []
    for topic in topics:
        asked = _words(rng, topic, 3)  # the query asks about two of them; its positive repeats both
        query_words.append([rng.choice(QUESTION_WORDS), "the"] + asked[:2])
        positive_words.append(["the"] + rng.sample(asked, 3))
        row_negatives = []
        for _ in range(num_negatives):
            other = rng.choice([t for t in range(len(TOPICS)) if t != topic])
            shared = rng.randint(0, 1)  # a hard negative may hold another word of the query's topic
            unasked = [word for word in TOPICS[topic] if word not in asked]
            row_negatives.append(["the"] + rng.sample(unasked, shared) + _words(rng, other, 3 - shared))
        negative_words.append(row_negatives)
    hard, features = [], []
    for topic, query, positive, negatives in zip(topics, query_words, positive_words, negative_words):
        candidates = [positive] + negatives
        hard.append([_teacher_logits(topic, candidate, rng) for candidate in candidates])
        features.append(_cosines(np.stack([_histogram(c) + 0.5 * _histogram(query) for c in candidates])))
    inbatch = [[_teacher_logits(topic, positive, rng) for positive in positive_words] for topic in topics]
    return {
        "batch_id": batch_id,
        "task": task,
        "language": "en",
        "queries": [" ".join(words) for words in query_words],
        "positives": [" ".join(words) for words in positive_words],
        "negatives": [[" ".join(words) for words in row] for row in negative_words],
        "teacher_hard_logits": hard,
        "teacher_inbatch_logits": inbatch,
        "teacher_feature_cosine": features,
    }


def scored_rows(num_batches: int = 4, batch_size: int = 4, num_negatives: int = 3,
                tasks: Sequence[str] = ("symmetric",), seed: int = 0) -> list[dict[str, Any]]:
    """``num_batches`` stored batches; batch n has task ``tasks[n % len(tasks)]``."""
    rng = random.Random(seed)
    return [scored_row(rng, n, batch_size, num_negatives, tasks[n % len(tasks)]) for n in range(num_batches)]


def to_dataset(rows: Sequence[dict[str, Any]]) -> Dataset:
    """Rows in the agreed schema (``schema.SCORED_BATCH_FEATURES``)."""
    return Dataset.from_list(list(rows), features=SCORED_BATCH_FEATURES)


def scored_dataset(**kwargs: Any) -> Dataset:
    return to_dataset(scored_rows(**kwargs))


def split_row(row: dict[str, Any], parts: int) -> list[dict[str, Any]]:
    """Cut one stored batch of B queries into ``parts`` batches of B / parts (in-batch logits: diagonal blocks)."""
    size = len(row["queries"]) // parts
    pieces = []
    for part in range(parts):
        rows = slice(part * size, (part + 1) * size)
        piece = {key: row[key] for key in ("task", "language")}
        piece["batch_id"] = row["batch_id"] * parts + part
        for key in ("queries", "positives", "negatives", "teacher_hard_logits", "teacher_feature_cosine"):
            piece[key] = row[key][rows]
        piece["teacher_inbatch_logits"] = [line[rows] for line in row["teacher_inbatch_logits"][rows]]
        pieces.append(piece)
    return pieces


# ---------------------------------------------------------------------- tiny students for the training tests
def tiny_student(lora: bool = True, seed: int = 0, lora_dropout: float = 0.0, **config: Any):
    """A ``D2LLMModel`` on ``tiny.tiny_llama`` with the tiny tokenizer (LoRA r = 4 on every linear layer)."""
    import torch

    from configuration_d2llm import D2LLMConfig
    from modeling_d2llm import D2LLMModel
    from tiny import tiny_llama, tiny_tokenizer

    torch.manual_seed(seed)
    settings = {"pma_num_heads": 4, "iem_hidden_size": 32, **config}
    model = D2LLMModel(D2LLMConfig(backbone_config=tiny_llama(), **settings))
    model.tokenizer = tiny_tokenizer()
    if lora:
        model.enable_lora(r=4, lora_alpha=8, lora_dropout=lora_dropout)
    return model


def save_tiny_backbone(path: str | Path, seed: int = 0) -> str:
    """A tiny Llama backbone folder with its tokenizer (what ``train.py --model_name_or_path`` reads)."""
    import torch
    from transformers import LlamaModel

    from tiny import tiny_llama, tiny_tokenizer

    torch.manual_seed(seed)
    LlamaModel(tiny_llama()).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir")
    parser.add_argument("--num_batches", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--num_negatives", type=int, default=3)
    parser.add_argument("--tasks", nargs="+", default=["symmetric", "asymmetric"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    scored_dataset(num_batches=args.num_batches, batch_size=args.batch_size, num_negatives=args.num_negatives,
                   tasks=args.tasks, seed=args.seed).save_to_disk(args.output_dir)
    print(f"wrote {args.num_batches} scored batches to {args.output_dir}")


if __name__ == "__main__":
    main()
