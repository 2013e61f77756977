"""Bad input ends a command with one line naming the file, row and column, and exit status 2; no traceback."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from evaluation_tiny import save_tiny_d2llm, write_sts
from scored_fixture import scored_rows, to_dataset
from test_train_cli import _config

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
