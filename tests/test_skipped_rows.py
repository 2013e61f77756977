"""Rows the reader skips are never dropped without a word: each command counts a source's skipped rows in one line
on stderr and records them in its output's metadata, or refuses them with one line and exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import load_from_disk

from preprocess.read_report import SKIPPED_FILE

REPO = Path(__file__).resolve().parents[1]
FOUR_ROWS = [{"sentence1": "the cat sat", "sentence2": "a cat ran", "score": 4.0},
             {"sentence1": "", "sentence2": "a dog ran", "score": 2.0},  # row 2: an empty text
             {"sentence1": "the dog sat", "sentence2": "the dog sat", "score": 5.0},  # row 3: identical texts
             {"sentence1": "the bird sat", "sentence2": "a fish ran", "score": 1.0}]
IDENTICAL = "identical query and passage"


@pytest.fixture
def four_rows(tmp_path) -> Path:
    path = tmp_path / "four.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in FOUR_ROWS))
    return path


def _run(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def _announced(result: subprocess.CompletedProcess, source: Path) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith(f"{source}: skipped")]


def _both_skips(source: Path) -> tuple[str, dict]:
    """The stderr line and the metadata record of ``FOUR_ROWS``: 2 of 4 rows skipped, rows 2 and 3."""
    line = (f"{source}: skipped 2 of 4 rows (empty text: 1, {IDENTICAL}: 1), e.g. {source}:2, {source}:3")
    record = {"rows": 4, "skipped": 2, "reasons": {"empty text": 1, IDENTICAL: 1},
              "examples": {"empty text": [f"{source}:2"], IDENTICAL: [f"{source}:3"]}}
    return line, record


def test_pair_batches_counts_the_skipped_rows_on_stderr_and_in_the_datasets_skipped_json(four_rows, tmp_path):
    output = tmp_path / "batches"
    result = _run("preprocess.pair_batches", str(four_rows), "--output", str(output), "--batch-size", "2")
    line, record = _both_skips(four_rows)
    assert _announced(result, four_rows) == [line]
    assert json.loads((output / SKIPPED_FILE).read_text()) == {str(four_rows): record}
    assert [sorted(queries) for queries in load_from_disk(str(output))["queries"]] == [["the bird sat", "the cat sat"]]


def test_label_pairs_counts_the_skipped_rows_of_each_source_on_stderr_and_in_skipped_json(four_rows, tmp_path):
    output = tmp_path / "labelled"
    result = _run("teacher.label_pairs", str(four_rows), "--output", str(output), "--teacher", str(tmp_path / "none"),
                  "--gold-weight", "1", "--batch-size", "2")
    line, record = _both_skips(four_rows)
    assert _announced(result, four_rows) == [line]
    assert json.loads((output / SKIPPED_FILE).read_text()) == {str(four_rows): record}
    assert sorted(load_from_disk(str(output))[0]["targets"]) == pytest.approx([0.2, 0.8])


def test_silver_pairs_counts_the_skipped_rows_on_stderr_and_beside_its_pairs_file(four_rows, tmp_path):
    output = tmp_path / "silver.jsonl"
    result = _run("preprocess.silver_pairs", str(four_rows), "--output", str(output))
    line, record = _both_skips(four_rows)
    assert _announced(result, four_rows) == [line]
    assert json.loads((tmp_path / "silver.jsonl.skipped.json").read_text()) == {str(four_rows): record}
    sentences = {text for row in map(json.loads, output.read_text().splitlines()) for text in row.values()}
    assert sentences <= {"the cat sat", "a cat ran", "the bird sat", "a fish ran"}  # none of a skipped row


def test_teacher_evaluate_counts_the_skipped_dev_rows_on_stderr_and_in_its_json(four_rows, tiny_teacher_dir):
    result = _run("teacher.evaluate", "--teacher", str(tiny_teacher_dir), "--dev-pairs", str(four_rows), "--dtype",
                  "float32")
    line, record = _both_skips(four_rows)
    assert _announced(result, four_rows) == [line]
    report = json.loads(result.stdout)
    assert report["skipped"] == {str(four_rows): record} and report["pairs"]["pairs"] == 2


def test_teacher_adapt_refuses_an_empty_training_text_with_one_line_before_loading_the_model(four_rows, tmp_path):
    result = subprocess.run([sys.executable, "-m", "teacher.adapt", "--teacher", str(tmp_path / "none"), "--output",
                             str(tmp_path / "adapter"), "--train-pairs", str(four_rows)],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [f"error: {four_rows}:2: field sentence1 or sentence2 is empty (teacher "
                                          "adaptation takes no empty texts)"]
    assert not (tmp_path / "adapter").exists()


def test_teacher_adapt_counts_its_other_skipped_rows_on_stderr_and_in_its_report(tmp_path, tiny_teacher_dir):
    rows = [FOUR_ROWS[0], {**FOUR_ROWS[1], "sentence1": "the dog ran"}, *FOUR_ROWS[2:]]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    adapter = tmp_path / "adapter"
    result = _run("teacher.adapt", "--teacher", str(tiny_teacher_dir), "--output", str(adapter), "--train-pairs",
                  str(pairs), "--dev-pairs", str(pairs), "--max-steps", "1", "--batch-size", "2", "--lora-r", "2",
                  "--dtype", "float32")
    line = f"{pairs}: skipped 1 of 4 rows ({IDENTICAL}: 1), e.g. {pairs}:3"
    assert _announced(result, pairs) == [line, line]  # the training file, then the same file as dev pairs
    record = {"rows": 4, "skipped": 1, "reasons": {IDENTICAL: 1}, "examples": {IDENTICAL: [f"{pairs}:3"]}}
    report = json.loads((adapter / "adaptation_report.json").read_text())
    assert report["skipped"] == {"train": {str(pairs): record}, "dev": {str(pairs): record}}
    assert report["train_size"] == 3
