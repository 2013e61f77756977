"""Recipes: a YAML file of named stages, each one of the project's commands, run in order and resumable.

A recipe (``configs/recipes/NAME.yaml``) holds ``description``, ``cost`` (what a run costs, measured), ``variables``
(defaults for ``{name}`` placeholders, overridable) and ``stages``, a mapping of stage name to:

* ``command``: the command as one string (split like a shell line; ``{python}`` is this interpreter,
  ``{accelerate}`` expands to ``accelerate launch`` as one process), with placeholders: ``{output}`` (where the
  stage writes), ``{checkpoints}`` (a folder that survives a kill, for a stage's own resumable checkpoints),
  ``{work}``, ``{repo}``, ``{smollm2_gguf}`` and ``{minilm}`` (the embedded models), the recipe's variables, and
  the name of any earlier stage (that stage's output). Relative paths are taken from the repository;
* ``settings``: options appended to the command, ``key: value`` -> ``--key value`` (``true`` -> ``--key``,
  ``false`` or ``null`` -> left out, a list -> ``--key a b``); ``--set STAGE.key=value`` overrides one;
* ``path``: where the output goes, relative to the work folder (default: the stage's name);
* ``output: false`` for a stage that writes nothing (it runs every time, after the stages it reads).

The key of a stage is a sha256 of its command with ``{output}`` left unresolved, where every earlier stage's
output stands as that stage's key and every other argument that names an existing file or folder (data,
configs, models) adds the digest of its content. A stage whose output exists under the same key is reused; a
changed key (other settings, other data, a rebuilt stage before it) rebuilds it, said in one line. Outputs are
written by ``common.stages.write_whole``: complete or not at all. Each run writes ``WORK/manifest.json``: per
stage its key, whether it was built or reused, its wall time and its peak resident memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from common.stages import build_once, recorded_settings, write_whole

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "configs" / "recipes"
PYTHON = sys.executable
# ``accelerate launch`` as one process without an accelerate config file; the script and its options follow
ACCELERATE_ONE_PROCESS = [PYTHON, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
                          "--mixed_precision", "no", "--dynamo_backend", "no"]
OUTPUT_MARK = "{output}"
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
RESERVED = {"output", "checkpoints", "work", "repo", "python", "accelerate", "smollm2_gguf", "minilm"}


class RecipeError(ValueError):
    """A recipe or an override that cannot run: the message names the file, the stage and the field."""


class StageError(RuntimeError):
    """A stage's command that failed with exit ``status``; the command has printed why."""

    def __init__(self, stage: str, status: int) -> None:
        super().__init__(f"[{stage}] failed with exit status {status}")
        self.status = status


@dataclass
class Stage:
    """One stage: its name, its command (a shell-like string), its settings and whether it writes an output."""

    name: str
    command: str
    settings: dict[str, Any] = field(default_factory=dict)
    output: bool = True
    path: str = ""


@dataclass
class Recipe:
    """A parsed recipe: its source file, description, cost note, variables and stages in order."""

    path: Path
    description: str
    cost: str
    variables: dict[str, Any]
    stages: list[Stage]


