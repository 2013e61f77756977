"""python -m preprocess.pair_batches: a pairs file becomes pair batches, whole or not at all; bad rows exit 2."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import load_from_disk

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "preprocess.pair_batches", *args], cwd=REPO, capture_output=True,
                          text=True)


def test_a_graded_pairs_file_becomes_batches_with_scores_over_five(tmp_path):
    source = tmp_path / "pairs.jsonl"
    source.write_text("".join(json.dumps({"sentence1": f"a cat {i}", "sentence2": f"a dog {i}", "score": i % 6})
                              + "\n" for i in range(10)))
    done = _run(str(source), "--output", str(tmp_path / "out"), "--batch-size", "4")
    assert done.returncode == 0, done.stderr
    batches = load_from_disk(str(tmp_path / "out"))
    # the seeded draw: rows shuffled with seed 0, cut into batches of 4 (the short last one dropped), batches shuffled
    order = list(range(10))
    random.Random(0).shuffle(order)
    expected = [order[:4], order[4:8]]
    random.Random(0).shuffle(expected)
    assert [row["queries"] for row in batches] == [[f"a cat {i}" for i in rows] for rows in expected]
    assert [row["positives"] for row in batches] == [[f"a dog {i}" for i in rows] for rows in expected]
    for row, rows in zip(batches, expected):
        assert row["task"] == "symmetric" and row["targets"] == pytest.approx([(i % 6) / 5 for i in rows], abs=1e-6)


def test_a_row_without_its_second_text_is_one_error_line_and_nothing_written(tmp_path):
    source = tmp_path / "pairs.jsonl"
    source.write_text(json.dumps({"sentence1": "a cat", "sentence2": "a dog", "score": 3}) + "\n"
                      + json.dumps({"sentence1": "a cat", "score": 3}) + "\n")
    done = _run(str(source), "--output", str(tmp_path / "out"))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "pairs.jsonl:2" in lines[0] and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()
