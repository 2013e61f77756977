"""The recipe runner: a stage is reused only when its inputs (their content) and settings are the same, rebuilt
with the stages that read it otherwise, redone when it was killed midway; overrides reach the command; every run
writes its manifest; a bad recipe or override ends the run with exit 2 and one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common import recipes, stages

REPO = Path(__file__).resolve().parents[1]
# ``python WRITER OUTPUT ARG ...`` writes OUTPUT/part: each ARG, or the text of the file (or folder's part) it names;
# an ARG "slow" then sleeps two minutes
WRITER = """import os, sys, time
def text(arg):
    if os.path.isdir(arg):
        arg = os.path.join(arg, "part")
    return open(arg).read() if os.path.isfile(arg) else arg
out = sys.argv[1]
os.makedirs(out)
open(os.path.join(out, "part"), "w").write("".join(text(arg) for arg in sys.argv[2:]))
if "slow" in sys.argv:
    time.sleep(120)
"""


def write_recipe(folder: Path, second: str = "2", data_text: str = "data") -> Path:
    """Three stages: ``first`` reads a data file, ``second`` a setting, ``third`` reads ``second``'s output."""
    (folder / "writer.py").write_text(WRITER)
    (folder / "data.txt").write_text(data_text)
    recipe = folder / "toy.yaml"
    recipe.write_text(f"""
variables:
  data: {folder / 'data.txt'}
  writer: {folder / 'writer.py'}
stages:
  first:
    command: "{{python}} {{writer}} {{output}} one {{data}}"
  second:
    command: "{{python}} {{writer}} {{output}}"
    settings: {{text: "{second}"}}
  third:
    command: "{{python}} {{writer}} {{output}} three {{second}}"
""")
    return recipe


def run(recipe: Path, work: Path, *overrides: str) -> list[str]:
    """The stages built (not reused) by one run, in order."""
    loaded = recipes.load_recipe(str(recipe))
    recipes.apply_overrides(loaded, overrides)
    return [row["stage"] for row in recipes.run_recipe(loaded, work).manifest if row["status"] == "built"]


def test_settings_render_as_options_in_order():
    assert recipes.setting_arguments({"lr": 5e-5, "bf16": True, "fp16": False, "skip": None, "methods": ["a", "b"]}
                                     ) == ["--lr", "5e-05", "--bf16", "--methods", "a", "b"]


def test_a_rerun_with_the_same_inputs_and_settings_reuses_every_stage(tmp_path, capsys):
    recipe, work = write_recipe(tmp_path), tmp_path / "work"
    assert run(recipe, work) == ["first", "second", "third"]
    assert (work / "third" / "part").read_text() == "three--text2"  # the setting reached second's command
    stamps = [(work / stage / "part").stat().st_mtime_ns for stage in ("first", "second", "third")]
    capsys.readouterr()
    assert run(recipe, work) == []
    out = capsys.readouterr().out
    assert [line.split("]")[0] for line in out.splitlines() if "reused" in line] == ["[first", "[second", "[third"]
    assert [(work / stage / "part").stat().st_mtime_ns for stage in ("first", "second", "third")] == stamps


def test_an_override_rebuilds_its_stage_and_the_stages_that_read_it_and_says_so(tmp_path, capsys):
    recipe, work = write_recipe(tmp_path), tmp_path / "work"
    run(recipe, work)
    capsys.readouterr()
    assert run(recipe, work, "second.text=4") == ["second", "third"]  # first does not read second: reused
    notes = [line for line in capsys.readouterr().out.splitlines() if "other inputs or settings" in line]
    assert notes == [f"[{stage}] {work / stage} was built from other inputs or settings: rebuilding it"
                     for stage in ("second", "third")]
    assert (work / "third" / "part").read_text() == "three--text4"
    assert run(recipe, work, "second.text=4") == []  # the new key is recorded: the next rerun reuses


def test_a_data_file_edited_in_place_rebuilds_the_stage_that_reads_it(tmp_path):
    recipe, work = write_recipe(tmp_path), tmp_path / "work"
    run(recipe, work)
    (tmp_path / "data.txt").write_text("other data")  # same name, other content
    assert run(recipe, work) == ["first"]
    assert (work / "first" / "part").read_text() == "oneother data"


def test_a_stage_without_its_record_is_rebuilt(tmp_path):
    recipe, work = write_recipe(tmp_path), tmp_path / "work"
    run(recipe, work)
    stages.settings_path(work / "third").unlink()  # killed between the rename and the record
    assert run(recipe, work) == ["third"]


def test_the_manifest_names_each_stage_its_key_status_time_and_memory(tmp_path):
    recipe, work = write_recipe(tmp_path), tmp_path / "work"
    run(recipe, work)
    run(recipe, work, "second.text=3")
    manifest = json.loads((work / "manifest.json").read_text())
    assert [(row["stage"], row["status"]) for row in manifest["stages"]] == [
        ("first", "reused"), ("second", "built"), ("third", "built")]
    built = manifest["stages"][1]
    assert built["seconds"] > 0 and 0.001 < built["peak_gb"] < 2  # a small Python process: megabytes
    assert built["key"] == stages.recorded_settings(work / "second")["key"][:16]


def test_a_stage_killed_midway_is_done_again_on_the_next_run(tmp_path):
    recipe, work = write_recipe(tmp_path), tmp_path / "work"
    process = subprocess.Popen([sys.executable, "pipeline.py", str(recipe), "--work", str(work), "--set",
                                "second.text=slow"], cwd=REPO, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = work / stages.PARTIAL_DIR / "second" / "part"
    deadline = time.time() + 60
    while not partial.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert partial.exists()
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert (work / "first").is_dir() and not (work / "second").exists()  # the half-written stage is not done
    assert run(recipe, work) == ["second", "third"]
    assert not (work / stages.PARTIAL_DIR).exists()


@pytest.mark.parametrize("arguments, message", [
    (["--set", "fourth.text=1"], "has no stage fourth"),
    (["--set", "nothing=1"], "has no variable nothing"),
    (["--set", "second.text"], "expected STAGE.option=value"),
    (["--teacher", "x"], "--teacher: recipe toy has no such variable"),
])
def test_a_bad_override_ends_the_run_with_exit_2_and_one_line_before_any_stage(tmp_path, arguments, message):
    recipe, work = write_recipe(tmp_path), tmp_path / "work"
    result = subprocess.run([sys.executable, "pipeline.py", str(recipe), "--work", str(work), *arguments],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
    assert not work.exists()


def test_a_recipe_naming_a_later_stage_or_an_unknown_field_is_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages:\n  a:\n    command: 'echo {b}'\n  b:\n    command: 'echo {output}'\n")
    with pytest.raises(recipes.RecipeError, match="stage a: {b} names a later stage"):
        recipes.run_recipe(recipes.load_recipe(str(bad)), tmp_path / "work")
    bad.write_text("stages:\n  a:\n    command: 'echo'\n    inputs: [x]\n")
    with pytest.raises(recipes.RecipeError, match="stage a: unknown field"):
        recipes.load_recipe(str(bad))


def test_every_shipped_recipe_loads_and_resolves_every_placeholder(tmp_path):
    for name in recipes.available_recipes():
        recipe = recipes.load_recipe(name)
        run_ = recipes.Run(recipe, tmp_path / name)
        for stage in recipe.stages:  # resolve as the runner does, without running anything
            run_.arguments(stage, "OUT", keyed=False)
            if stage.output:
                run_.outputs[stage.name], run_.keys[stage.name] = tmp_path / stage.path, "k"
    assert {"demo", "teacher"} <= set(recipes.available_recipes())
