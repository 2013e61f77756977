"""Fixtures shared by the train.py tests: a tiny Llama backbone folder and a scored dataset of both tasks."""

from __future__ import annotations

import pytest

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
