"""Pure logic of benchmarks/bench_quality.py: the SciFact corpus slice, the train.py commands, the table, verdicts."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from evaluation.loaders import RetrievalData

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_quality.py"
_FOUND_MODULE = importlib.util.spec_from_file_location("bench_quality", _PATH)
bench = importlib.util.module_from_spec(_FOUND_MODULE)
sys.modules["bench_quality"] = bench
_FOUND_MODULE.loader.exec_module(bench)


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


def test_every_trained_row_is_a_train_py_command_with_its_options(tmp_path):
    import argparse

    from train import parse_arguments

    args = argparse.Namespace(epochs=1.0, max_tokens=64, seed=0, bi_pooling="mean")
    parsed = {}
    for name in (*bench.STUDENTS, "bi_encoder"):
        command = bench.train_command(name, "BACKBONE", tmp_path / "scored", tmp_path / name, args)
        assert command[command.index("train.py") - 1] == "no"  # accelerate launch's last option, then the script
        model, _, training = parse_arguments(command[command.index("train.py") + 1:])
        assert (model.model_name_or_path, model.max_seq_length, training.output_dir) == (
            "BACKBONE", 64, str(tmp_path / name))
        parsed[name] = (model, training)
    assert parsed["no_fi"][1].eta == 0 and parsed["d2llm"][1].eta > 0
    assert parsed["no_ri"][1].beta == parsed["no_ri"][1].gamma == 0
    assert parsed["mean_pool"][0].pooling == "mean" and parsed["d2llm"][0].pooling == "pma"
    assert parsed["pma_mean_init"][0].pma_init == "mean" and parsed["d2llm"][0].pma_init == "normal"
    assert parsed["pma_mean_init"][0].head_settings()["pma_init"] == "mean"
    model, training = parsed["bi_encoder"]
    assert model.objective == "bi-encoder" and model.bi_encoder_pooling == "mean" and not model.prompt_template
    assert training.bi_encoder_loss_weights["angle_weight"] == 0 and training.bi_encoder_loss_weights["ibn_weight"] == 1
    assert training.bi_encoder_temperature == training.tau_inbatch  # the students' in-batch temperature
    assert training.learning_rate == parsed["d2llm"][1].learning_rate


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


def test_report_only_refuses_a_work_folder_without_scored_batches_or_with_other_settings(tmp_path):
    with pytest.raises(SystemExit, match="nothing to report"):
        bench.main(["--work", str(tmp_path), "--report-only"])
    (tmp_path / "scored").mkdir()
    settings = bench.settings_of(bench.parse_args(["--teacher-pairs", "640"]))
    (tmp_path / "results.json").write_text(json.dumps({"settings": settings, "invocations": []}))
    with pytest.raises(SystemExit, match="other settings"):
        bench.main(["--work", str(tmp_path), "--report-only"])
    assert json.loads((tmp_path / "results.json").read_text())["invocations"] == []  # the ledger is untouched


def test_report_only_adds_evaluation_files_the_ledger_lacks_and_accepts_folders_older_than_a_setting(
        tmp_path, monkeypatch):
    work, report = tmp_path / "work", tmp_path / "report"
    (work / "scored").mkdir(parents=True)
    settings = bench.settings_of(bench.parse_args(["--teacher-pairs", "640"]))
    old_settings = {key: value for key, value in settings.items() if key not in bench.LATER_SETTINGS}
    recorded = {"task": "sts", "spearman": 0.5, "seconds": 1.0}
    (work / "results.json").write_text(json.dumps({
        "settings": old_settings, "stage_seconds": {}, "results": {"d2llm": {"sts": recorded}},
        "invocations": [{"command": "python benchmarks/bench_quality.py --teacher-pairs 640", "seconds": 9.0}]}))
    bench.write_json(bench.evaluation_file(work, "bi_encoder", "sts"), {**recorded, "spearman": 0.4})
    monkeypatch.setattr(bench, "training_sizes", lambda mined, scored: {
        "examples": {"stsb": 1}, "scored_batches": {"symmetric": 1}, "batch_size": 8, "negatives": 3})
    monkeypatch.setattr(bench, "evaluation_jobs", lambda args: {})
    before = (work / "results.json").read_text()

    bench.main(["--work", str(work), "--report", str(report), "--report-only", "--teacher-pairs", "640"])

    written = json.loads(report.with_suffix(".json").read_text())
    assert written["results"]["d2llm"]["sts"]["spearman"] == 0.5
    assert written["results"]["bi_encoder"]["sts"]["spearman"] == 0.4
    student = next(row for row in written["table"] if row["model"] == "d2llm")
    assert student["points_over_bi_encoder"]["sts"] == pytest.approx(10.0)
    assert (work / "results.json").read_text() == before  # nothing run, nothing recorded
    with pytest.raises(SystemExit, match="other settings"):
        bench.main(["--work", str(work), "--report", str(report), "--report-only", "--teacher-pairs", "640",
                    "--teacher-bf16"])
