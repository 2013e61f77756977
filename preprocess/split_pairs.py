"""Split labelled pairs into two halves that share no first sentence (SNLI dev: a training half and a test half).

    python -m preprocess.split_pairs SOURCE.jsonl --output FOLDER [--seed 0]

Writes ``FOLDER/train.jsonl`` and ``FOLDER/test.jsonl``: the distinct ``sentence1`` values are shuffled with
``--seed`` and the first half of them (with every row that has one) goes to ``train``. A row that is not a JSON
object with a ``sentence1`` string ends the command with exit status 2 and one line naming the file and row.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any, Sequence

from common.stages import write_whole
from preprocess.readers import DataError


def split_by_premise(rows: list[dict[str, Any]], seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Two halves of SNLI-style rows with no premise (``sentence1``) in both: premises shuffled with ``seed``."""
    premises = sorted({row["sentence1"] for row in rows})
    random.Random(seed).shuffle(premises)
    first = set(premises[: len(premises) // 2])
    return [row for row in rows if row["sentence1"] in first], [row for row in rows if row["sentence1"] not in first]


def read_rows(source: Path) -> list[dict[str, Any]]:
    """The JSONL rows of ``source``; ``DataError`` names the row that is not an object with a sentence1 string."""
    if not source.is_file():
        raise DataError(f"{source}: no such file")
    rows = []
    for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{source}, row {number}: not JSON ({error.msg})") from error
        if not isinstance(row, dict) or not isinstance(row.get("sentence1"), str):
            raise DataError(f"{source}, row {number}, field sentence1: missing or not a string")
        rows.append(row)
    return rows


def write_halves(source: Path, seed: int, folder: Path) -> tuple[int, int]:
    """Create ``folder`` with ``train.jsonl`` (the first half) and ``test.jsonl``; returns their row counts."""
    halves = split_by_premise(read_rows(source), seed)
    folder.mkdir(parents=True)
    for name, half in zip(("train", "test"), halves):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in half), encoding="utf-8")
    return len(halves[0]), len(halves[1])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="labelled pairs, JSONL with sentence1")
    parser.add_argument("--output", required=True, help="folder for train.jsonl and test.jsonl")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out, counts = Path(args.output), []
    write_whole(out, lambda folder: counts.extend(write_halves(Path(args.source), args.seed, folder)))
    print(f"{args.source}: {counts[0]} rows -> {out / 'train.jsonl'}, {counts[1]} -> {out / 'test.jsonl'}")


if __name__ == "__main__":
    from common.cli_errors import run_command

    run_command(main, DataError)
