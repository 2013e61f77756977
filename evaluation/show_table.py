"""Print a comparison's table (``evaluation.comparison``'s RESULTS.json) and, optionally, one row's gain over another.

    python -m evaluation.show_table RESULTS.json [--gain ROW BASELINE]

``--gain``: ``ROW`` gains so many Spearman points over ``BASELINE`` (100 x the difference of their held-out
Spearman). A file that is not such a table, or a row it does not hold, ends the command with exit status 2 and
one line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from evaluation.comparison import render
from evaluation.loaders import DataError


def read_rows(results: Path) -> list[dict[str, Any]]:
    """The rows of a comparison JSON; ``DataError`` names the file when it is not one."""
    try:
        rows = json.loads(results.read_text(encoding="utf-8"))["rows"]
        if not all("name" in row and "metrics" in row and "cost" in row for row in rows):
            raise KeyError("name, metrics, cost")
        return rows
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(f"{results}: not a comparison table of evaluation.comparison ({error})") from error


def spearman_gain(rows: Sequence[dict[str, Any]], row: str, baseline: str) -> float:
    """100 x (Spearman of ``row`` - Spearman of ``baseline``); ``DataError`` for a missing row or metric."""
    spearman = {item["name"]: item["metrics"].get("spearman") for item in rows}
    for name in (row, baseline):
        if spearman.get(name) is None:
            raise DataError(f"--gain: no row {name!r} with a Spearman in the table (rows: {', '.join(spearman)})")
    return 100 * (spearman[row] - spearman[baseline])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", help="RESULTS.json written by python -m evaluation.comparison")
    parser.add_argument("--gain", nargs=2, metavar=("ROW", "BASELINE"))
    args = parser.parse_args(argv)
    rows = read_rows(Path(args.results))
    print("\n" + render(rows))
    if args.gain:
        gain = spearman_gain(rows, *args.gain)
        print(f"{args.gain[0]} gains {gain:+.1f} Spearman points over {args.gain[1]} (same seed)")


if __name__ == "__main__":
    from common.cli_errors import run_command

    run_command(main, DataError)