def recipe_path(name_or_path: str) -> Path:
    """``configs/recipes/NAME.yaml`` for a bare name, else the path itself."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        return candidate
    return RECIPES / f"{name_or_path}.yaml"


def available_recipes() -> list[str]:
    """The names of the recipes shipped in ``configs/recipes``."""
    return sorted(path.stem for path in RECIPES.glob("*.yaml"))


def load_recipe(name_or_path: str) -> Recipe:
    """Read and check a recipe; ``RecipeError`` names the file and the stage or field at fault."""
    path = recipe_path(name_or_path)
    if not path.is_file():
        raise RecipeError(f"recipe {name_or_path}: no such file {path} (shipped: {', '.join(available_recipes())})")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: not valid YAML ({' '.join(str(error).split())})") from error
    if not isinstance(raw, dict) or not isinstance(raw.get("stages"), dict) or not raw["stages"]:
        raise RecipeError(f"{path}: expected a mapping with a non-empty 'stages' mapping")
    variables = raw.get("variables") or {}
    if not isinstance(variables, dict):
        raise RecipeError(f"{path}: 'variables' must be a mapping")
    stages = []
    for name, body in raw["stages"].items():
        if not isinstance(body, dict) or not isinstance(body.get("command"), str):
            raise RecipeError(f"{path}: stage {name}: expected a mapping with a 'command' string")
        unknown = set(body) - {"command", "settings", "output", "path"}
        if unknown:
            raise RecipeError(f"{path}: stage {name}: unknown field(s) {', '.join(sorted(unknown))}")
        if name in RESERVED or name in variables:
            raise RecipeError(f"{path}: stage {name}: the name is taken by a variable or a placeholder")
        settings = body.get("settings") or {}
        if not isinstance(settings, dict):
            raise RecipeError(f"{path}: stage {name}: 'settings' must be a mapping of option to value")
        stages.append(Stage(str(name), body["command"], dict(settings), bool(body.get("output", True)),
                            str(body.get("path") or name)))
    return Recipe(path, str(raw.get("description", "")).strip(), str(raw.get("cost", "")).strip(),
                  dict(variables), stages)


def apply_overrides(recipe: Recipe, overrides: Sequence[str]) -> None:
    """``STAGE.key=value`` sets one stage setting, ``name=value`` one variable (values read as YAML scalars)."""
    by_name = {stage.name: stage for stage in recipe.stages}
    for override in overrides:
        target, equals, text = override.partition("=")
        if not equals or not target:
            raise RecipeError(f"--set {override!r}: expected STAGE.option=value or variable=value")
        value = yaml.safe_load(text) if text else ""
        stage_name, dot, key = target.partition(".")
        if dot:
            if stage_name not in by_name:
                raise RecipeError(f"--set {override!r}: {recipe.path} has no stage {stage_name} "
                                  f"(stages: {', '.join(by_name)})")
            by_name[stage_name].settings[key] = value
        elif target in recipe.variables:
            recipe.variables[target] = value
        else:
            raise RecipeError(f"--set {override!r}: {recipe.path} has no variable {target} "
                              f"(variables: {', '.join(recipe.variables) or 'none'})")


def setting_arguments(settings: Mapping[str, Any]) -> list[str]:
    """``{key: value}`` -> ``--key value`` in order: true -> ``--key``, false/None -> nothing, a list -> values."""
    arguments: list[str] = []
    for key, value in settings.items():
        if value is None or value is False:
            continue
        arguments.append(f"--{key}")
        if value is True:
            continue
        if isinstance(value, list):
            arguments.extend(str(item) for item in value)
        else:
            arguments.append(str(value))
    return arguments


@dataclass
class Run:
    """One run of a recipe in ``work``: stage outputs, their keys and the manifest rows so far."""

    recipe: Recipe
    work: Path
    outputs: dict[str, Path] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    manifest: list[dict[str, Any]] = field(default_factory=list)
    digests: dict[str, str] = field(default_factory=dict)

    def substitute(self, text: str, stage: str, output: str, *, keyed: bool) -> str:
        """Resolve the placeholders of ``text``; ``keyed``: earlier stages stand as their keys, not their paths."""

        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name == "output":
                return output
            if name == "checkpoints":
                return str(self.work / ".checkpoints" / stage)
            if name in ("work", "repo", "python"):
                return {"work": str(self.work), "repo": str(REPO), "python": PYTHON}[name]
            if name in ("smollm2_gguf", "minilm"):
                from common.embedded_models import minilm_dir, smollm2_gguf

                return smollm2_gguf() if name == "smollm2_gguf" else minilm_dir()
            if name in self.outputs:
                return f"<stage {name} {self.keys[name]}>" if keyed else str(self.outputs[name])
            if name in self.recipe.variables:
                return self.substitute(str(self.recipe.variables[name]), stage, output, keyed=keyed)
            later = name in {item.name for item in self.recipe.stages}
            raise RecipeError(f"{self.recipe.path}: stage {stage}: {{{name}}} names "
                              + ("a later stage" if later else "no variable or earlier stage"))

        return PLACEHOLDER.sub(value, text)

    def arguments(self, stage: Stage, output: str, *, keyed: bool) -> list[str]:
        """The stage's command line with ``output`` for ``{output}`` (``keyed``: as its key sees it)."""
        try:
            tokens = shlex.split(stage.command)
        except ValueError as error:
            raise RecipeError(f"{self.recipe.path}: stage {stage.name}: command: {error}") from error
        tokens += setting_arguments(stage.settings)
        arguments: list[str] = []
        for token in tokens:
            if token == "{accelerate}":
                arguments += ACCELERATE_ONE_PROCESS
            else:
                arguments.append(self.substitute(token, stage.name, output, keyed=keyed))
        return arguments

    def key(self, stage: Stage) -> str:
        """sha256 of the stage's keyed command and the content digest of every existing path it names."""
        from common.fingerprints import saved_digest  # torch comes with it: not needed for --list

        keyed = self.arguments(stage, OUTPUT_MARK, keyed=True)
        contents = {}
        for argument in keyed:
            path = self.input_path(argument)
            if path is not None:
                if str(path) not in self.digests:
                    self.digests[str(path)] = saved_digest(path)
                contents[argument] = self.digests[str(path)]
        record = json.dumps({"command": keyed, "contents": contents}, sort_keys=True)
        return hashlib.sha256(record.encode()).hexdigest()

    def input_path(self, argument: str) -> Path | None:
        """The file or folder an argument names, when its content keys the stage: an existing path (relative: to
        the repository) that is not code, not this interpreter and not inside the work folder."""
        if argument in ("", ".", PYTHON) or argument.startswith(("<stage ", "-")) or "\n" in argument:
            return None
        path = Path(argument) if Path(argument).is_absolute() else REPO / argument
        try:
            if path.suffix == ".py" or not path.exists():
                return None
            path = path.resolve()
        except OSError:  # a value too long to be a path
            return None
        if path == REPO or path.is_relative_to(self.work) or self.work.is_relative_to(path):
            return None
        return path

    def run_stage(self, stage: Stage) -> None:
        """Build, reuse or (``output: false``) just run one stage, and add its manifest row."""
        key = self.key(stage)
        output = self.work / stage.path
        if stage.output:
            self.outputs[stage.name], self.keys[stage.name] = output, key
        settings = {"key": key, "command": self.arguments(stage, OUTPUT_MARK, keyed=False)}
        row: dict[str, Any] = {"stage": stage.name, "key": key[:16]}
        if not stage.output:
            row.update(status="run", **run_command(stage.name, self.arguments(stage, "", keyed=False)))
        else:
            recorded = recorded_settings(output)
            if output.exists() and recorded is not None and recorded.get("key") != key:
                print(f"[{stage.name}] {output} was built from other inputs or settings: rebuilding it", flush=True)
            measured: dict[str, Any] = {}

            def build(partial: Path) -> None:
                measured.update(run_command(stage.name, self.arguments(stage, str(partial), keyed=False)))

            if build_once(output, build, settings) is None:
                print(f"[{stage.name}] reused: {output} (same inputs and settings)", flush=True)
                row.update(status="reused")
            else:
                row.update(status="built", **measured)
        self.manifest.append(row)
        write_whole(self.work / "manifest.json", lambda path: path.write_text(json.dumps(
            {"recipe": str(self.recipe.path), "stages": self.manifest}, indent=2) + "\n"))


