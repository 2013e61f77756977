"""The main job's --data: the bundled demo layout and the shared public layout are found; a missing file or a bad
row ends the job with exit 2 and one line naming the file, row and field, before any stage runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline
from preprocess.readers import DataError

REPO = Path(__file__).resolve().parents[1]


def write_pairs(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


GOOD = [{"sentence1": "a cat sits", "sentence2": "a cat is sitting", "score": 4.6},
        {"sentence1": "a dog runs", "sentence2": "the sky is blue", "score": 0.2}]


def test_the_bundled_demo_data_is_found_and_every_row_is_usable():
    data = pipeline.find_data(str(pipeline.DEMO))
    assert Path(data.train).name == "train.jsonl" and Path(data.test).name == "test.jsonl"
    assert Path(data.retrieval) == pipeline.DEMO / "retrieval"
    pipeline.check_data(data)
    held_out = Path(data.test).read_text(encoding="utf-8").splitlines()
    assert len(held_out) >= 300  # several hundred pairs: a 3-point difference is beyond noise


def test_the_shared_layout_is_found_with_the_bundled_retrieval_set(tmp_path):
    for split in ("train", "test"):
        write_pairs(tmp_path / "en" / "stsb" / f"{split}.jsonl", GOOD)
    data = pipeline.find_data(str(tmp_path))
    assert data.train == str(tmp_path / "en" / "stsb" / "train.jsonl")
    assert data.retrieval == str(pipeline.DEMO / "retrieval")


def test_a_folder_without_held_out_pairs_is_refused_naming_the_missing_file(tmp_path):
    write_pairs(tmp_path / "stsb" / "train.jsonl", GOOD)
    with pytest.raises(DataError, match="test.jsonl"):
        pipeline.find_data(str(tmp_path))


@pytest.mark.parametrize("bad, field", [({"sentence1": "x", "sentence2": "y", "score": 7}, "score"),
                                        ({"sentence1": "", "sentence2": "y", "score": 2}, "empty")])
def test_a_bad_row_ends_the_main_job_with_exit_2_and_one_line_naming_file_and_row(tmp_path, bad, field):
    write_pairs(tmp_path / "stsb" / "train.jsonl", GOOD)
    write_pairs(tmp_path / "stsb" / "test.jsonl", [*GOOD, bad])
    shutil.copytree(pipeline.DEMO / "retrieval", tmp_path / "retrieval")
    work = tmp_path / "work"
    result = subprocess.run([sys.executable, "pipeline.py", "--data", str(tmp_path), "--workdir", str(work)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "test.jsonl" in lines[0] and "3" in lines[0] and field in lines[0]
    assert not work.exists()  # nothing ran, nothing was written
