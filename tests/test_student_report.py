"""evaluation.student_report: each student's points over the bi-encoder and share of the teacher gap closed, from
evaluate_model.py's result files, worked by hand; a missing row or metric ends with exit 2 and one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation import student_report

REPO = Path(__file__).resolve().parents[1]


def results_file(folder: Path, name: str, sts: float, nli: float, seconds: float = 2.0) -> Path:
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"model": name, "model_type": "d2llm", "results": [
        {"task": "sts", "pairs": 500, "spearman": sts, "seconds": seconds},
        {"task": "pair_classification", "pairs": 400, "average_precision": nli, "seconds": 1.0}]}))
    return path


def test_the_report_gives_points_over_the_bi_encoder_and_the_share_of_the_gap_closed(tmp_path):
    rows = [f"teacher={results_file(tmp_path, 't', 0.80, 0.90, 10.0)}",
            f"student={results_file(tmp_path, 's', 0.72, 0.65)}", f"bi={results_file(tmp_path, 'b', 0.60, 0.70)}"]
    student_report.main([*(part for row in rows for part in ("--row", row)), "--teacher", "teacher",
                         "--bi-encoder", "bi", "--report", str(tmp_path / "out" / "report")])
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    sts, nli = report["verdicts"]["student"]["sts"], report["verdicts"]["student"]["nli"]
    assert sts["points"] == pytest.approx(12.0) and sts["gap_closed"] == pytest.approx(0.6)  # 0.12 / 0.2
    assert sts["meets_points"] and sts["meets_gap"]
    assert nli["points"] == pytest.approx(-5.0) and nli["gap_closed"] == pytest.approx(-0.25)  # -0.05 / 0.2
    assert not nli["meets_points"] and not nli["meets_gap"]
    assert set(report["verdicts"]) == {"student"}  # the teacher and the bi-encoder are not judged
    assert report["rows"]["teacher"]["sts_seconds_per_1000"] == pytest.approx(20.0)  # 10 s for 500 pairs
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "| student | 0.720 | 0.650 | 4.0 | +12.0 / -5.0 | 0.60 / -0.25 |" in markdown
    assert "- student: STS-B Spearman met / met; NLI AP missed / missed" in markdown


@pytest.mark.parametrize("rows, message", [
    (["t=T", "b=B"], "not a result file of evaluate_model.py"),
    (["t=T"], "--bi-encoder b: no such --row"),
    (["t=T", "b=NO_NLI"], "expected one pair_classification result with average_precision, found 0"),
])
def test_a_missing_row_or_metric_ends_with_exit_2_and_one_line(tmp_path, rows, message):
    files = {"T": str(results_file(tmp_path, "t", 0.8, 0.9)), "B": str(tmp_path / "missing.json")}
    no_nli = tmp_path / "no_nli.json"
    no_nli.write_text(json.dumps({"results": [{"task": "sts", "pairs": 5, "spearman": 0.5, "seconds": 1}]}))
    files["NO_NLI"] = str(no_nli)
    arguments = [part for row in rows for part in ("--row", row.split("=")[0] + "=" + files[row.split("=")[1]])]
    result = subprocess.run([sys.executable, "-m", "evaluation.student_report", *arguments, "--teacher", "t",
                             "--bi-encoder", "b", "--report", str(tmp_path / "r")], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "r.md").exists()
