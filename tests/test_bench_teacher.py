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


def _recorded_commands(monkeypatch) -> list[list[str]]:
    """Every command bench_teacher runs, recorded instead of run; each makes its output folder."""
    commands: list[list[str]] = []

    def fake_sh(command):
        commands.append(command)
        flag = "--output" if "--output" in command else "--output_dir"
        Path(command[command.index(flag) + 1]).mkdir(parents=True)

    monkeypatch.setattr(bench_teacher, "sh", fake_sh)
    return commands


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
                        str(REPO.parent / "shared" / "data"), "--teacher", f"good={good}", "--teacher",
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


def test_students_train_on_pairs_labelled_at_each_gold_weight_by_the_first_teacher(tmp_path, monkeypatch):
    commands = _recorded_commands(monkeypatch)
    monkeypatch.setattr(bench_teacher, "evaluate", lambda work, name, kind, path, adapter, tasks, args: {
        task: {"student_gold1": 0.60, "student_t_gold0.5": 0.70}.get(name, 0.5) for task in tasks})
    adapter = _checkpoint(tmp_path / "adapter", 10, 0.5)
    args = ["--work", str(tmp_path / "work"), "--report", str(tmp_path / "r"), "--backbone", "B", "--data",
            str(REPO.parent / "shared" / "data"), "--teacher", f"t={adapter}", "--gold-weights", "1", "0.5"]
    bench_teacher.main(args)
    labelled = [command for command in commands if "teacher.label_pairs" in command]
    assert [command[command.index("--gold-weight") + 1] for command in labelled] == ["1.0", "0.5"]
    assert all(command[command.index("--adapter") + 1] == str(adapter) for command in labelled)
    trained = [command for command in commands if "train.py" in command]
    assert [command[command.index("--train_dataset") + 1] for command in trained] == [
        str(tmp_path / "work" / "pairs_gold1"), str(tmp_path / "work" / "pairs_t_gold0.5")]
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert rows["student of t, gold weight 0.5"]["metrics"] == {"sts": 0.70, "nli": 0.70}
    assert rows["student, gold labels alone"]["metrics"] == {"sts": 0.60, "nli": 0.60}
    commands.clear()
    bench_teacher.main(args)  # a second run finds every stage built
    assert commands == []
    other = _checkpoint(tmp_path / "other", 10, 0.5)
    bench_teacher.main([*args[:-5], "--teacher", f"u={other}", "--gold-weights", "1", "0.5"])
    assert [Path(command[command.index("--output") + 1]).name for command in commands
            if "teacher.label_pairs" in command] == ["pairs_u_gold0.5"]  # gold alone is shared between teachers
    commands.clear()
    (adapter / "adapter_model.safetensors").write_bytes(b"retrained")  # new weights under the same name
    bench_teacher.main(args)
    assert [Path(command[command.index("--output") + 1]).name for command in commands
            if "teacher.label_pairs" in command] == ["pairs_t_gold0.5"]
    assert [Path(_option_value(command, "--output_dir")).name for command in commands if "train.py" in command] == [
        "student_t_gold0.5"]  # and its student learns from the new labels


def test_a_fully_fine_tuned_teacher_loads_as_its_own_model_not_as_an_adapter_on_the_backbone(tmp_path, monkeypatch):
    commands, evaluated = _recorded_commands(monkeypatch), []
    monkeypatch.setattr(bench_teacher, "evaluate", lambda work, name, kind, path, adapter, tasks, args: (
        evaluated.append((name, path, adapter)) or {task: 0.5 for task in tasks}))
    full = _checkpoint(tmp_path / "full", 10, 0.5)
    (full / "adapter_config.json").unlink()
    (full / "config.json").write_text("{}")
    lora = _checkpoint(tmp_path / "lora", 10, 0.5)
    bench_teacher.main(["--work", str(tmp_path / "work"), "--report", str(tmp_path / "r"), "--backbone", "B",
                        "--data", str(REPO.parent / "shared" / "data"), "--teacher", f"full={full}", "--teacher",
                        f"lora={lora}", "--gold-weights", "0.5"])
    assert ("teacher_full", str(full), None) in evaluated
    assert ("teacher_lora", "B", str(lora)) in evaluated
    [labelled] = [command for command in commands if "teacher.label_pairs" in command]
    assert _option_value(labelled, "--teacher") == str(full) and "--adapter" not in labelled


