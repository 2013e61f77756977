"""Pure logic of benchmarks/bench_quality.py: the SciFact corpus slice, the schedule, the table and its verdicts."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from evaluation.loaders import RetrievalData

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_quality.py"
_SPEC = importlib.util.spec_from_file_location("bench_quality", _PATH)
bench = importlib.util.module_from_spec(_SPEC)
sys.modules["bench_quality"] = bench
_SPEC.loader.exec_module(bench)


def retrieval_data() -> RetrievalData:
    corpus = {f"d{i}": f"document {i}" for i in range(100)}
    queries = {f"q{i}": f"query {i}" for i in range(20)}
    qrels = {f"q{i}": {f"d{i}": 1, f"d{i + 50}": 2} for i in range(20)}
    return RetrievalData(corpus, queries, qrels, "toy")


def test_slice_keeps_every_judged_document_and_fills_up_to_the_size():
    data = retrieval_data()
    part = bench.slice_retrieval(data, queries=5, documents=30, seed=1)
    assert len(part.queries) == 5 and set(part.qrels) == set(part.queries)
    judged = {doc for docs in part.qrels.values() for doc in docs}
    assert judged <= set(part.corpus) and len(part.corpus) == 30
    assert all(part.corpus[doc] == data.corpus[doc] for doc in part.corpus)
    assert all(part.qrels[q] == data.qrels[q] for q in part.queries)
    assert bench.slice_retrieval(data, 5, 30, seed=1).corpus.keys() == part.corpus.keys()  # seeded
    assert bench.slice_retrieval(data, 5, 30, seed=2).queries.keys() != part.queries.keys()


def test_slice_never_drops_judged_documents_when_the_size_is_too_small():
    part = bench.slice_retrieval(retrieval_data(), queries=10, documents=3, seed=0)
    assert set(part.corpus) == {doc for docs in part.qrels.values() for doc in docs}  # 20 judged, no others
    whole = bench.slice_retrieval(retrieval_data(), queries=50, documents=500, seed=0)
    assert len(whole.queries) == 20 and len(whole.corpus) == 100


def test_epoch_orders_and_schedule():
    order = bench.epoch_orders(4, 2.5, seed=0)
    assert len(order) == 10 and sorted(order[:4]) == [0, 1, 2, 3] and sorted(order[4:8]) == [0, 1, 2, 3]
    factor = bench.linear_schedule(total_steps=10, warmup_steps=2)
    assert [factor(0), factor(1)] == [0.5, 1.0] and factor(2) == 1.0 and factor(9) == pytest.approx(1 / 8)


def result(**metrics: float) -> dict:
    keys = {"sts": "spearman", "nli": "average_precision", "scifact": "ndcg_at_10"}
    return {task: {keys[task]: value, "seconds": 1.0} for task, value in metrics.items()}


def test_table_ratios_points_and_verdicts_come_from_the_results():
    results = {
        "teacher": result(sts=0.80, nli=0.60, scifact=0.50),
        "bi_encoder": result(sts=0.70, nli=0.50, scifact=0.45),
        "d2llm": result(sts=0.78, nli=0.52, scifact=0.49),
    }
    rows = {row["model"]: row for row in bench.build_table(results)}
    assert list(rows) == list(bench.MODELS)
    student = rows["d2llm"]
    assert student["ratio_to_teacher"]["sts"] == pytest.approx(0.975)
    assert student["points_over_bi_encoder"]["nli"] == pytest.approx(2.0)
    assert student["meets_teacher_target"] == {"sts": True, "nli": False, "scifact": True}
    assert student["meets_bi_encoder_target"] == {"sts": True, "nli": False, "scifact": True}
    assert "ratio_to_teacher" not in rows["teacher"] and "ratio_to_teacher" not in rows["minilm"]
    assert rows["no_fi"]["metrics"] == {"sts": None, "nli": None, "scifact": None}
    assert rows["no_fi"]["meets_teacher_target"] == {"sts": None, "nli": None, "scifact": None}
    assert "NOT met" in bench.headline(list(rows.values()))
    text = bench.render_table(list(rows.values()))
    assert "| D2LLM student (PMA + IEM, CI + RI + FI) | 0.7800 | 0.5200 | 0.4900 | 0.97 / 0.87 / 0.98 |" in text
    assert "+8.0 / +2.0 / +4.0" in text and "NLI no/no" in text and "n/a" in text


def test_ratio_needs_a_positive_reference_and_headline_waits_for_numbers():
    assert bench.ratio(0.3, -0.1) is None and bench.ratio(None, 0.5) is None and bench.points(0.5, None) is None
    rows = bench.build_table({"d2llm": result(sts=0.5, nli=0.5, scifact=0.5)})
    assert bench.headline(rows).startswith("Targets: not all numbers")
    everything = {model: result(sts=0.5, nli=0.5, scifact=0.5) for model in bench.MODELS}
    everything["bi_encoder"] = result(sts=0.4, nli=0.4, scifact=0.4)
    assert bench.headline(bench.build_table(everything)).count(": met") == 2
