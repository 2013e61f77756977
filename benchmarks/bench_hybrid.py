"""Which hybrid fusion: BM25 alone, the dense IEM ranking alone, and both fused by reciprocal rank and by a
normalised sum, on the full BEIR SciFact test (300 queries over 5,183 documents) and MS MARCO-mini, in one run.

    OMP_NUM_THREADS=2 python benchmarks/bench_hybrid.py [--model D2LLM_CHECKPOINT] [--sets scifact msmarco-mini]
        [--output docs/results/hybrid.json]

The dense side is ``--model`` (a D2LLM checkpoint); by default, until a retrieval student exists, untrained D2LLM
heads on all-MiniLM-L6-v2 (PMA as the mean of the token states, IEM as a distance: they rank as the encoder's own
embeddings do). Every row searches the same ``search.SearchIndex`` (exact), each side ``search.HYBRID_DEPTH``
deep. Prints NDCG@10, Recall@100 and seconds per query of each row (the index built and the queries encoded
once, their time not counted in the rows: cost is ranking, plus the query encoding for the rows that use it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common.metrics import retrieval  # noqa: E402
from common.stages import write_json  # noqa: E402
from evaluation.loaders import load_retrieval  # noqa: E402
from search import HYBRID_DEPTH, SearchIndex  # noqa: E402

SETS = {"scifact": "en/scifact", "msmarco-mini": "en/msmarco-mini"}


def dense_model(path: str | None):
    """The D2LLM checkpoint at ``path``, or untrained heads on all-MiniLM-L6-v2 (mean PMA, distance IEM)."""
    from common.embedded_models import minilm_dir
    from modeling_d2llm import D2LLMModel

    if path:
        return D2LLMModel.from_pretrained(path).eval()
    torch.manual_seed(0)
    return D2LLMModel.from_backbone(minilm_dir(), pma_init="mean", iem_hidden_size=512, max_seq_length=256).eval()


def measure(index: SearchIndex, model, texts: list[str], embedded: torch.Tensor, query_ids: list[str], qrels,
            row: str) -> dict[str, float]:
    """NDCG@10, Recall@100 and seconds per query of one row."""
    start = time.perf_counter()
    if row == "bm25":
        hits = index.lexical_search(texts, HYBRID_DEPTH)
    elif row == "dense":
        hits = index.search(model, embedded, top_k=HYBRID_DEPTH)
    else:
        hits = index.search(model, embedded, top_k=HYBRID_DEPTH, hybrid=True, fusion=row.split()[-1],
                            query_texts=texts)
    seconds = time.perf_counter() - start
    run = {query: {doc: float(len(found) - rank) for rank, (doc, _) in enumerate(found)}
           for query, found in zip(query_ids, hits)}
    metrics = retrieval(run, {query: qrels[query] for query in query_ids})
    return {"ndcg_at_10": metrics["ndcg_at_10"], "recall_at_100": metrics["recall_at_100"],
            "seconds_per_query": seconds / len(query_ids)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--model", help="a D2LLM checkpoint (default: untrained heads on all-MiniLM-L6-v2)")
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--output", help="write the results JSON here")
    args = parser.parse_args()
    model = dense_model(args.model)
    report = {"model": args.model or "untrained D2LLM heads on all-MiniLM-L6-v2", "depth": HYBRID_DEPTH, "sets": {}}
    for name in args.sets:
        data = load_retrieval(str(Path(args.data) / SETS[name]), split="test")
        query_ids = [query for query in data.queries if query in data.qrels]
        texts = [data.queries[query] for query in query_ids]
        start = time.perf_counter()
        with torch.inference_mode():
            index = SearchIndex.build(model, data.corpus, batch_size=args.batch_size, lexical=True)
            encode_start = time.perf_counter()
            embedded = index.encode_queries(model, texts, args.batch_size)
            encode = (time.perf_counter() - encode_start) / len(texts)
            rows = {row: measure(index, model, texts, embedded, query_ids, data.qrels, row)
                    for row in ("bm25", "dense", "hybrid rrf", "hybrid sum")}
        for row in ("dense", "hybrid rrf", "hybrid sum"):
            rows[row]["seconds_per_query"] += encode
        report["sets"][name] = {"queries": len(query_ids), "documents": len(data.corpus), "rows": rows,
                                "build_seconds": round(encode_start - start, 1)}
        print(f"\n{name}: {len(query_ids)} queries, {len(data.corpus)} documents")
        print("| row | NDCG@10 | Recall@100 | ms per query |\n| --- | ---: | ---: | ---: |")
        for row, result in rows.items():
            print(f"| {row} | {result['ndcg_at_10']:.3f} | {result['recall_at_100']:.3f} | "
                  f"{1000 * result['seconds_per_query']:.1f} |", flush=True)
    if args.output:
        write_json(Path(args.output), report)


if __name__ == "__main__":
    main()
