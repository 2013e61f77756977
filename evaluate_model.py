"""Evaluate any scorer (D2LLM checkpoint, teacher cross-encoder, bi-encoder) on STS, pair classification and
BEIR retrieval, through one code path (docs/method.md, section 5).

    python evaluate_model.py --model PATH [--sts FILE] [--pairs FILE] [--beir DIR --split test] [--output results.json]

* ``--sts``: graded pairs; Spearman of the symmetric score against the gold score.
* ``--pairs``: labelled pairs (NLI or paraphrase); average precision of the positive class (``entailment`` or 1)
  and the accuracy at the best threshold, with the symmetric score.
* ``--beir``: a BEIR folder; NDCG@10, MRR@10 and Recall@100 with the asymmetric score. Bi-encoders rank the whole
  corpus exactly; a cross-encoder cannot, so it reranks the ``--rerank-depth`` best documents of
  ``--first-stage`` (BM25 or a bi-encoder), and the result says so.

Each flag may be repeated; a file may also be a hub dataset id. Metrics are printed as JSON (and written to
``--output``, whole or not at all: an older file there is replaced in one rename). Bad input exits with status 2 and
a message naming the file, line and field.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from common import metrics
from common.cli_errors import report_bad_input
from common.stages import write_whole
from evaluation.loaders import DataError
from evaluation.models import MODEL_TYPES, ModelError, detect_model_type, load_scorer
from evaluation.tasks import load_jobs, run

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="D2LLM checkpoint, sentence-transformers model, or a "
                        "teacher (.gguf file or causal-LM folder / hub id)")
    parser.add_argument("--model-type", default="auto", choices=("auto", *MODEL_TYPES))
    parser.add_argument("--teacher-adapter", help="LoRA adapter folder of an adapted teacher")
    parser.add_argument("--language", default="en", help="teacher prompt language and BM25 tokenizer (en, zh)")
    parser.add_argument("--sts", action="append", default=[], help="graded pairs (JSONL or hub id)")
    parser.add_argument("--pairs", action="append", default=[], help="labelled pairs (JSONL or hub id)")
    parser.add_argument("--beir", action="append", default=[], help="BEIR folder (or MTEB-layout hub id)")
    parser.add_argument("--split", default="test", help="qrels split of --beir; split of hub datasets")
    parser.add_argument("--max-pairs", type=int, help="evaluate a seeded sample of this many pairs per file")
    parser.add_argument("--max-queries", type=int, help="evaluate a seeded sample of this many judged queries")
    parser.add_argument("--rerank-depth", type=int, default=100,
                        help="cross-encoders: documents of the first stage reranked per query")
    parser.add_argument("--max-query-tokens", type=int,
                        help="teachers: cut queries to this many tokens (default: the adapter's, else 128)")
    parser.add_argument("--max-passage-tokens", type=int,
                        help="teachers: cut passages to this many tokens (default: the adapter's, else 384)")
    parser.add_argument("--first-stage", default="bm25", help="cross-encoders: bm25 or a bi-encoder model path")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--output", help="also write the results JSON here")
    args = parser.parse_args(argv)
    if not (args.sts or args.pairs or args.beir):
        parser.error("nothing to evaluate: give --sts, --pairs and/or --beir")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        jobs = load_jobs(sts=args.sts, pairs=args.pairs, beir=args.beir, split=args.split,
                         max_pairs=args.max_pairs, max_queries=args.max_queries)
        kind = detect_model_type(args.model) if args.model_type == "auto" else args.model_type
        scorer = load_scorer(args.model, kind, teacher_adapter=args.teacher_adapter, language=args.language,
                             batch_size=args.batch_size, rerank_depth=args.rerank_depth,
                             first_stage=args.first_stage, device=args.device,
                             max_query_tokens=args.max_query_tokens, max_passage_tokens=args.max_passage_tokens)
        results = run(scorer, jobs)
    except (DataError, ModelError, metrics.MetricError) as error:
        return report_bad_input(error)
    report = {"model": args.model, "model_type": kind, "results": results}
    text = json.dumps(report, indent=2, ensure_ascii=False)
    print(text)
    if args.output:
        write_whole(Path(args.output), lambda partial: partial.write_text(text + "\n", encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
