"""Pure logic of benchmarks/bench_quality.py: the SNLI split, the corpus slice, the train.py command of every row,
the learning-curve subsets, the verdicts and the report written from a work folder."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from scored_fixture import scored_dataset

from benchmarks import quality_report, row_evaluation
from evaluation.loaders import RetrievalData
from preprocess.split_pairs import split_by_premise

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_quality.py"
_FOUND_MODULE = importlib.util.spec_from_file_location("bench_quality", _PATH)
bench = importlib.util.module_from_spec(_FOUND_MODULE)
sys.modules["bench_quality"] = bench
_FOUND_MODULE.loader.exec_module(bench)


def snli_rows() -> list[dict]:
    labels = ("entailment", "neutral", "contradiction")
    return [{"sentence1": f"premise {p}", "sentence2": f"hypothesis {p} {label}", "label": label}
            for p in range(11) for label in labels]


def test_snli_halves_share_no_premise_keep_every_row_and_are_seeded():
    rows = snli_rows()
    first, second = split_by_premise(rows, seed=0)
    assert not {row["sentence1"] for row in first} & {row["sentence1"] for row in second}
    assert sorted(map(json.dumps, first + second)) == sorted(map(json.dumps, rows))
    assert len({row["sentence1"] for row in first}) == 5
    assert split_by_premise(rows, seed=0) == (first, second)
    assert split_by_premise(rows, seed=1)[0] != first


def test_slice_keeps_every_judged_document_and_fills_up_to_the_size():
    corpus = {f"d{i}": f"document {i}" for i in range(100)}
    qrels = {f"q{i}": {f"d{i}": 1, f"d{i + 50}": 2} for i in range(20)}
    data = RetrievalData(corpus, {q: f"query {q}" for q in qrels}, qrels, "toy")
    part = row_evaluation.slice_retrieval(data, queries=5, documents=30, seed=1)
    assert len(part.queries) == 5 and len(part.corpus) == 30
    assert {doc for docs in part.qrels.values() for doc in docs} <= set(part.corpus)
    small = row_evaluation.slice_retrieval(data, queries=10, documents=3, seed=0)
    assert set(small.corpus) == {doc for docs in small.qrels.values() for doc in docs}  # judged ones never dropped


@pytest.mark.parametrize("fast_bf16", [False, True])
def test_every_trained_row_is_a_train_py_command_with_its_options(tmp_path, monkeypatch, fast_bf16):
    """End-to-end rows train in bf16 exactly where the (here pinned) hardware is fast at it, on the CPU."""
    import torch

    import trainer_d2llm
    from train import parse_arguments

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(trainer_d2llm, "fast_bf16", lambda device="cpu": fast_bf16 and device == "cpu")

    args = bench.parse_args(["--heads-epochs", "3", "--epochs", "2", "--max-tokens", "64"])
    parsed = {}
    for name, row in bench.ROWS.items():
        if row.kind == "none":
            continue
        command = bench.train_command(row, "BACKBONE", tmp_path / "scored", tmp_path / "cache", tmp_path / name, args)
        assert command[command.index("train.py") - 1] == "no"  # accelerate launch's last option, then the script
        model, _, training = parse_arguments(command[command.index("train.py") + 1:])
        assert (model.model_name_or_path, model.max_seq_length, training.output_dir) == (
            "BACKBONE", 64, str(tmp_path / name))
        parsed[name] = (model, training)
    for name in ("heads_spec", "heads_kd", "heads_no_pairwise", "heads_gold", "heads_gold_graded"):
        training = parsed[name][1]
        assert (training.head_warmup_epochs, training.num_train_epochs) == (3, 0)
        assert training.head_warmup_cache_dir == str(tmp_path / "cache")
    assert parsed["e2e_warmup"][1].head_warmup_epochs == 3
    assert parsed["e2e_spec"][1].head_warmup_epochs == 0 and parsed["bi_encoder"][1].head_warmup_epochs == 0
    assert all(parsed[name][1].num_train_epochs == 2 and parsed[name][1].bf16 is fast_bf16
               and parsed[name][1].use_cpu is fast_bf16
               for name in ("e2e_warmup", "e2e_spec", "bi_encoder", "bi_cosent"))
    assert not any(parsed[name][1].bf16 for name in parsed if name.startswith("heads_"))
    spec, kd, pairwise, gold = (parsed[name][1].loss_weights for name in
                                ("heads_spec", "heads_kd", "heads_no_pairwise", "heads_gold"))
    assert spec.kd_weight == 0 and spec.gamma > 0 and spec.hard_weighting == "spec"
    assert kd.kd_weight == 1 and kd.kd_student_temperature == 0.05
    assert pairwise.gamma == 0 and pairwise.beta == spec.beta
    assert (gold.hard_weighting, gold.beta, gold.gamma, gold.eta, gold.kd_weight) == ("none", 0, 0, 0, 0)
    cosent = parsed["bi_cosent"][1].bi_encoder_loss_weights
    assert (cosent["ibn_weight"], cosent["angle_weight"], cosent["cosine_weight"]) == (0, 1, 1)
    assert bench.ROWS["bi_cosent"].data == bench.ROWS["heads_gold_graded"].data == "stsb_pairs"
    assert bench.ROWS["bi_encoder"].data == "full"
    graded = parsed["heads_gold_graded"][1].loss_weights
    assert (graded.alpha, graded.tau_hard) == (spec.alpha, spec.tau_hard)  # L_gold: alpha and tau_hard of the config
    model, training = parsed["bi_encoder"]
    assert model.objective == "bi-encoder" and not model.prompt_template
    assert training.bi_encoder_loss_weights["angle_weight"] == 0 and training.bi_encoder_loss_weights["ibn_weight"] == 1


def test_a_curve_subset_holds_the_first_batches_of_a_seeded_shuffle(tmp_path):
    scored = tmp_path / "scored"
    scored_dataset(num_batches=10, batch_size=4).save_to_disk(str(scored))
    bench.write_subset(scored, 12, seed=0, out=tmp_path / "q12")
    from datasets import load_from_disk

    subset, whole = load_from_disk(str(tmp_path / "q12")), load_from_disk(str(scored))
    assert len(subset) == 3 and all(row in list(whole) for row in subset)
    with pytest.raises(SystemExit, match="only 10 batches"):
        bench.write_subset(scored, 44, seed=0, out=tmp_path / "q44")


def test_verdicts_give_points_and_the_share_of_the_gap_closed():
    v = bench.verdicts(0.60, 0.50, 0.70)
    assert v["points"] == pytest.approx(10.0) and v["gap_closed"] == pytest.approx(0.5)
    assert v["meets_points"] and v["meets_gap"]
    v = bench.verdicts(0.52, 0.50, 0.70)
    assert v["points"] == pytest.approx(2.0) and not v["meets_points"] and not v["meets_gap"]
    assert bench.verdicts(0.6, 0.7, 0.65)["gap_closed"] is None  # the bi-encoder beats the teacher: no gap
    assert bench.verdicts(None, 0.5, 0.7)["meets_points"] is None


def _write(work: Path, name: str, task: str, value: float, scores: list[float] | None = None) -> None:
    key = quality_report.TASKS[task][1]
    quality_report.write_json(quality_report.evaluation_file(work, name, task),
                     {key: value, "seconds": 1.0, **({"scores": scores} if scores else {})})


def test_report_only_writes_the_table_agreement_curve_and_scifact_without_touching_the_ledger(tmp_path):
    work, report = tmp_path / "work", tmp_path / "report"
    scored_dataset(num_batches=4, batch_size=4).save_to_disk(str(work / "scored"))
    settings = bench.settings_of(bench.parse_args(["--curve", "8"]))
    results = {}
    for name, sts, nli in (("teacher", 0.8, 0.6), ("bi_encoder", 0.6, 0.5), ("heads_spec", 0.7, 0.58),
                           ("heads_spec@8", 0.5, 0.45)):
        results[name] = {"sts": {"spearman": sts}, "nli": {"average_precision": nli}}
    results["bm25"] = {"scifact": {"ndcg_at_10": 0.6}}
    results["teacher_scifact"] = {"scifact": {"ndcg_at_10": 0.5}}
    (work / "results.json").write_text(json.dumps({"settings": settings, "stage_seconds": {"score": 5.0},
                                                   "results": results,
                                                   "invocations": [{"command": "CMD", "seconds": 60.0}]}))
    _write(work, "teacher", "sts", 0.8, [1.0, 2.0, 3.0, 4.0])
    _write(work, "heads_spec", "sts", 0.7, [0.1, 0.3, 0.2, 0.4])
    _write(work, "heads_kd", "sts", 0.65, [0.4, 0.3, 0.2, 0.1])  # a row still running: its finished task counts
    before = (work / "results.json").read_text()

    bench.main(["--work", str(work), "--report", str(report), "--report-only", "--curve", "8"])

    assert (work / "results.json").read_text() == before
    written = json.loads(report.with_suffix(".json").read_text())
    student = next(entry for entry in written["table"] if entry["row"] == "heads_spec")
    assert student["agreement"] == pytest.approx(0.8)  # ranks 1 3 2 4 against 1 2 3 4
    assert student["verdicts"]["sts"]["gap_closed"] == pytest.approx(0.5)
    nli = student["verdicts"]["nli"]  # 0.58 against bi-encoder 0.5 and teacher 0.6: 8 points, 0.8 of the gap
    assert nli["points"] == pytest.approx(8.0) and nli["gap_closed"] == pytest.approx(0.8)
    assert nli["meets_points"] is True and nli["meets_gap"] is True
    assert next(entry for entry in written["table"] if entry["row"] == "heads_kd")["sts"] == 0.65
    assert written["curve"]["heads_spec"] == [[8, {"sts": 0.5, "nli": 0.45}], [16, {"sts": 0.7, "nli": 0.58}]]
    text = report.with_suffix(".md").read_text()
    assert "cannot teach retrieval" in text and "| BM25 alone | 0.6000 |" in text
    assert report.with_suffix(".png").stat().st_size > 1000
    with pytest.raises(SystemExit, match="other settings"):
        bench.main(["--work", str(work), "--report", str(report), "--report-only"])


def test_every_row_trains_on_its_own_data_and_the_curve_on_its_subsets(tmp_path, monkeypatch):
    trained, _, _ = _recorded_run(tmp_path, monkeypatch, ["--curve", "256"])
    scored = {"full": tmp_path / "scored", "stsb_pairs": tmp_path / "pairs", "q256": tmp_path / "q256"}
    trained_rows = {name for name, row in bench.ROWS.items() if row.kind != "none"}
    assert set(trained) == trained_rows | {f"{name}@256" for name in bench.CURVE_ROWS}
    for name in trained_rows:
        assert trained[name] == str(scored[bench.ROWS[name].data]), name
    assert trained["heads_gold_graded"] == trained["bi_cosent"] == str(tmp_path / "pairs")
    assert all(trained[f"{name}@256"] == str(tmp_path / "q256") for name in bench.CURVE_ROWS)


def _recorded_run(tmp_path, monkeypatch, argv: list[str]) -> tuple[dict[str, str], list[tuple], list[list[str]]]:
    """``run_rows`` with every command and evaluation recorded: (trained rows -> data, evaluations, commands)."""
    from common import embedded_models

    trained: dict[str, str] = {}
    evaluated: list[tuple] = []
    commands: list[list[str]] = []

    class RecordingLedger:
        def stage(self, name, output, build):
            build(output)
            return output

    def record(command):
        commands.append(list(command))
        if "--output_dir" in command:
            trained[Path(command[command.index("--output_dir") + 1]).name] = command[
                command.index("--train_dataset") + 1]

    monkeypatch.setattr(bench, "sh", record)
    monkeypatch.setattr(bench, "evaluate_row", lambda ledger, work, name, kind, path, tasks, args, adapter=None:
                        evaluated.append((name, tuple(tasks), adapter)))
    monkeypatch.setattr(embedded_models, "minilm_dir", lambda: "MINILM")
    args = bench.parse_args(argv)
    scored = {"full": tmp_path / "scored", "stsb_pairs": tmp_path / "pairs", "q256": tmp_path / "q256"}
    _lora_folder(tmp_path / "teacher")
    bench.run_rows(RecordingLedger(), tmp_path, "BACKBONE", tmp_path / "teacher", scored, args)
    return trained, evaluated, commands


def test_rows_and_no_scifact_run_only_the_chosen_rows_and_their_curve(tmp_path, monkeypatch):
    trained, evaluated, _ = _recorded_run(tmp_path, monkeypatch, [
        "--rows", "teacher", "heads_spec", "bi_encoder", "e2e_spec", "--no-scifact", "--curve", "256"])
    assert set(trained) == {"heads_spec", "bi_encoder", "e2e_spec", "heads_spec@256", "bi_encoder@256"}
    assert [name for name, _, _ in evaluated] == ["teacher", "heads_spec", "bi_encoder", "heads_spec@256",
                                                  "bi_encoder@256", "e2e_spec"]
    assert all(tasks == ("sts", "nli") for _, tasks, _ in evaluated)


def _lora_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text("{}")
    return folder


def test_a_given_teacher_adapter_reranks_scifact_and_no_teacher_is_adapted(tmp_path, monkeypatch):
    adapter = _lora_folder(tmp_path / "my_teacher")
    _, evaluated, commands = _recorded_run(tmp_path, monkeypatch, [
        "--rows", "heads_spec", "--curve", "--teacher-adapter", str(adapter)])
    assert not any("teacher.adapt" in command for command in commands)
    scifact = [(name, adapter_path) for name, tasks, adapter_path in evaluated if tasks == ("scifact",)]
    assert scifact == [("bm25", None), ("teacher_scifact", str(adapter)), ("heads_spec", None)]  # minilm: not in --rows


def test_a_fully_fine_tuned_teacher_scores_and_reranks_as_its_own_model_not_as_an_adapter(tmp_path, monkeypatch):
    full, lora = tmp_path / "full", _lora_folder(tmp_path / "lora")
    full.mkdir()
    (full / "config.json").write_text("{}")
    args = bench.parse_args(["--teacher-adapter", str(full), "--rows", "teacher"])
    command = bench.score_command("BACKBONE", full, [tmp_path / "mined"], tmp_path / "out", tmp_path / "shards", args)
    assert command[command.index("--teacher") + 1] == str(full) and "--adapter" not in command
    command = bench.score_command("BACKBONE", lora, [tmp_path / "mined"], tmp_path / "out", tmp_path / "shards", args)
    assert (command[command.index("--teacher") + 1], command[command.index("--adapter") + 1]) == ("BACKBONE", str(lora))
    evaluated = []
    monkeypatch.setattr(bench, "evaluate_row", lambda ledger, work, name, kind, path, tasks, args, adapter=None:
                        evaluated.append((name, path, adapter)))
    bench.run_scifact(None, tmp_path, "BACKBONE", args)
    assert ("teacher_scifact", str(full), None) in evaluated


def test_a_failed_stage_ends_the_benchmark_with_one_line_naming_its_status_and_command():
    with pytest.raises(SystemExit) as ended:
        bench.sh([sys.executable, "-c", "raise SystemExit(3)"])

    assert str(ended.value).startswith("error: a stage failed with exit status 3 (its message is above): ")
    assert "raise SystemExit(3)" in str(ended.value) and "\n" not in str(ended.value)


def test_a_failed_evaluation_child_ends_the_benchmark_with_one_line_naming_its_status():
    with pytest.raises(SystemExit, match=r"^error: exit failed in its own process with exit status 3 \(its message"):
        row_evaluation.isolated(sys.exit, 3)


def test_an_unknown_row_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(["--rows", "heads_spec", "no_such_row"])
    assert exit_info.value.code == 2 and "no_such_row" in capsys.readouterr().err


def test_the_report_names_a_given_adapter_and_lists_only_the_rows_run(tmp_path):
    work, report, adapter = tmp_path / "work", tmp_path / "report", tmp_path / "mix"
    adapter.mkdir()
    (adapter / "adaptation_report.json").write_text(json.dumps({"settings": {
        "train_pairs": ["/d/stsb/train.jsonl"], "train_mined": ["/runs/mined_scifact"], "prompt_preset": "short",
        "config": {"pair_objective": "cosent", "mined_objective": "listwise"}}}))
    scored_dataset(num_batches=4, batch_size=4).save_to_disk(str(work / "scored"))
    argv = ["--rows", "teacher", "heads_spec", "bi_encoder", "--no-scifact", "--curve", "--teacher-adapter",
            str(adapter)]
    settings = bench.settings_of(bench.parse_args(argv))
    results = {name: {"sts": {"spearman": sts}, "nli": {"average_precision": nli}}
               for name, sts, nli in (("teacher", 0.8, 0.6), ("bi_encoder", 0.6, 0.5), ("heads_spec", 0.7, 0.58))}
    (work / "results.json").write_text(json.dumps({"settings": settings, "stage_seconds": {}, "results": results,
                                                   "invocations": [{"command": "CMD", "seconds": 1.0}]}))
    for name, value in (("teacher", 0.8), ("heads_spec", 0.7), ("bi_encoder", 0.6)):
        _write(work, name, "sts", value, [1.0, 2.0, 3.0, 4.0])

    bench.main(["--work", str(work), "--report", str(report), "--report-only", *argv])

    text = report.with_suffix(".md").read_text()
    assert "LoRA adapter mix (`--teacher-adapter`; trained on stsb/train.jsonl, mined_scifact/, cosent pairs" in text
    assert [entry["row"] for entry in json.loads(report.with_suffix(".json").read_text())["table"]] == [
        "teacher", "heads_spec", "bi_encoder"]
    assert "Not run (`--no-scifact`)." in text and "all-MiniLM" not in text
    results["bm25"] = {"scifact": {"ndcg_at_10": 0.6}}
    results["teacher_scifact"] = {"scifact": {"ndcg_at_10": 0.5}}
    from benchmarks.quality_report import render_scifact

    assert "| the teacher (`--teacher-adapter`), reranking BM25 | 0.5000 |" in render_scifact(results, True)
    assert "| teacher adapted on SciFact train, reranking BM25 | 0.5000 |" in render_scifact(results)


@pytest.mark.parametrize("method, words", [("lora", "with the LoRA adapter"), ("full", "fine-tuned in full")])
def test_the_teacher_description_says_whether_the_given_teacher_is_an_adapter_or_fine_tuned_in_full(
        tmp_path, method, words):
    (tmp_path / "adaptation_report.json").write_text(json.dumps({"settings": {"config": {"method": method}}}))

    described = quality_report.teacher_description({"teacher_adapter": str(tmp_path)})

    assert described.startswith(f"SmolLM2-135M-Instruct {words} {tmp_path.name} (`--teacher-adapter`")


def test_an_evaluation_is_measured_again_when_its_weights_or_settings_change_and_only_then(tmp_path, monkeypatch,
                                                                                          capsys):
    measured = []

    def fake_isolated(function, work, name, kind, path, adapter, identities, args):
        measured.append((name, sorted(identities)))
        for task, identity in identities.items():
            quality_report.write_json(quality_report.evaluation_file(work, name, task),
                             {"spearman": 0.5, "average_precision": 0.5, "ndcg_at_10": 0.5, "seconds": 0,
                              "identity": identity})

    monkeypatch.setattr(row_evaluation, "isolated", fake_isolated)
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights 1")
    args = bench.parse_args([])

    def run(folder=model, arguments=args, tasks=("sts", "scifact")):
        return row_evaluation.evaluated(tmp_path / "work", "row", "d2llm", str(folder), None, tasks, arguments)

    assert set(run()) == {"sts", "scifact"} and measured == [("row", ["scifact", "sts"])]
    run()
    copy = tmp_path / "elsewhere"
    copy.mkdir()
    (copy / "model.safetensors").write_bytes(b"weights 1")
    run(copy)
    assert len(measured) == 1  # same bytes, wherever they live: read back
    run(arguments=bench.parse_args(["--scifact-queries", "7"]))
    assert measured[-1] == ("row", ["scifact"])  # the STS-B result does not read that setting
    (model / "model.safetensors").write_bytes(b"weights 2")  # retrained in the same folder
    run(arguments=bench.parse_args(["--scifact-queries", "7"]))
    assert measured[-1] == ("row", ["scifact", "sts"])
    assert "the result on record is of other weights or settings: measured again" in capsys.readouterr().out
    legacy = quality_report.evaluation_file(tmp_path / "work", "row", "sts")
    legacy.write_text(json.dumps({"spearman": 0.9, "seconds": 0}))  # written before results carried an identity
    run(tasks=("sts",))
    assert measured[-1] == ("row", ["sts"])
