"""Unlabelled pairs for a teacher to label: each sentence beside its BM25 neighbours (Augmented SBERT).

    python -m preprocess.silver_pairs SOURCE [SOURCE ...] --output PAIRS.jsonl [--k 1] [--depth 20]
        [--limit N] [--seed 0]

Gold pairs are few, and a student that learns them alone fits them and generalises less; a teacher can score any
pair. Following Augmented SBERT's BM25 sampling (Thakur et al., NAACL 2021), every distinct sentence of the
``SOURCE`` pairs (graded or labelled files ``preprocess.readers.read_pairs`` reads) is paired with its ``k`` best
BM25 neighbours among all those sentences (``preprocess.mining.BM25Retriever``), leaving out the sentence itself
and any pair, in either order, that is gold already or taken already (texts compared as ``mining.normalise`` does).
Neighbours share words but not always meaning, so the teacher's scores of them spread over the whole range.
``--limit`` keeps that many pairs, drawn with ``--seed``.

Writes JSONL rows ``{sentence1, sentence2}`` without gold, whole or not at all; ``python -m teacher.label_pairs
--unlabelled PAIRS.jsonl`` labels them with the teacher alone. Source rows the reader skips (an empty text, no gold,
identical texts, a repeated pair) lend no sentence: each source's skipped rows are counted in one line on stderr
and recorded in ``PAIRS.jsonl.skipped.json`` (``{source: {rows, skipped, reasons, examples}}``, written first).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from common.stages import write_whole
from preprocess.mining import BM25Retriever, normalise
from preprocess.read_report import announce_skips
from preprocess.readers import DataError, check_limit, detect_language, read_pairs, sample_rows


def silver_pairs(gold: Sequence[tuple[str, str]], k: int = 1, depth: int = 20) -> list[tuple[str, str]]:
    """Each distinct sentence of ``gold`` with its first ``k`` BM25 neighbours (of the first ``depth``) that make a
    new pair: not the sentence itself, not a ``gold`` pair, not a pair taken before (either order)."""
    sentences = list(dict.fromkeys(text for pair in gold for text in pair))
    taken = {frozenset((normalise(a), normalise(b))) for a, b in gold}
    ranked = BM25Retriever(sentences, detect_language(sentences)).search(sentences, depth)
    pairs = []
    for sentence, neighbours in zip(sentences, ranked):
        new = 0
        for index in neighbours:
            key = frozenset((normalise(sentence), normalise(sentences[index])))
            if len(key) == 2 and key not in taken:
                taken.add(key)
                pairs.append((sentence, sentences[index]))
                new += 1
                if new == k:
                    break
    return pairs


def skipped_path(output: Path) -> Path:
    """Where the rows skipped in the sources of ``output`` are recorded: ``PARENT/NAME.skipped.json``."""
    return output.with_name(f"{output.name}.skipped.json")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+", help="graded or labelled pairs: JSONL/JSON/CSV/TSV files or hub ids")
    parser.add_argument("--output", required=True, help="JSONL file of {sentence1, sentence2} rows")
    parser.add_argument("--k", type=int, default=1, help="new pairs per sentence")
    parser.add_argument("--depth", type=int, default=20, help="BM25 neighbours looked at per sentence")
    parser.add_argument("--limit", type=int, help="keep this many pairs, drawn with --seed")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.k < 1 or args.depth < args.k:
        raise DataError(f"--k {args.k} --depth {args.depth}: need 1 <= k <= depth")
    check_limit(args.limit)
    gold, skipped = [], {}
    for source in args.sources:
        rows, report = read_pairs(source)
        gold += [(row["query"], row["passage"]) for row in rows]
        skipped[source] = announce_skips(report)
    pairs = sample_rows(silver_pairs(gold, args.k, args.depth), args.limit, args.seed)
    output = Path(args.output)
    write_whole(skipped_path(output), lambda partial: partial.write_text(json.dumps(skipped, indent=2)))
    write_whole(output, lambda partial: partial.write_text("".join(
        json.dumps({"sentence1": a, "sentence2": b}) + "\n" for a, b in pairs)))
    print(f"{len(gold)} gold pairs -> {len(pairs)} unlabelled pairs -> {args.output}")


if __name__ == "__main__":
    from common.cli_errors import run_command

    run_command(main, DataError, FileNotFoundError)
