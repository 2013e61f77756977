"""Read every row of some pair files before a run starts, refusing the rows a reader would skip.

    python -m preprocess.check_pairs FILE [FILE ...] [--layout graded]

A bad row (unreadable, a missing field), or one that ``preprocess.readers.read_pairs`` would skip (an empty text, a
missing score, identical texts, a repeated pair), ends the command with exit status 2 and one line naming the
file, the row and the reason: a recipe that takes every row or none starts with this check. Prints one line per
file checked.
"""

from __future__ import annotations

import argparse
from typing import Sequence

from preprocess.readers import LAYOUTS, DataError, read_pairs


def check_pairs(source: str, layout: str = "auto") -> int:
    """The number of pairs in ``source``; ``DataError`` on the first row the reader would refuse or skip."""
    pairs, report = read_pairs(source, layout=layout)
    if report.skipped:
        reason, count = next(iter(report.skipped.items()))
        raise DataError(f"{report.examples_of_skips[reason][0]}: {reason} ({count} such rows in {source}); "
                        "this run takes every row or none")
    return len(pairs)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", help="pair files (JSONL, JSON, CSV, TSV)")
    parser.add_argument("--layout", default="auto", choices=LAYOUTS)
    args = parser.parse_args(argv)
    for source in args.files:
        print(f"{source}: {check_pairs(source, args.layout)} pairs, none skipped")


if __name__ == "__main__":
    from common.cli_errors import run_command

    run_command(main, DataError, FileNotFoundError)