def test_students_can_learn_from_nli_pairs_too_and_train_end_to_end_under_their_own_names(tmp_path, monkeypatch):
    commands = _recorded_commands(monkeypatch)
    monkeypatch.setattr(bench_teacher, "evaluate", lambda work, name, kind, path, adapter, tasks, args: {
        task: 0.5 for task in tasks})
    adapter = _checkpoint(tmp_path / "adapter", 10, 0.5)
    work, data = tmp_path / "work", (REPO.parent / "shared" / "data").resolve()  # the report resolves links
    args = ["--work", str(work), "--report", str(tmp_path / "r"), "--backbone", "B", "--data", str(data),
            "--teacher", f"t={adapter}", "--gold-weights", "1", "0"]
    bench_teacher.main(args)
    heads_only = len(commands)
    bench_teacher.main([*args, "--student-sources", "stsb", "snli", "--student-epochs", "2"])
    labelled = [command for command in commands[heads_only:] if "teacher.label_pairs" in command]
    assert [Path(_option_value(command, "--output")).name for command in labelled] == [
        "pairs_gold1_stsb-snli", "pairs_t_gold0_stsb-snli"]
    assert all(command[command.index("teacher.label_pairs") + 1:][:2] == [
        str(data / "en" / "stsb" / "train.jsonl"), str(work / "snli" / "train.jsonl")] for command in labelled)
    trained = [command for command in commands[heads_only:] if "train.py" in command]
    assert [Path(_option_value(command, "--output_dir")).name for command in trained] == [
        "student_gold1_stsb-snli_e2e2", "student_t_gold0_stsb-snli_e2e2"]
    assert all(float(_option_value(command, "--num_train_epochs")) == 2 and "--head_warmup_epochs" in command
               for command in trained)
    assert json.loads((work / "pairs_gold1_stsb-snli.settings.json").read_text())["batches"] == "one source each"
    assert "batches" not in json.loads((work / "pairs_gold1.settings.json").read_text())
    caches = [_option_value(command, "--head_warmup_cache_dir") for command in commands if "train.py" in command]
    assert len(caches) == 4 and caches[0] == caches[1] != caches[2] == caches[3]  # lambdas share; other texts not
    assert Path(caches[-1]).name.startswith("token_states_stsb-snli_128_")
    commands.clear()
    bench_teacher.main([*args, "--student-sources", "stsb", "snli", "--student-epochs", "2", "--seed", "1"])
    reseeded = {_option_value(command, "--head_warmup_cache_dir") for command in commands if "train.py" in command}
    assert reseeded.isdisjoint(caches)  # the seed decides which pairs fill the batches, so the texts cached
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert "student of t, gold weight 0 (on stsb+snli, end to end 2 epochs)" in rows
    assert "student of t, gold weight 0" not in rows  # each invocation reports its own students


def test_a_bi_encoder_learns_the_gold_pairs_beside_the_students_and_judges_them(tmp_path, monkeypatch):
    commands = _recorded_commands(monkeypatch)
    scores = {"teacher_t": 0.90, "bi_encoder_gold1_e2e1": 0.50, "student_t_gold0_e2e1": 0.80,
              "student_gold1_e2e1": 0.52}
    kinds = {}
    monkeypatch.setattr(bench_teacher, "evaluate", lambda work, name, kind, path, adapter, tasks, args: (
        kinds.setdefault(name, kind) and {task: scores.get(name, 0.5) for task in tasks}))
    adapter = _checkpoint(tmp_path / "adapter", 10, 0.5)
    bench_teacher.main(["--work", str(tmp_path / "work"), "--report", str(tmp_path / "r"), "--backbone", "B",
                        "--data", str(REPO.parent / "shared" / "data"), "--teacher", f"t={adapter}",
                        "--gold-weights", "1", "0", "--student-epochs", "1", "--bi-encoder"])
    [bi_encoder] = [command for command in commands if "bi_encoder_gold1_e2e1" in " ".join(command)]
    assert _option_value(bi_encoder, "--train_dataset") == str(tmp_path / "work" / "pairs_gold1")
    assert _option_value(bi_encoder, "--objective") == "bi-encoder"
    assert [bi_encoder[len(bi_encoder) - 1 - bi_encoder[::-1].index(flag) + 1] for flag in (
        "--ibn_weight", "--angle_weight", "--cosine_weight")] == ["0", "0", "1"]  # the last value of each wins
    assert kinds["bi_encoder_gold1_e2e1"] == "bi-encoder"
    results = json.loads((tmp_path / "r.json").read_text())
    judged = results["student_verdicts"]["student of t, gold weight 0 (end to end 1 epoch)"]["sts"]
    assert judged["points"] == pytest.approx(30.0) and judged["gap_closed"] == pytest.approx(0.75)
    assert judged["meets_points"] and judged["meets_gap"]
    assert not results["student_verdicts"]["student, gold labels alone (end to end 1 epoch)"]["sts"]["meets_gap"]
    assert "sts +30.0 points (met), gap closed 0.75 (met)" in (tmp_path / "r.md").read_text()


