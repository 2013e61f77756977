"""A tiny in-process yes/no teacher and mined rows for the teacher tests (no hub, no files)."""

from __future__ import annotations

import torch
from datasets import Dataset
from tiny import tiny_llama, tiny_tokenizer
from transformers import LlamaForCausalLM

from common.schema import MINED_FEATURES
from teacher.model import YesNoTeacher
from teacher.prompts import TaskPrompt

TINY_PROMPTS = {
    "en": {
        "symmetric": TaskPrompt("{query} the {passage} is a good answer", "yes", "no"),
        "asymmetric": TaskPrompt("query {query} passage {passage} is the answer", "yes", "no"),
    },
}

WORDS = "cat dog bird fish sun moon star tree apple banana coffee tea milk river city house".split()


def tiny_teacher(seed: int = 0) -> YesNoTeacher:
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama()).eval()
    return YesNoTeacher(model, tiny_tokenizer(), prompts=TINY_PROMPTS)


def tiny_mined(rows: int = 10, k: int = 3, task: str = "symmetric") -> Dataset:
    """Mined rows with distinct queries and positives and K negatives drawn from the word list."""
    data = []
    for index in range(rows):
        word = WORDS[index % len(WORDS)]
        data.append({
            "query": f"the {word} sat {index}",
            "positive": f"a {word} ran {index}",
            "task": task,
            "language": "en",
            "negatives": [f"the {WORDS[(index + offset) % len(WORDS)]} flew {offset}" for offset in range(1, k + 1)],
        })
    return Dataset.from_list(data, features=MINED_FEATURES)
