"""Fixtures shared by the tests: a tiny Llama backbone folder, a scored dataset of both tasks, a tiny teacher folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scored_fixture import save_tiny_backbone, scored_dataset

TASKS = ["symmetric", "asymmetric"]


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> str:
    return save_tiny_backbone(tmp_path_factory.mktemp("backbone") / "tiny-llama")


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("data") / "scored"
    scored_dataset(num_batches=6, tasks=TASKS).save_to_disk(str(path))
    return str(path)


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory) -> Path:
    """A tiny Llama causal LM with its tokenizer, saved once: a ``--teacher`` folder for the commands' tests."""
    from tiny import tiny_llama, tiny_tokenizer
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("teacher") / "tiny-llm"
    LlamaForCausalLM(tiny_llama()).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder
