"""Pairs -> pair batches whose targets blend the gold label with the teacher's score (docs/method.md, eq. (10)).

    python -m teacher.label_pairs SOURCE [SOURCE ...] --teacher BACKBONE --adapter ADAPTER --output DIR
        [--gold-weight 0.5] [--unlabelled PAIRS ...] [--batch-size 32] [--layout auto|graded|labelled]
        [--limit N] [--seed 0] [--device cpu|cuda] [--dtype auto|float32|bfloat16]

Each pair (a, b) of each ``SOURCE`` (any file or hub dataset ``preprocess.readers.read_pairs`` reads; a graded
pair's gold is score / 5, a labelled pair's 1 or 0) gets the target

    t = lambda * t_gold + (1 - lambda) * p_teacher(yes | a, b),     lambda = --gold-weight,

and each pair of each ``--unlabelled`` file (rows ``{sentence1, sentence2}``, such as ``preprocess.silver_pairs``
writes) has no gold, so t = p_teacher(yes | a, b) whatever lambda: pairs the teacher alone can teach. The pairs
are cut into ``preprocess.pair_batches`` batches, each of one SOURCE. ``train.py --train_dataset DIR``
then trains the D2LLM student (or the bi-encoder) on them with CoSENT (``distil.losses.gold_ranking_loss``), which
ranks a batch's pairs by their targets: lambda = 1 is the gold labels alone, lambda = 0 pure distillation of the
teacher's ranking. The teacher reads each pair once, in the order a, b (adapted teachers are trained on both
orders). Output is written whole or not at all.

Rows the reader skips (an empty text, no gold, identical texts, a repeated pair) are left out: each source's are
counted in one line on stderr and recorded in ``DIR/skipped.json`` (``{source: {rows, skipped, reasons,
examples}}``, ``preprocess.read_report.announce_skips``). A row that cannot be read, or a ``--teacher`` that does not
load, ends the command with exit status 2 and one line.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import torch
from datasets import Dataset, concatenate_datasets

from common.cli_errors import ModelError
from common.stages import write_whole
from preprocess.pair_batches import pair_batches, save_batches
from preprocess.read_report import announce_skips
from preprocess.readers import POSITIVE_LABELS, DataError, read_pairs
from teacher.model import YesNoTeacher, add_teacher_cost_arguments


def blended_targets(gold: torch.Tensor, teacher: torch.Tensor, gold_weight: float) -> torch.Tensor:
    """``gold_weight * gold + (1 - gold_weight) * teacher``, and ``teacher`` alone where ``gold`` is NaN (no gold
    label); both ``[N]`` in [0, 1]."""
    if not 0.0 <= gold_weight <= 1.0:
        raise DataError(f"--gold-weight {gold_weight}: must lie in [0, 1]")
    blended = gold_weight * gold.float() + (1.0 - gold_weight) * teacher.float()
    return torch.where(gold.isnan(), teacher.float(), blended)


def label_pairs(pairs: Dataset, teacher: YesNoTeacher | None, gold_weight: float, batch_size: int = 32
                ) -> Dataset:
    """``read_pairs`` rows with ``target`` replaced by ``blended_targets`` (the teacher scores each task's pairs;
    with ``gold_weight`` 1 it scores the pairs without gold only, and with none of those it may be None)."""
    gold = torch.tensor(pairs["target"], dtype=torch.float32)
    scores = torch.zeros_like(gold)
    needed = torch.ones_like(gold, dtype=torch.bool) if gold_weight < 1.0 else gold.isnan()
    if needed.any():
        if teacher is None:
            raise ValueError("a teacher is needed unless --gold-weight is 1 and every pair has gold")
        tasks = pairs["task"]
        for task in sorted(set(tasks)):
            rows = [index for index, name in enumerate(tasks) if name == task and needed[index]]
            if rows:
                scores[rows] = teacher.probability([pairs[i]["query"] for i in rows],
                                                   [pairs[i]["passage"] for i in rows], task, batch_size=batch_size,
                                                   show_progress=True)
    targets = blended_targets(gold, scores, gold_weight).tolist()
    return pairs.remove_columns("target").add_column("target", targets)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+", help="graded or labelled pairs: JSONL/JSON/CSV/TSV files or hub ids")
    parser.add_argument("--output", required=True, help="datasets folder of pair batches")
    parser.add_argument("--teacher", required=True, help="the teacher's causal-LM folder (or .gguf file)")
    parser.add_argument("--adapter", help="the adapted teacher's LoRA folder")
    parser.add_argument("--gold-weight", type=float, default=0.5, help="lambda: 1 = gold alone, 0 = teacher alone")
    parser.add_argument("--unlabelled", nargs="+", default=[], metavar="PAIRS",
                        help="pairs without gold ({sentence1, sentence2} rows): the teacher alone labels them")
    parser.add_argument("--layout", default="auto", choices=("auto", "graded", "labelled"))
    parser.add_argument("--split", default="train")
    parser.add_argument("--positive-labels", nargs="+", default=list(POSITIVE_LABELS))
    parser.add_argument("--task", default="symmetric", choices=("symmetric", "asymmetric"))
    parser.add_argument("--batch-size", type=int, default=32, help="pairs per batch (and per teacher forward)")
    parser.add_argument("--limit", type=int, help="use this many pairs of each source, drawn with --seed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", help="where the teacher runs: cpu, cuda, ... (default: cuda when available)")
    add_teacher_cost_arguments(parser)
    args = parser.parse_args(argv)
    blended_targets(torch.zeros(0), torch.zeros(0), args.gold_weight)  # refuse a bad weight before any work
    read, skipped = [], {}
    for source, layout in [*((source, args.layout) for source in args.sources),
                           *((source, "unlabelled") for source in args.unlabelled)]:
        rows, report = read_pairs(source, layout=layout, split=args.split, positive_labels=args.positive_labels,
                                  task=args.task, limit=args.limit, seed=args.seed)
        read.append(rows.add_column("source", [source] * len(rows)))
        skipped[source] = announce_skips(report)
    pairs = concatenate_datasets(read)
    teacher = None if args.gold_weight == 1.0 and not args.unlabelled else YesNoTeacher.from_pretrained(
        args.teacher, adapter=args.adapter, device=args.device, dtype=args.dtype, prompt_preset=args.prompt_preset)
    batches = pair_batches(label_pairs(pairs, teacher, args.gold_weight, args.batch_size), args.batch_size,
                           args.seed)
    write_whole(Path(args.output), lambda partial: save_batches(batches, skipped, partial))
    print(f"{len(pairs)} pairs (gold weight {args.gold_weight}) -> {len(batches)} batches of {args.batch_size} -> "
          f"{args.output}")


if __name__ == "__main__":
    from common.cli_errors import run_command

    run_command(main, DataError, ModelError, FileNotFoundError)
