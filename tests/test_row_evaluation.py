"""benchmarks/row_evaluation.py: the seeded corpus slice, and each row's result measured again exactly when the
weights or the settings it was measured with change."""

from __future__ import annotations

import json

from benchmarks import bench_teacher, row_evaluation
from common.stages import write_json
from evaluation.loaders import RetrievalData

BASE = ["--work", "w", "--report", "r", "--backbone", "b"]


def test_slice_keeps_every_judged_document_and_fills_up_to_the_size():
    corpus = {f"d{i}": f"document {i}" for i in range(100)}
    qrels = {f"q{i}": {f"d{i}": 1, f"d{i + 50}": 2} for i in range(20)}
    data = RetrievalData(corpus, {q: f"query {q}" for q in qrels}, qrels, "toy")
    part = row_evaluation.slice_retrieval(data, queries=5, documents=30, seed=1)
    assert len(part.queries) == 5 and len(part.corpus) == 30
    assert {doc for docs in part.qrels.values() for doc in docs} <= set(part.corpus)
    small = row_evaluation.slice_retrieval(data, queries=10, documents=3, seed=0)
    assert set(small.corpus) == {doc for docs in small.qrels.values() for doc in docs}  # judged ones never dropped


def test_an_evaluation_is_measured_again_when_its_weights_or_settings_change_and_only_then(tmp_path, monkeypatch,
                                                                                          capsys):
    measured = []

    def fake_isolated(function, work, name, kind, path, adapter, identities, args):
        measured.append((name, sorted(identities)))
        for task, identity in identities.items():
            write_json(row_evaluation.evaluation_file(work, name, task),
                             {"spearman": 0.5, "average_precision": 0.5, "ndcg_at_10": 0.5, "seconds": 0,
                              "identity": identity})

    monkeypatch.setattr(row_evaluation, "isolated", fake_isolated)
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights 1")
    args = bench_teacher.parse_args(BASE)

    def run(folder=model, arguments=args, tasks=("sts", "scifact")):
        return row_evaluation.evaluated(tmp_path / "work", "row", "d2llm", str(folder), None, tasks, arguments)

    assert set(run()) == {"sts", "scifact"} and measured == [("row", ["scifact", "sts"])]
    run()
    copy = tmp_path / "elsewhere"
    copy.mkdir()
    (copy / "model.safetensors").write_bytes(b"weights 1")
    run(copy)
    assert len(measured) == 1  # same bytes, wherever they live: read back
    run(arguments=bench_teacher.parse_args([*BASE, "--scifact-queries", "7"]))
    assert measured[-1] == ("row", ["scifact"])  # the STS-B result does not read that setting
    (model / "model.safetensors").write_bytes(b"weights 2")  # retrained in the same folder
    run(arguments=bench_teacher.parse_args([*BASE, "--scifact-queries", "7"]))
    assert measured[-1] == ("row", ["scifact", "sts"])
    assert "the result on record is of other weights or settings: measured again" in capsys.readouterr().out
    legacy = row_evaluation.evaluation_file(tmp_path / "work", "row", "sts")
    legacy.write_text(json.dumps({"spearman": 0.9, "seconds": 0}))  # written before results carried an identity
    run(tasks=("sts",))
    assert measured[-1] == ("row", ["sts"])
