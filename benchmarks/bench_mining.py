"""Hard-negative mining time on a 5,000-document corpus (MS MARCO sample by default).

Reads a BEIR folder, then times ``preprocess.mining.mine`` with BM25 alone and with BM25 and the dense
bi-encoder fused (all-MiniLM-L6-v2: encoding the corpus dominates), printing the seconds of each part.

    python benchmarks/bench_mining.py [--beir ../shared/data/en/msmarco-mini] [--split test] [--k 7] [--faiss]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from preprocess.mining import MiningConfig, mine  # noqa: E402
from preprocess.readers import read_examples  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--beir", default=str(Path(__file__).resolve().parents[2] / "shared/data/en/msmarco-mini"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--k", type=int, default=7)
    parser.add_argument("--faiss", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    read = read_examples(args.beir, split=args.split)
    print(f"{args.beir}: {len(read.corpus)} documents, {len(read.examples)} (query, positive) rows, "
          f"{len(set(read.examples['query']))} queries; threads {torch.get_num_threads()}")
    for methods in (("bm25",), ("bm25", "dense")):
        started = time.perf_counter()
        _, report = mine(read.examples, read.corpus, MiningConfig(k=args.k, methods=methods, use_faiss=args.faiss))
        total = time.perf_counter() - started
        parts = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in report.seconds.items())
        print(f"{'+'.join(methods):11s} total {total:6.1f}s ({parts}); {report.filled_randomly} rows filled at random,"
              f" {report.false_negatives_dropped} likely false negatives dropped")


if __name__ == "__main__":
    main()
