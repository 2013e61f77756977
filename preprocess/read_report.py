"""What a reader skipped: ``ReadReport`` counts the rows read and the rows skipped by reason, and ``announce_skips``
says so in one stderr line and returns the record a command stores in its output's metadata (``SKIPPED_FILE``)."""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

SKIPPED_FILE = "skipped.json"
"""Written by the commands that take a source's usable rows only: ``{source: announce_skips(report)}``."""


@dataclass
class ReadReport:
    """Counts of rows read and of rows skipped, by reason; the first few skipped locations are kept."""

    source: str
    rows: int = 0
    examples: int = 0
    not_positive: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples_of_skips: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, location: str) -> None:
        self.skipped[reason] += 1
        self.examples_of_skips.setdefault(reason, [])
        if len(self.examples_of_skips[reason]) < 3:
            self.examples_of_skips[reason].append(location)

    def summary(self) -> str:
        lines = [f"{self.source}: {self.rows} rows read, {self.examples} kept"
                 + (f", {self.not_positive} pairs not positive (corpus only)" if self.not_positive else "")]
        for reason, count in sorted(self.skipped.items()):
            lines.append(f"  skipped {count} ({reason}), e.g. {', '.join(self.examples_of_skips[reason])}")
        return "\n".join(lines)


def announce_skips(report: ReadReport) -> dict[str, Any]:
    """Print one line on stderr counting the rows ``report`` skipped, by reason, with the first location of each
    (``FILE: skipped 2 of 4 rows (empty text: 1, identical query and passage: 1), e.g. FILE:2, FILE:3``; nothing
    when none was skipped). Returns the record to store in the output's metadata: ``{"rows": M, "skipped": N,
    "reasons": {reason: count}, "examples": {reason: [location, ...]}}``."""
    reasons = dict(sorted(report.skipped.items()))
    skipped = sum(reasons.values())
    if skipped:
        counts = ", ".join(f"{reason}: {count}" for reason, count in reasons.items())
        examples = ", ".join(report.examples_of_skips[reason][0] for reason in reasons)
        print(f"{report.source}: skipped {skipped} of {report.rows} rows ({counts}), e.g. {examples}",
              file=sys.stderr, flush=True)
    return {"rows": report.rows, "skipped": skipped, "reasons": reasons,
            "examples": {reason: list(report.examples_of_skips[reason]) for reason in reasons}}