def test_silver_pairs_reach_the_teachers_students_unlabelled_and_never_the_gold_rows(tmp_path, monkeypatch):
    commands = _recorded_commands(monkeypatch)
    monkeypatch.setattr(bench_teacher, "evaluate", lambda work, name, kind, path, adapter, tasks, args: {
        task: 0.5 for task in tasks})
    adapter, work = _checkpoint(tmp_path / "adapter", 10, 0.5), tmp_path / "work"
    bench_teacher.main(["--work", str(work), "--report", str(tmp_path / "r"), "--backbone", "B", "--data",
                        str(REPO.parent / "shared" / "data"), "--teacher", f"t={adapter}", "--gold-weights", "1", "0",
                        "--student-sources", "stsb", "stsb-silver", "--silver-pairs", "40", "--student-epochs", "1",
                        "--bi-encoder"])
    [silver] = [command for command in commands if "preprocess.silver_pairs" in command]
    assert silver[silver.index("preprocess.silver_pairs") + 1].endswith("stsb/train.jsonl")
    assert _option_value(silver, "--limit") == "40"
    labelled = {Path(_option_value(command, "--output")).name: command for command in commands
                if "teacher.label_pairs" in command}
    assert sorted(labelled) == ["pairs_gold1", "pairs_t_gold0_stsb-stsb-silver"]
    assert _option_value(labelled["pairs_t_gold0_stsb-stsb-silver"], "--unlabelled") == str(
        work / "silver_stsb_40.jsonl")
    assert "--unlabelled" not in labelled["pairs_gold1"]
    trained = {Path(_option_value(command, "--output_dir")).name: command for command in commands
               if "train.py" in command}
    assert sorted(trained) == ["bi_encoder_gold1_e2e1", "student_gold1_e2e1", "student_t_gold0_stsb-stsb-silver_e2e1"]
    assert _option_value(trained["bi_encoder_gold1_e2e1"], "--train_dataset") == str(work / "pairs_gold1")
    caches = {name: _option_value(command, "--head_warmup_cache_dir") for name, command in trained.items()
              if "student" in name}
    assert caches["student_gold1_e2e1"] != caches["student_t_gold0_stsb-stsb-silver_e2e1"]  # other texts
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert {"student, gold labels alone (end to end 1 epoch)", f"{bench_teacher.BI_ENCODER_ROW} (end to end 1 epoch)",
            "student of t, gold weight 0 (on stsb+stsb-silver, end to end 1 epoch)"} <= set(rows)


def test_silver_pairs_without_gold_pairs_beside_them_are_refused(capsys):
    with pytest.raises(SystemExit) as ended:
        bench_teacher.parse_args(["--work", "w", "--report", "r", "--backbone", "B", "--student-sources",
                                  "stsb-silver"])
    assert ended.value.code == 2 and "pairs without gold go beside gold pairs" in capsys.readouterr().err


def test_a_bi_encoder_without_end_to_end_students_is_refused(capsys):
    with pytest.raises(SystemExit) as ended:
        bench_teacher.parse_args(["--work", "w", "--report", "r", "--backbone", "B", "--gold-weights", "0",
                                  "--bi-encoder"])
    assert ended.value.code == 2 and "--student-epochs" in capsys.readouterr().err


def _option_value(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


@pytest.mark.parametrize("option, message", [
    (["--teacher", "no-equals-sign"], "expected NAME=ADAPTER_FOLDER"),
    (["--teacher", "x=/no/such/folder"], "holds no adapter_config.json"),
    (["--curve", "."], "no checkpoint-N folder"),
    (["--gold-weights", "0.5"], "need a --teacher"),
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
