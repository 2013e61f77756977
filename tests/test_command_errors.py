"""Bad input ends a command with one line naming the file, row and column, and exit status 2; no traceback."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from datasets import Dataset
from evaluation_tiny import save_tiny_d2llm, write_sts
from scored_fixture import scored_rows, to_dataset
from test_train_cli import _config

from common.schema import MINED_FEATURES

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr[-2000:]
    return lines[0]


def test_readers_name_the_file_row_and_column_of_a_row_without_sentence2(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"sentence1": "a", "sentence2": "b", "score": 4}) + "\n"
                     + json.dumps({"sentence1": "c", "score": 3}) + "\n")
    line = _one_error_line(_run("-m", "preprocess.readers", str(pairs), "--output", str(tmp_path / "read")))
    assert f"{pairs}:2: missing column 'sentence2'" in line
    assert not (tmp_path / "read").exists()


def test_train_py_names_the_dataset_batch_and_column_of_a_nan_teacher_logit(tmp_path, backbone):
    rows = scored_rows(num_batches=2)
    rows[1]["teacher_hard_logits"][0][1][0] = math.nan
    data = tmp_path / "scored-nan"
    to_dataset(rows).save_to_disk(str(data))
    line = _one_error_line(_run("train.py", _config(tmp_path, backbone, str(data))))
    assert str(data) in line and "batch 1 (row 1)" in line and "teacher_hard_logits" in line
    assert not (tmp_path / "out").exists()


def test_a_truncated_model_safetensors_is_named_by_train_and_evaluate(tmp_path, backbone):
    checkpoint = save_tiny_d2llm(tmp_path / "student")
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    sts = write_sts(tmp_path / "sts.jsonl")
    line = _one_error_line(_run("evaluate_model.py", "--model", str(checkpoint), "--sts", str(sts), "--device", "cpu"))
    assert f"{weights}: cannot read the weights" in line
    data = tmp_path / "scored"
    to_dataset(scored_rows(num_batches=2)).save_to_disk(str(data))
    line = _one_error_line(_run("train.py", _config(tmp_path, str(checkpoint), str(data))))
    assert f"{weights}: cannot read the weights" in line


def _only_line(result: subprocess.CompletedProcess) -> str:
    """The one line of stderr (exit status 2): nothing else is written there, no log line, no progress bar."""
    line = _one_error_line(result)
    assert result.stderr.splitlines() == [line], result.stderr[-2000:]
    return line


def _pairs_without_sentence2(path: Path) -> Path:
    path.write_text(json.dumps({"sentence1": "the cat sat", "sentence2": "a cat sat", "score": 4.5}) + "\n"
                    + json.dumps({"sentence1": "the dog ran", "score": 1.0}) + "\n")
    return path


def test_mining_names_the_read_folder_and_the_row_that_has_too_few_negatives(tmp_path):
    from preprocess.readers import read_examples, save_read

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"sentence1": a, "sentence2": b, "score": 5.0}) + "\n"
                             for a, b in (("a red apple", "an apple that is red"), ("a blue sky", "the sky is blue"))))
    read = tmp_path / "read"
    save_read(read_examples(str(pairs)), read)
    # the row is refused after retrieval, so BM25's progress line comes first on stderr: one error line
    line = _one_error_line(_run("-m", "preprocess.mining", "--input", str(read), "--output", str(tmp_path / "mined"),
                                "--k", "3", "--methods", "bm25"))
    assert line.startswith(f"error: {read}: row 0 (query 'a red apple'): only 2 eligible negatives"), line
    assert not (tmp_path / "mined").exists()


def test_mining_names_a_missing_read_folder(tmp_path):
    line = _only_line(_run("-m", "preprocess.mining", "--input", str(tmp_path / "none"), "--output",
                           str(tmp_path / "mined"), "--methods", "bm25"))
    assert line == f"error: {tmp_path / 'none' / 'examples'}: missing; write it with python -m preprocess.readers"


def test_teacher_adapt_names_the_file_row_and_column_before_loading_a_model(tmp_path):
    pairs = _pairs_without_sentence2(tmp_path / "pairs.jsonl")
    line = _only_line(_run("-m", "teacher.adapt", "--teacher", str(tmp_path / "no-model"), "--output",
                           str(tmp_path / "adapter"), "--train-pairs", str(pairs)))
    # the teacher (missing here) is never loaded
    assert line == f"error: {pairs}:2: missing column 'sentence2' (columns: ['score', 'sentence1'])"
    assert not (tmp_path / "adapter").exists()


def test_teacher_score_names_the_dataset_row_and_column_before_loading_a_model(tmp_path):
    from teacher_tiny import tiny_mined

    rows = tiny_mined(3, k=2).to_list()
    rows[1]["negatives"] = []
    mined = tmp_path / "mined"
    Dataset.from_list(rows, features=MINED_FEATURES).save_to_disk(str(mined))
    line = _only_line(_run("-m", "teacher.score", "--input", str(mined), "--output", str(tmp_path / "scored"),
                           "--teacher", str(tmp_path / "no-model")))
    assert line == f"error: {mined}: row 1 has no negatives"
    assert not (tmp_path / "scored").exists()


def test_teacher_evaluate_names_the_file_row_and_column_before_loading_a_model(tmp_path):
    pairs = _pairs_without_sentence2(tmp_path / "dev.jsonl")
    line = _only_line(_run("-m", "teacher.evaluate", "--teacher", str(tmp_path / "no-model"), "--dev-pairs",
                           str(pairs)))
    assert line == f"error: {pairs}:2: missing column 'sentence2' (columns: ['score', 'sentence1'])"
