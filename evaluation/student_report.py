"""Students beside their teacher and their bi-encoder: one table from the result files of ``evaluate_model.py``.

    python -m evaluation.student_report --row NAME=RESULTS.json [--row ...] --teacher NAME --bi-encoder NAME
        --report REPORT

Each ``RESULTS.json`` is what ``evaluate_model.py --sts STS --pairs NLI --output RESULTS.json`` wrote: the STS-B
Spearman and the NLI average precision of one model, and the seconds each took. For every row but the teacher
and the bi-encoder (the students), on each task: the points over the bi-encoder, ``100 (s - b)``, and the share of
the teacher-bi-encoder gap closed, ``(s - b) / (t - b)``, against the targets (>= +3 points, >= half the gap).
The cost column is the STS job's seconds per 1,000 pairs (the texts of a pair encoded once each; the teacher reads
every pair in both orders). Writes ``REPORT.md`` and ``REPORT.json``, each whole or not at all; a missing file,
row or metric ends the command with exit status 2 and one line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from common.stages import write_json, write_whole

POINTS_TARGET = 3.0  # student >= bi-encoder + 3 points (metric x 100)
GAP_TARGET = 0.5  # student closes >= half of the bi-encoder-to-teacher gap
TASKS = {"sts": ("sts", "spearman", "STS-B Spearman"), "nli": ("pair_classification", "average_precision", "NLI AP")}


class ReportError(ValueError):
    """A row argument or result file the report cannot read."""


def read_row(spec: str) -> tuple[str, dict[str, float]]:
    """``NAME=RESULTS.json`` -> (NAME, {sts, nli, sts_seconds_per_1000}) from one ``evaluate_model.py`` output."""
    name, equals, path = spec.partition("=")
    if not equals or not name:
        raise ReportError(f"--row {spec!r}: expected NAME=RESULTS.json")
    try:
        results = json.loads(Path(path).read_text(encoding="utf-8"))["results"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ReportError(f"--row {spec}: not a result file of evaluate_model.py ({error})") from error
    row: dict[str, float] = {}
    for task, (kind, key, _) in TASKS.items():
        found = [result for result in results if result.get("task") == kind]
        if len(found) != 1 or key not in found[0]:
            raise ReportError(f"--row {spec}: expected one {kind} result with {key}, found {len(found)}")
        row[task] = float(found[0][key])
        if task == "sts":
            row["sts_seconds_per_1000"] = 1000 * float(found[0]["seconds"]) / int(found[0]["pairs"])
    return name, row


def verdicts(student: float, bi_encoder: float, teacher: float) -> dict[str, Any]:
    """Points over the bi-encoder, the share of the bi-encoder-to-teacher gap closed and both targets."""
    points, gap = 100 * (student - bi_encoder), teacher - bi_encoder
    closed = (student - bi_encoder) / gap if gap > 0 else None
    return {"points": points, "gap_closed": closed, "meets_points": points >= POINTS_TARGET,
            "meets_gap": None if closed is None else closed >= GAP_TARGET}


def build(rows: dict[str, dict[str, float]], teacher: str, bi_encoder: str) -> dict[str, Any]:
    """{rows, teacher, bi_encoder, verdicts: {student: {task: verdicts}}}."""
    for name, role in ((teacher, "--teacher"), (bi_encoder, "--bi-encoder")):
        if name not in rows:
            raise ReportError(f"{role} {name}: no such --row (rows: {', '.join(rows)})")
    judged = {name: {task: verdicts(row[task], rows[bi_encoder][task], rows[teacher][task]) for task in TASKS}
              for name, row in rows.items() if name not in (teacher, bi_encoder)}
    return {"rows": rows, "teacher": teacher, "bi_encoder": bi_encoder, "verdicts": judged}


def render(report: dict[str, Any]) -> str:
    """The markdown table: metrics and cost of every row, then each student's verdicts."""
    lines = ["| row | STS-B Spearman | NLI AP | s per 1,000 STS pairs | over the bi-encoder (STS-B / NLI) "
             "| gap closed (STS-B / NLI) |", "| --- | ---: | ---: | ---: | --- | --- |"]
    for name, row in report["rows"].items():
        judged = report["verdicts"].get(name)
        cells = [f"{row['sts']:.3f}", f"{row['nli']:.3f}", f"{row['sts_seconds_per_1000']:.1f}"]
        cells += ([" / ".join(f"{judged[task]['points']:+.1f}" for task in TASKS),
                   " / ".join("n/a" if judged[task]["gap_closed"] is None else f"{judged[task]['gap_closed']:.2f}"
                              for task in TASKS)] if judged else ["", ""])
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"Targets per task: >= the bi-encoder + {POINTS_TARGET:g} points; >= {GAP_TARGET:.0%} of the "
                  "teacher-bi-encoder gap closed.", ""]
    for name, judged in report["verdicts"].items():
        words = [f"{TASKS[task][2]} {'met' if verdict['meets_points'] else 'missed'} / "
                 f"{'met' if verdict['meets_gap'] else 'missed'}" for task, verdict in judged.items()]
        lines.append(f"- {name}: " + "; ".join(words))
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--row", action="append", required=True, metavar="NAME=RESULTS.json")
    parser.add_argument("--teacher", required=True, help="the row of the teacher (the ceiling)")
    parser.add_argument("--bi-encoder", required=True, help="the row of the students' baseline")
    parser.add_argument("--report", required=True, help="REPORT path without extension: REPORT.md and .json")
    args = parser.parse_args(argv)
    rows = dict(read_row(spec) for spec in args.row)
    report = build(rows, args.teacher, args.bi_encoder)
    text = render(report)
    report_path = Path(args.report)
    write_json(report_path.with_suffix(".json"), report)
    write_whole(report_path.with_suffix(".md"), lambda out: out.write_text(text, encoding="utf-8"))
    print(text)


if __name__ == "__main__":
    from common.cli_errors import run_command

    run_command(main, ReportError)