def run_command(stage: str, arguments: list[str]) -> dict[str, float]:
    """Run one command from the repository root, printing it first: its wall seconds and peak resident GB (the
    largest process of its tree); ``StageError`` when it fails."""
    print(f"\n[{stage}] $ {shlex.join(arguments)}", flush=True)
    start = time.perf_counter()
    process = subprocess.Popen(arguments, cwd=REPO)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise StageError(stage, process.returncode if process.returncode > 0 else 128 - process.returncode)
    return {"seconds": round(time.perf_counter() - start, 3), "peak_gb": round(usage.ru_maxrss / 2**20, 3)}


def run_recipe(recipe: Recipe, work: Path, only: Sequence[str] = ()) -> Run:
    """Run every stage of ``recipe`` in ``work`` (or the stages up to and including ``only``'s)."""
    run = Run(recipe, work.resolve())  # the folder appears with the first output: a refused input leaves none
    names = [stage.name for stage in recipe.stages]
    missing = [name for name in only if name not in names]
    if missing:
        raise RecipeError(f"--until {missing[0]}: {recipe.path} has no such stage (stages: {', '.join(names)})")
    last = max((names.index(name) for name in only), default=len(names) - 1)
    for stage in recipe.stages[: last + 1]:
        run.run_stage(stage)
    return run
