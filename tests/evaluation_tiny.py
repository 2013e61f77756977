"""Tiny evaluation data (in the shared layouts) and a tiny saved D2LLM checkpoint, for the evaluation and
search tests; nothing is downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from configuration_d2llm import D2LLMConfig
from modeling_d2llm import D2LLMModel
from tiny import tiny_llama, tiny_tokenizer

STS_ROWS = [
    ("the cat sat on the mat", "a cat sat on the mat", 4.8),
    ("the dog ran in the garden", "a dog ran fast", 3.5),
    ("what is the capital of france", "paris is the capital city", 2.0),
    ("the sun is a star", "the fish swam in the sea", 0.2),
    ("green apple", "red apple", 2.5),
    ("coffee and milk", "tea and milk", 2.2),
]
LABELS = ["entailment", "neutral", "contradiction", "entailment", "contradiction", "neutral"]
CORPUS = {
    "d1": ("capital", "paris is the capital of france"),
    "d2": ("", "the cat sat on the mat"),
    "d3": ("river", "the river bank has money"),
    "d4": ("", "a bird flew in the blue sky"),
    "d5": ("fruit", "a banana is a yellow fruit"),
    "d6": ("", "the dog ran in the garden"),
}
QUERIES = {"q1": "what is the capital of france", "q2": "where did the cat sit", "q3": "what is a banana",
           "q4": "unjudged query about the sea"}
QRELS = [("q1", "d1", 1), ("q2", "d2", 2), ("q2", "d6", 0), ("q3", "d5", 1)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_sts(path: Path) -> Path:
    return write_jsonl(path, [{"sentence1": a, "sentence2": b, "score": s} for a, b, s in STS_ROWS])


def write_nli(path: Path) -> Path:
    return write_jsonl(path, [{"sentence1": a, "sentence2": b, "label": label}
                              for (a, b, _), label in zip(STS_ROWS, LABELS)])


def write_beir(folder: Path, qrels: list[tuple[str, str, int]] = QRELS, corpus: dict = CORPUS) -> Path:
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "corpus.jsonl", [{"_id": i, "title": t, "text": x} for i, (t, x) in corpus.items()])
    write_jsonl(folder / "queries.jsonl", [{"_id": i, "text": x} for i, x in QUERIES.items()])
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, d, s in qrels]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def tiny_d2llm(seed: int = 0) -> D2LLMModel:
    torch.manual_seed(seed)
    config = D2LLMConfig(backbone_config=tiny_llama().to_dict(), pma_num_heads=4, iem_hidden_size=16,
                         query_instructions={"asymmetric": "query "})
    model = D2LLMModel(config).eval()
    model.tokenizer = tiny_tokenizer()
    return model


def save_tiny_d2llm(folder: Path, seed: int = 0) -> Path:
    tiny_d2llm(seed).save_pretrained(folder)
    return folder
