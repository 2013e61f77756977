"""The demo recipe's data: the bundled pairs pass its check; another folder is read through ``--data`` or
``--set pairs=``; a bad row ends the run with exit 2 and one line naming the file, row and field, before any stage
writes anything."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from preprocess.check_pairs import check_pairs

REPO = Path(__file__).resolve().parents[1]
GOOD = [{"sentence1": "a cat sits", "sentence2": "a cat is sitting", "score": 4.6},
        {"sentence1": "a dog runs", "sentence2": "the sky is blue", "score": 0.2}]


def write_pairs(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def run_pipeline(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "pipeline.py", *arguments], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_every_bundled_demo_pair_passes_the_check():
    demo = REPO / "data" / "demo" / "stsb"
    assert check_pairs(str(demo / "train.jsonl"), "graded") == 1500
    assert check_pairs(str(demo / "test.jsonl"), "graded") == 500  # a 3-point difference is beyond noise


def test_another_layout_is_read_through_the_pairs_variable(tmp_path):
    for split in ("train", "test"):
        write_pairs(tmp_path / "en" / "stsb" / f"{split}.jsonl", GOOD)
    result = run_pipeline("--set", f"pairs={tmp_path / 'en' / 'stsb'}", "--work", str(tmp_path / "work"),
                          "--until", "check")
    assert result.returncode == 0, result.stderr
    assert f"{tmp_path / 'en' / 'stsb' / 'test.jsonl'}: 2 pairs, none skipped" in result.stdout


@pytest.mark.parametrize("bad, field", [({"sentence1": "x", "sentence2": "y", "score": 7}, "score"),
                                        ({"sentence1": "", "sentence2": "y", "score": 2}, "empty")])
def test_a_bad_row_ends_the_demo_with_exit_2_and_one_line_naming_file_and_row(tmp_path, bad, field):
    write_pairs(tmp_path / "stsb" / "train.jsonl", GOOD)
    write_pairs(tmp_path / "stsb" / "test.jsonl", [*GOOD, bad])
    work = tmp_path / "work"
    result = run_pipeline("--data", str(tmp_path), "--work", str(work))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert f"{tmp_path / 'stsb' / 'test.jsonl'}:3" in lines[0] and field in lines[0]  # file:row
    assert not work.exists()  # nothing ran, nothing was written
