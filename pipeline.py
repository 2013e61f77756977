"""Run a recipe: the stages of one reported result, each one of the project's commands, resumable.

    python pipeline.py [RECIPE] [--work FOLDER] [--data FOLDER] [--teacher MODEL] [--student MODEL]
                       [--set STAGE.option=value ...] [--set variable=value ...] [--until STAGE] [--list]

``RECIPE`` is a name from ``configs/recipes/`` (default ``demo``, the main job) or a YAML file of the same form
(``common/recipes.py`` describes it). ``--data``, ``--teacher`` and ``--student`` set the recipe's variables of
those names, ``--set`` any variable or any stage's option, so a GPU user changes the backbone and the batch size,
not the code. Each command is printed before it runs; a stage whose output was built from the same inputs
(their content) and settings is reused, one line saying so; a killed run resumes where it stopped. The run's
manifest (stage, key, built or reused, wall time, peak memory) is ``WORK/manifest.json``. A bad recipe, override
or input ends the run with exit status 2 and one line; a failed stage with that stage's status.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

from common.recipes import (REPO, RecipeError, StageError, apply_overrides, available_recipes, load_recipe,
                            run_recipe)

SHORTCUTS = ("data", "teacher", "student")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("recipe", nargs="?", default="demo", help=f"a recipe name ({', '.join(available_recipes())}) or YAML file")
    add("--work", help="work folder (default: outputs/RECIPE); relative paths are taken from the current folder")
    for name in SHORTCUTS:
        add(f"--{name}", help=f"set the recipe's variable {name}")
    add("--set", action="append", default=[], metavar="STAGE.OPTION=VALUE",
        help="override a stage's option (or, without a stage, a variable); repeatable")
    add("--until", action="append", default=[], metavar="STAGE", help="stop after this stage")
    add("--list", action="store_true", help="print the recipe's description, cost, variables and stages; run nothing")
    return parser.parse_args(argv)


def describe(recipe_name: str) -> str:
    """The recipe's description, cost, variables and stages, as ``--list`` prints them."""
    recipe = load_recipe(recipe_name)
    lines = [f"{recipe.path.relative_to(REPO) if recipe.path.is_relative_to(REPO) else recipe.path}",
             recipe.description, f"cost: {recipe.cost}", "variables:"]
    lines += [f"  {name} = {value}" for name, value in recipe.variables.items()]
    lines += ["stages:"] + [f"  {stage.name}: {stage.command} {stage.settings or ''}".rstrip()
                            for stage in recipe.stages]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.list:
        print(describe(args.recipe))
        return
    recipe = load_recipe(args.recipe)
    shortcuts = [f"{name}={getattr(args, name)}" for name in SHORTCUTS if getattr(args, name) is not None]
    for override in shortcuts:
        if override.partition("=")[0] not in recipe.variables:
            raise RecipeError(f"--{override.partition('=')[0]}: recipe {recipe.path.stem} has no such variable")
    apply_overrides(recipe, [*shortcuts, *args.set])
    work = Path(args.work) if args.work else REPO / "outputs" / recipe.path.stem
    start = time.perf_counter()
    run = run_recipe(recipe, work.resolve(), args.until)
    built = [row for row in run.manifest if row["status"] != "reused"]
    print("\nstage times (s): " + (", ".join(f"{row['stage']} {row['seconds']:.0f}" for row in built) or "none run"))
    print(f"total {time.perf_counter() - start:.0f} s; work folder {run.work}; manifest {run.work / 'manifest.json'}")


def run_main() -> None:
    """``main`` as a command: a bad recipe, override or input ends it with one ``error:`` line and status 2; a
    failed stage with that stage's status, the stage's own message being the one line."""
    from common.cli_errors import BAD_INPUT_STATUS, run_command
    from preprocess.readers import DataError

    try:
        run_command(main, RecipeError, FileNotFoundError, DataError)
    except StageError as error:
        if error.status != BAD_INPUT_STATUS:  # bad input: the stage's own one line is the message
            print(error, file=sys.stderr)
        sys.exit(error.status)


if __name__ == "__main__":
    run_main()
