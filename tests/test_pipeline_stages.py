"""A pipeline stage counts as done only when its command finished: one killed midway is done again."""

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
WRITE = "import os, sys; os.makedirs(sys.argv[1]); open(os.path.join(sys.argv[1], 'part'), 'w').write('{}')"


def test_a_stage_killed_midway_is_done_again_and_a_finished_one_is_skipped(tmp_path):
    output = tmp_path / "stage_output"
    killed = textwrap.dedent(f"""
        import sys, pipeline
        from pathlib import Path
        pipeline.run("slow", Path({str(output)!r}), lambda out: [sys.executable, "-c",
                     {WRITE.format('half')!r} + "; import time; time.sleep(120)", out], [])
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

    log: list[tuple[str, float]] = []
    pipeline.run("slow", output, lambda out: [sys.executable, "-c", WRITE.format("whole"), out], log)
    assert (output / "part").read_text() == "whole" and [stage for stage, _ in log] == ["slow"]
    assert not (tmp_path / stages.PARTIAL_DIR / "stage_output").exists()
    pipeline.run("slow", output, lambda out: [sys.executable, "-c", "raise SystemExit(1)"], log)  # skipped
    assert len(log) == 1 and (output / "part").read_text() == "whole"
