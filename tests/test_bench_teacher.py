"""benchmarks/bench_teacher.py: rows, targets against the baselines of the same run, curve, refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import bench_teacher

REPO = Path(__file__).resolve().parents[1]


def _checkpoint(folder: Path, step: int, dev: float) -> Path:
    folder.mkdir(parents=True)
    for name in ("adapter_config.json", "teacher_prompts.json", "teacher_settings.json"):
        (folder / name).write_text("{}")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": [
        {"step": step - 1, "loss": 0.5}, {"step": step, "loss": 0.4}, {"step": step, "eval_pairs_spearman": dev}]}))
    return folder


def tiny_data(folder: Path) -> Path:
    """A data folder holding what the report reads before any evaluation: ``en/snli/dev.jsonl``."""
    rows = [{"sentence1": f"premise {i // 2}", "sentence2": f"hypothesis {i}", "label": "entailment"} for i in range(8)]
    (folder / "en" / "snli").mkdir(parents=True)
    (folder / "en" / "snli" / "dev.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def test_the_report_judges_each_teacher_against_minilm_and_bm25_and_draws_the_curve(tmp_path, monkeypatch):
    measured = {"minilm": {"sts": 0.82, "nli": 0.65, "scifact": 0.70}, "bm25": {"scifact": 0.79},
                "teacher_good": {"sts": 0.85, "nli": 0.86, "scifact": 0.80},
                "teacher_weak": {"sts": 0.81, "nli": 0.90, "scifact": 0.50},
                "checkpoint_curve_100": {"sts": 0.40}, "checkpoint_curve_200": {"sts": 0.78}}
    calls = []

    def fake_evaluate(work, name, kind, path, adapter, tasks, args):
        calls.append((name, kind, adapter, tuple(tasks)))
        return {task: measured[name][task] for task in tasks}

    monkeypatch.setattr(bench_teacher, "evaluate", fake_evaluate)
    good = _checkpoint(tmp_path / "good", 300, 0.9)
    (good / "adaptation_report.json").write_text(json.dumps({"seconds_per_1000_prompts": 290.0, "peak_memory_gb": 3}))
    weak = _checkpoint(tmp_path / "weak", 300, 0.9)
    curve = tmp_path / "curve"
    _checkpoint(curve / "checkpoint-200", 200, 0.8)
    _checkpoint(curve / "checkpoint-100", 100, 0.3)
    report = tmp_path / "report" / "teacher"
    monkeypatch.chdir(tmp_path)
    bench_teacher.main(["--work", str(tmp_path / "work"), "--report", str(report), "--backbone", "B", "--data",
                        str(tiny_data(tmp_path / "data")), "--teacher", f"good={good}", "--teacher",
                        f"weak={weak}", "--curve", str(curve)])
    results = json.loads(report.with_suffix(".json").read_text())
    assert results["verdicts"] == {"good": {"sts": True, "nli": True, "scifact": True},
                                   "weak": {"sts": False, "nli": True, "scifact": False}}
    assert [point["step"] for point in results["curve"]] == [100, 200]
    assert results["curve"][0] == {"step": 100, "dev": {"eval_pairs_spearman": 0.3}, "test": {"sts": 0.40}}
    assert results["rows"]["good"]["cost"]["seconds_per_1000_prompts"] == 290.0
    assert ("teacher_good", "teacher", str(good), ("sts", "nli", "scifact")) in calls
    markdown = report.with_suffix(".md").read_text()
    assert "- weak: sts missed, nli met, scifact missed" in markdown and "| 200 | 0.800 | 0.780 |" in markdown
    assert report.with_suffix(".png").stat().st_size > 0


def test_a_fully_fine_tuned_teacher_loads_as_its_own_model_not_as_an_adapter_on_the_backbone(tmp_path, monkeypatch):
    evaluated = []
    monkeypatch.setattr(bench_teacher, "evaluate", lambda work, name, kind, path, adapter, tasks, args: (
        evaluated.append((name, path, adapter)) or {task: 0.5 for task in tasks}))
    full = _checkpoint(tmp_path / "full", 10, 0.5)
    (full / "adapter_config.json").unlink()
    (full / "config.json").write_text("{}")
    lora = _checkpoint(tmp_path / "lora", 10, 0.5)
    bench_teacher.main(["--work", str(tmp_path / "work"), "--report", str(tmp_path / "r"), "--backbone", "B",
                        "--data", str(tiny_data(tmp_path / "data")), "--teacher", f"full={full}", "--teacher",
                        f"lora={lora}"])
    assert ("teacher_full", str(full), None) in evaluated
    assert ("teacher_lora", "B", str(lora)) in evaluated


@pytest.mark.parametrize("option, message", [
    (["--teacher", "no-equals-sign"], "expected NAME=ADAPTER_FOLDER"),
    (["--teacher", "x=/no/such/folder"], "holds no adapter_config.json"),
    (["--curve", "."], "no checkpoint-N folder"),
])
def test_a_bad_row_argument_ends_with_one_line_and_status_2(tmp_path, option, message):
    result = subprocess.run([sys.executable, "benchmarks/bench_teacher.py", "--work", str(tmp_path / "w"),
                             "--report", str(tmp_path / "r"), "--backbone", "B", *option],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2 and message in result.stderr and result.stderr.strip().count("\n") == 0
    assert not (tmp_path / "w").exists()


def test_a_curve_checkpoint_without_its_prompts_is_refused_before_anything_runs(tmp_path):
    curve = tmp_path / "curve"
    _checkpoint(curve / "checkpoint-100", 100, 0.3)
    (curve / "checkpoint-100" / "teacher_settings.json").unlink()
    result = subprocess.run([sys.executable, "benchmarks/bench_teacher.py", "--work", str(tmp_path / "w"),
                             "--report", str(tmp_path / "r"), "--backbone", "B", "--curve", str(curve)],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2 and "teacher_settings.json is missing" in result.stderr
    assert result.stderr.strip().count("\n") == 0 and not (tmp_path / "w").exists()
