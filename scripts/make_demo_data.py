"""Cut the bundled demo slice (``data/demo/stsb``) from the public STS Benchmark.

    python scripts/make_demo_data.py [--data ../shared/data] [--train 1500] [--test 500] [--seed 0]

Draws ``--train`` pairs of STS-B train and ``--test`` pairs of STS-B test (seeded, without replacement) and writes
them, as graded pairs ``{"sentence1", "sentence2", "score"}`` (0-5), to ``data/demo/stsb/{train,test}.jsonl``.
The STS-B scores are CC BY-SA 4.0 (``data/demo/README.md``); the slice is small enough to ship with the
repository and large enough that a 3-point Spearman difference on its test part is beyond noise.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def sample_rows(source: Path, count: int, seed: int) -> list[dict]:
    """``count`` rows of the JSONL file ``source``, drawn with ``seed``, in file order; a pair repeated in the
    source is drawn at most once (the readers would drop the repeat)."""
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = list({(row["sentence1"], row["sentence2"]): row for row in reversed(rows)}.values())[::-1]
    if count > len(rows):
        raise SystemExit(f"{source}: {len(rows)} rows, fewer than the {count} asked for")
    chosen = sorted(random.Random(seed).sample(range(len(rows)), count))
    return [{key: rows[i][key] for key in ("sentence1", "sentence2", "score")} for i in chosen]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--train", type=int, default=1500)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    target = REPO / "data" / "demo" / "stsb"
    target.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", args.train), ("test", args.test)):
        rows = sample_rows(Path(args.data) / "en" / "stsb" / f"{split}.jsonl", count, args.seed)
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        (target / f"{split}.jsonl").write_text(text, encoding="utf-8")
        print(f"{target / split}.jsonl: {len(rows)} pairs")


if __name__ == "__main__":
    main()
