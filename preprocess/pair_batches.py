"""Labelled pairs -> pair batches: fixed batches of B (text, text, gold target) rows, for the bi-encoder baseline.

    python -m preprocess.pair_batches SOURCE --output DIR [--layout auto|graded|labelled] [--batch-size 32]
        [--positive-labels entailment ...] [--limit N] [--seed 0]

``SOURCE`` is any pairs file or hub dataset ``preprocess.readers.read_pairs`` reads; a graded pair's target is its
score / 5, a labelled pair's 1 or 0. Pairs are shuffled with ``--seed`` and cut into batches of one task each
(``common.schema.PAIR_BATCH_FEATURES``; the last, short batch of each task is dropped), so that
``train.py --objective bi-encoder --train_dataset DIR`` trains on them: AnglE / CoSENT rank each batch's pairs by
their targets (``--ibn_weight 0``), and batches of positive pairs only also train with in-batch InfoNCE.

Rows the reader skips (an empty text, no gold, identical texts, a repeated pair) are left out: they are counted in
one line on stderr and recorded in ``DIR/skipped.json`` (``{SOURCE: {rows, skipped, reasons, examples}}``,
``preprocess.read_report.announce_skips``).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Sequence

from datasets import Dataset

from common.schema import PAIR_BATCH_FEATURES
from common.stages import write_whole
from preprocess.read_report import SKIPPED_FILE, announce_skips
from preprocess.readers import POSITIVE_LABELS, DataError, read_pairs


def pair_batches(pairs: Dataset, batch_size: int, seed: int = 0) -> Dataset:
    """``read_pairs`` rows (query, passage, target, task[, source]) -> shuffled batches of ``batch_size`` pairs, one
    task each, and one ``source`` each where the rows name theirs (a ranking loss then never compares targets of
    two label scales, such as STS-B's graded scores and SNLI's 0 / 1)."""
    if batch_size < 2:
        raise DataError(f"--batch-size {batch_size}: a pair batch needs >= 2 pairs")
    rows = list(pairs)
    random.Random(seed).shuffle(rows)
    batches = []
    for task, source in sorted({(row["task"], row.get("source", "")) for row in rows}):
        mine = [row for row in rows if row["task"] == task and row.get("source", "") == source]
        for start in range(0, len(mine) - batch_size + 1, batch_size):
            chunk = mine[start : start + batch_size]
            batches.append({"task": task, "queries": [row["query"] for row in chunk],
                            "positives": [row["passage"] for row in chunk],
                            "targets": [float(row["target"]) for row in chunk]})
    if not batches:
        raise DataError(f"{len(rows)} pairs make no batch of {batch_size}")
    random.Random(seed).shuffle(batches)
    return Dataset.from_list(batches, features=PAIR_BATCH_FEATURES)


def save_batches(batches: Dataset, skipped: dict[str, dict], folder: Path) -> None:
    """``batches`` as a datasets folder, with the rows skipped in each source (``announce_skips`` records) in
    ``folder/SKIPPED_FILE``."""
    batches.save_to_disk(str(folder))
    (folder / SKIPPED_FILE).write_text(json.dumps(skipped, indent=2), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="graded or labelled pairs: JSONL/JSON/CSV/TSV file or hub dataset id")
    parser.add_argument("--output", required=True, help="datasets folder of pair batches")
    parser.add_argument("--layout", default="auto", choices=("auto", "graded", "labelled"))
    parser.add_argument("--split", default="train")
    parser.add_argument("--positive-labels", nargs="+", default=list(POSITIVE_LABELS))
    parser.add_argument("--task", default="symmetric", choices=("symmetric", "asymmetric"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit", type=int, help="use this many pairs, drawn with --seed")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    pairs, report = read_pairs(args.source, layout=args.layout, split=args.split,
                               positive_labels=args.positive_labels, task=args.task, limit=args.limit, seed=args.seed)
    skipped = {args.source: announce_skips(report)}
    batches = pair_batches(pairs, args.batch_size, args.seed)
    write_whole(Path(args.output), lambda partial: save_batches(batches, skipped, partial))
    print(f"{len(pairs)} pairs -> {len(batches)} batches of {args.batch_size} -> {args.output}")


if __name__ == "__main__":
    from common.cli_errors import run_command

    run_command(main, DataError, FileNotFoundError)
