"""benchmarks/bench_throughput.py keeps each result with the settings it was measured with: the same settings reuse
it, other settings (its own or its inputs') measure it again and say so in one line."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from common import stages

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_throughput.py"
_FOUND_MODULE = importlib.util.spec_from_file_location("bench_throughput", _PATH)
bench = importlib.util.module_from_spec(_FOUND_MODULE)
sys.modules["bench_throughput"] = bench
_FOUND_MODULE.loader.exec_module(bench)


class Counter:
    """A measurement that returns how often it ran."""

    def __init__(self) -> None:
        self.runs = 0

    def __call__(self) -> dict:
        self.runs += 1
        return {"runs": self.runs}


def _notes(out: str) -> list[str]:
    return [line for line in out.splitlines() if "other settings" in line]


def test_a_result_of_the_same_settings_is_reused(tmp_path, capsys):
    measure = Counter()
    assert bench.measured(tmp_path, "teacher_a", measure, {"rows": 16, "threads": 2}) == {"runs": 1}
    assert bench.measured(tmp_path, "teacher_a", measure, {"threads": 2, "rows": 16}) == {"runs": 1}
    assert measure.runs == 1 and _notes(capsys.readouterr().out) == []
    assert stages.recorded_settings(tmp_path / "results" / "teacher_a.json") == {"rows": 16, "threads": 2}


def test_a_result_of_other_settings_and_the_results_using_it_are_measured_again(tmp_path, capsys):
    scoring, training = Counter(), Counter()
    first = {"rows": 16, "threads": 2}
    bench.measured(tmp_path, "teacher_a", scoring, first)
    bench.measured(tmp_path, "student_e", training, {"scored": first, "steps": 4})
    capsys.readouterr()
    second = {"rows": 32, "threads": 2}
    assert bench.measured(tmp_path, "teacher_a", scoring, second) == {"runs": 2}
    assert bench.measured(tmp_path, "student_e", training, {"scored": second, "steps": 4}) == {"runs": 2}
    assert _notes(capsys.readouterr().out) == ["[teacher_a] measured with other settings: measuring again",
                                               "[student_e] measured with other settings: measuring again"]
    assert bench.measured(tmp_path, "student_e", training, {"scored": second, "steps": 4}) == {"runs": 2}
