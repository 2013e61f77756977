"""Bad input ends each command with exit status 2 and one line on stderr, ``error: ...`` naming what is wrong; never
a traceback. Every case runs the command as a child process, as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from evaluation_tiny import CORPUS, save_tiny_d2llm, write_jsonl, write_sts
from teacher_tiny import tiny_mined

from evaluation.models import load_d2llm
from search import META_FILE, SearchIndex
from teacher.score import RUN_FILE

REPO = Path(__file__).resolve().parents[1]
PAIRS = [{"sentence1": "the cat sat", "sentence2": "a cat ran", "score": 4.0},
         {"sentence1": "the dog sat", "sentence2": "a bird ran", "score": 1.0}]
DOCS = {doc: f"{title} {text}".strip() for doc, (title, text) in CORPUS.items()}


def _error_line(*args: str) -> str:
    """The one ``error:`` line of a command that exited with status 2 and no traceback (progress bars of the data
    read before the error may stand beside it)."""
    result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr[-2000:]
    return lines[0]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("inputs")
    tiny_mined(4, k=2).save_to_disk(str(folder / "mined"))
    not_a_model = folder / "not-a-model"
    not_a_model.mkdir()
    (not_a_model / "notes.txt").write_text("no config, no weights")
    return {"pairs": write_jsonl(folder / "pairs.jsonl", PAIRS), "mined": folder / "mined",
            "not_a_model": not_a_model}


@pytest.fixture(scope="module")
def search_index(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("search")
    checkpoint = save_tiny_d2llm(folder / "ckpt")
    corpus = write_jsonl(folder / "corpus.jsonl", [{"_id": i, "title": t, "text": x} for i, (t, x) in CORPUS.items()])
    SearchIndex.build(load_d2llm(str(checkpoint), "cpu"), DOCS).save(str(folder / "index"))
    return {"checkpoint": checkpoint, "corpus": corpus, "index": folder / "index"}


def test_teacher_score_refuses_an_output_scored_from_other_settings(tiny_teacher_dir, inputs, tmp_path):
    output = tmp_path / "scored"
    output.mkdir()
    (output / RUN_FILE).write_text(json.dumps({"fingerprint": "another run"}))
    line = _error_line("-m", "teacher.score", "--input", str(inputs["mined"]), "--output", str(output), "--teacher",
                       str(tiny_teacher_dir), "--dtype", "float32")
    assert line == (f"error: {output} exists and was not scored from these inputs and settings; choose another "
                    "--output or remove it")


@pytest.mark.parametrize("command", ["label_pairs", "score", "adapt", "evaluate"])
def test_a_teacher_folder_that_is_not_a_model_is_named_in_one_line(command, inputs, tmp_path):
    data = {"label_pairs": [str(inputs["pairs"]), "--output", str(tmp_path / "out")],
            "score": ["--input", str(inputs["mined"]), "--output", str(tmp_path / "out")],
            "adapt": ["--train-pairs", str(inputs["pairs"]), "--output", str(tmp_path / "out")],
            "evaluate": ["--dev-pairs", str(inputs["pairs"])]}[command]
    line = _error_line("-m", f"teacher.{command}", *data, "--teacher", str(inputs["not_a_model"]))
    assert line.startswith(f"error: {inputs['not_a_model']}: does not load as a causal LM"), line
    assert not (tmp_path / "out").exists()


def test_comparison_reads_its_curve_before_any_row_and_names_a_missing_one(tmp_path):
    curve = tmp_path / "log_history.json"
    line = _error_line("-m", "evaluation.comparison", "--row", "student", "d2llm", str(tmp_path / "never-loaded"),
                       "--sts", str(write_sts(tmp_path / "sts.jsonl")), "--curve", str(curve), "--output",
                       str(tmp_path / "results.json"))
    assert line == f"error: {curve}: cannot read the curve (No such file or directory)"  # not the missing model
    assert not (tmp_path / "results.json").exists()


def test_search_query_names_a_damaged_index_json(search_index, tmp_path):
    index = tmp_path / "index"
    index.mkdir()
    for path in search_index["index"].iterdir():
        (index / path.name).write_bytes(path.read_bytes())
    (index / META_FILE).write_bytes((index / META_FILE).read_bytes()[:40])  # cut short, as by a full disk
    line = _error_line("search.py", "query", "--model", str(search_index["checkpoint"]), "--index", str(index),
                       "--query", "a cat", "--device", "cpu")
    assert line.startswith(f"error: {index / META_FILE}: damaged index file, not valid JSON"), line


def test_search_build_names_the_corpus_row_without_an_id(search_index, tmp_path):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"_id": "a", "text": "the cat sat"}, {"text": "a dog ran"}])
    line = _error_line("search.py", "build", "--model", str(search_index["checkpoint"]), "--corpus", str(corpus),
                       "--index", str(tmp_path / "index"), "--device", "cpu")
    assert line.startswith(f"error: {corpus}:2: missing field '_id'"), line
    assert not (tmp_path / "index").exists()


def test_search_add_names_an_id_already_in_the_index(search_index, tmp_path):
    more = write_jsonl(tmp_path / "more.jsonl", [{"_id": "d1", "text": "again"}])
    line = _error_line("search.py", "add", "--model", str(search_index["checkpoint"]), "--corpus", str(more),
                       "--index", str(search_index["index"]), "--device", "cpu")
    assert line == f"error: {more}: id 'd1' is already in the index"


def test_pretrain_ql_names_missing_pairs_before_loading_the_model(inputs, tmp_path):
    absent = tmp_path / "absent.jsonl"
    line = _error_line("-m", "baselines.pretrain_ql", "--model_name_or_path", str(inputs["not_a_model"]),
                       "--train_data", str(absent), "--output_dir", str(tmp_path / "out"), "--report_to", "none")
    assert line.startswith(f"error: {absent}: no such JSONL file or datasets folder"), line


def test_a_negative_limit_is_refused_in_one_line_before_any_reading(tmp_path):
    line = _error_line("-m", "preprocess.silver_pairs", str(tmp_path / "never-read.jsonl"), "--output",
                       str(tmp_path / "silver.jsonl"), "--limit", "-3")
    assert line == "error: --limit -3: must be at least 1 (leave it out to keep every row)"
