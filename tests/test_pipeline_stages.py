"""A pipeline stage counts as done only when its command finished with the same settings: one killed midway is
done again, one built with other settings is rebuilt with every stage after it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pipeline
from common import stages

REPO = Path(__file__).resolve().parents[1]
WRITE_PART = "import os, sys; os.makedirs(sys.argv[1]); open(os.path.join(sys.argv[1], 'part'), 'w').write('{}')"
WRITE = "import os, sys; os.makedirs(sys.argv[1]); open(os.path.join(sys.argv[1], 'part'), 'w').write(sys.argv[2])"


def test_a_stage_killed_midway_is_done_again_and_a_finished_one_is_skipped(tmp_path):
    output = tmp_path / "stage_output"
    killed = textwrap.dedent(f"""
        import sys, pipeline
        from pathlib import Path
        pipeline.run("slow", Path({str(output)!r}), lambda out: [sys.executable, "-c",
                     {WRITE_PART.format('half')!r} + "; import time; time.sleep(120)", out], pipeline.Chain())
    """)
    process = subprocess.Popen([sys.executable, "-c", killed], cwd=REPO, start_new_session=True)
    partial = tmp_path / stages.PARTIAL_DIR / "stage_output" / "part"
    deadline = time.time() + 60
    while not partial.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert partial.exists()
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not output.exists()  # the half-written stage is not taken for done

    chain = pipeline.Chain()
    pipeline.run("slow", output, lambda out: [sys.executable, "-c", WRITE_PART.format("whole"), out], chain)
    assert (output / "part").read_text() == "whole" and [stage for stage, _ in chain.log] == ["slow"]
    assert not (tmp_path / stages.PARTIAL_DIR / "stage_output").exists()
    again = pipeline.Chain()
    pipeline.run("slow", output, lambda out: [sys.executable, "-c", WRITE_PART.format("whole"), out], again)  # skipped
    assert again.log == [] and (output / "part").read_text() == "whole"


def _run_three_stages(work: Path, epochs: int) -> list[str]:
    """A chain of three stages, the second taking ``epochs`` as its setting; the stages built, in order."""
    chain = pipeline.Chain()
    for stage, option in (("first", "1"), ("second", str(epochs)), ("third", "1")):
        pipeline.run(stage, work / stage, lambda out, option=option: [sys.executable, "-c", WRITE, out, option], chain)
    return [stage for stage, _ in chain.log]


def test_a_rerun_with_the_same_settings_skips_every_stage(tmp_path, capsys):
    assert _run_three_stages(tmp_path, 2) == ["first", "second", "third"]
    stamps = [(tmp_path / stage / "part").stat().st_mtime_ns for stage in ("first", "second", "third")]
    capsys.readouterr()
    assert _run_three_stages(tmp_path, 2) == []
    assert [(tmp_path / stage / "part").stat().st_mtime_ns for stage in ("first", "second", "third")] == stamps
    assert "other settings" not in capsys.readouterr().out
    recorded = stages.recorded_settings(tmp_path / "second")
    assert recorded["command"][-1] == "2" and recorded["command"][-2] == pipeline.OUTPUT_MARK


def test_a_rerun_with_other_settings_rebuilds_that_stage_and_every_later_one_and_says_so_once(tmp_path, capsys):
    _run_three_stages(tmp_path, 2)
    capsys.readouterr()
    assert _run_three_stages(tmp_path, 4) == ["second", "third"]
    notes = [line for line in capsys.readouterr().out.splitlines() if "other settings" in line]
    assert notes == [f"[second] {tmp_path / 'second'} was built with other settings: rebuilding it and every stage "
                     "after it"]
    assert stages.recorded_settings(tmp_path / "second")["command"][-1] == "4"
    assert _run_three_stages(tmp_path, 4) == []  # the new settings are recorded: the next rerun skips


def test_a_stage_without_its_settings_record_or_after_a_killed_rerun_is_rebuilt(tmp_path):
    _run_three_stages(tmp_path, 2)
    stages.settings_path(tmp_path / "third").unlink()  # killed between the rename and the record
    assert _run_three_stages(tmp_path, 2) == ["third"]
    chain = pipeline.Chain()  # a rerun with other settings killed after its second stage
    for stage, option in (("first", "1"), ("second", "4")):
        pipeline.run(stage, tmp_path / stage, lambda out, option=option: [sys.executable, "-c", WRITE, out, option],
                     chain)
    assert _run_three_stages(tmp_path, 4) == ["third"]  # the third stage was built after the old second one
