"""Search that scales: exact IEM search against the matmul floor, and two-stage (faiss ANN + IEM) recall and speed.

Real data (a trained student): each set's corpus and test queries are encoded once (cached as safetensors in
``--work``), then for each path: queries/s (query encoding not included), recall@10 against exact IEM search, and
NDCG@10 against the qrels. Synthetic: passage embeddings drawn from a Gaussian with the real passages' mean and
covariance, padded to ``--sizes``; queries are the real test queries. At each size, in the same run: exact search in
fp32 and in the auto precision, the plain ``[Nq * Np, h] x [h, h]`` matmul floor in fp32 and bf16 (same total rows,
in blocks of the exact search's chunk), and the two-stage paths, all as ratios against each other.

    OMP_NUM_THREADS=2 python benchmarks/bench_search.py --model STUDENT --work DIR [--sizes 100000 1000000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common.metrics import retrieval  # noqa: E402
from common.stages import build_once, write_whole  # noqa: E402
from evaluation.loaders import load_retrieval  # noqa: E402
from evaluation.models import load_d2llm  # noqa: E402
from retrieval.scoring import DEFAULT_MEMORY_MB, bf16_is_fast, chunk_size, compute_dtype  # noqa: E402
from search import SearchIndex, recall_against  # noqa: E402

TOP_K = 10
SETS = {"scifact": "en/scifact", "msmarco-mini": "en/msmarco-mini"}


def encoded(model: Any, name: str, data: Path, work: Path, dtype: torch.dtype, batch_size: int) -> dict[str, Any]:
    """A set's test queries and corpus as embeddings, encoded with the model in ``dtype`` once and cached under a
    key of the model's fingerprint and the set's content: another model or edited data is encoded anew."""
    from safetensors.torch import load_file, save_file

    from common.fingerprints import model_fingerprint, saved_digest

    sample = load_retrieval(str(data / SETS[name]), split="test")
    queries = [q for q in sample.queries if q in sample.qrels]
    key = hashlib.sha256(f"{model_fingerprint(model)} {saved_digest(data / SETS[name])}".encode()).hexdigest()
    cache = work / f"{name}-{str(dtype).split('.')[-1]}-{key[:16]}.safetensors"

    def encode(out: Path) -> None:
        encoder = model.to(dtype)
        with torch.inference_mode():
            passages = encoder.encode_document(list(sample.corpus.values()), batch_size=batch_size,
                                               convert_to_tensor=True)
            asked = encoder.encode_query([sample.queries[q] for q in queries], batch_size=batch_size,
                                         convert_to_tensor=True)
        model.float()
        save_file({"passages": passages.float().contiguous(), "queries": asked.float().contiguous()}, str(out))

    build_once(cache, encode)
    tensors = load_file(str(cache))
    return {"ids": list(sample.corpus), "query_ids": queries, "qrels": sample.qrels, **tensors}


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def ndcg(hits: list[list[tuple[str, float]]], query_ids: list[str], qrels: dict) -> float:
    run = {query: dict(found) for query, found in zip(query_ids, hits)}
    return retrieval(run, {query: qrels[query] for query in query_ids})["ndcg_at_10"]


def agreement(hits: list, reference: list) -> float:
    """Fraction of queries whose top-10 ids equal the reference's, in order."""
    return sum([d for d, _ in a] == [d for d, _ in b] for a, b in zip(hits, reference)) / len(reference)


def path_row(name: str, seconds: float, hits: list, exact: list, **extra: Any) -> dict[str, Any]:
    return {"path": name, "queries_per_s": round(len(hits) / seconds, 3),
            f"recall_at_{TOP_K}_vs_exact": round(recall_against(hits, exact), 4), **extra}


def two_stage_rows(model: Any, ids: list[str], passages: torch.Tensor, queries: torch.Tensor, exact: list,
                   args: argparse.Namespace, scored: Callable[[list], dict],
                   metrics: list[str]) -> list[dict[str, Any]]:
    """Flat (exact) L2, then each ANN kind and metric at each shortlist depth."""
    rows = []
    flat = SearchIndex.from_embeddings(model, ids, passages)
    for depth in args.candidates:
        seconds, hits = timed(lambda: flat.search(model, queries, TOP_K, two_stage=True, candidates=depth))
        rows.append(path_row(f"two-stage flat l2, {depth}", seconds, hits, exact, **scored(hits)))
    for kind in args.ann:
        for metric in metrics:
            build_s, index = timed(lambda: SearchIndex.from_embeddings(model, ids, passages, ann=kind, metric=metric))
            folder = args.work / f"index-{kind}-{metric}-{len(ids)}"
            index.save(str(folder))
            size = sum(f.stat().st_size for f in folder.iterdir())
            for depth in args.candidates:
                seconds, hits = timed(lambda: index.search(model, queries, TOP_K, two_stage=True, candidates=depth))
                rows.append(path_row(f"two-stage {kind} {metric}, {depth}", seconds, hits, exact, **scored(hits),
                                     build_s=round(build_s, 1), saved_bytes_per_passage=round(size / len(ids), 1)))
    return rows


def real_set(model: Any, name: str, args: argparse.Namespace) -> dict[str, Any]:
    data = encoded(model, name, args.data, args.work, args.encode_dtype, args.batch_size)
    ids, passages, queries = data["ids"], data["passages"], data["queries"]

    def scored(hits: list) -> dict[str, float]:
        return {"ndcg_at_10": round(ndcg(hits, data["query_ids"], data["qrels"]), 4)}

    index = SearchIndex.from_embeddings(model, ids, passages)
    index.search(model, queries[:2], TOP_K)  # warm-up
    exact_s, exact = timed(lambda: index.search(model, queries, TOP_K, precision="fp32"))
    rows = [path_row("exact fp32", exact_s, exact, exact, **scored(exact))]
    auto_s, auto = timed(lambda: index.search(model, queries, TOP_K, precision="auto"))
    rows.append(path_row("exact auto", auto_s, auto, exact, **scored(auto), top10_equal=agreement(auto, exact)))
    rows += two_stage_rows(model, ids, passages, queries, exact, args, scored, args.metrics)
    return {"set": name, "passages": len(ids), "queries": len(queries), "rows": rows}


def synthetic_passages(real: torch.Tensor, size: int, seed: int = 0) -> torch.Tensor:
    """``size`` fp16 rows from N(mean, covariance) of ``real`` (a small ridge keeps the covariance definite)."""
    real = real.double()
    mean, covariance = real.mean(0), torch.cov(real.T)
    factor = torch.linalg.cholesky(covariance + 1e-6 * covariance.diagonal().mean() * torch.eye(len(mean),
                                                                                            dtype=torch.float64))
    generator = torch.Generator().manual_seed(seed)
    mean, factor = mean.float(), factor.float()
    blocks = [(mean + torch.randn(min(65536, size - start), len(mean), generator=generator) @ factor.T).half()
              for start in range(0, size, 65536)]
    return torch.cat(blocks)


def matmul_floor(rows: int, block_rows: int, hidden: int, dtype: torch.dtype) -> float:
    """Seconds of a plain ``[rows, hidden] x [hidden, hidden]`` matmul in ``dtype``, in blocks of ``block_rows``."""
    inputs = torch.randn(block_rows, hidden).to(dtype)
    weight, out = torch.randn(hidden, hidden).to(dtype), torch.empty(block_rows, hidden, dtype=dtype)
    torch.mm(inputs, weight, out=out)
    start = time.perf_counter()
    for _ in range(rows // block_rows):
        torch.mm(inputs, weight, out=out)
    if rows % block_rows:
        torch.mm(inputs[: rows % block_rows], weight)
    return time.perf_counter() - start


def synthetic_size(model: Any, real: dict[str, Any], size: int, args: argparse.Namespace) -> dict[str, Any]:
    passages = synthetic_passages(real["passages"], size)
    queries = real["queries"][: args.queries]
    ids = [f"s{i}" for i in range(size)]
    index = SearchIndex.from_embeddings(model, ids, passages)
    index.search(model, queries[:2], TOP_K, memory_mb=1)  # warm-up
    hidden = model.config.iem_hidden_size
    report: dict[str, Any] = {"passages": size, "queries": len(queries), "rows": []}
    auto = compute_dtype("auto", "cpu")
    auto_s, auto_hits = timed(lambda: index.search(model, queries, TOP_K, precision="auto"))
    reference, rows = auto_hits, report["rows"]
    metrics = args.metrics[:1]
    if size <= args.fp32_up_to:  # the fp32 paths and the floors take minutes at 1,000,000 passages on 2 cores
        metrics = args.metrics
        floors: dict[torch.dtype, float] = {torch.float32: float("inf"), torch.bfloat16: float("inf")}
        exact_s = float("inf")
        for _ in range(args.repeats):  # interleaved, best of each: load from other jobs hits all alike
            for dtype in floors:
                block = len(queries) * min(size, chunk_size(len(queries), hidden, dtype, DEFAULT_MEMORY_MB))
                floors[dtype] = min(floors[dtype], matmul_floor(len(queries) * size, block, hidden, dtype))
            seconds, reference = timed(lambda: index.search(model, queries, TOP_K, precision="fp32"))
            exact_s = min(exact_s, seconds)
            seconds, auto_hits = timed(lambda: index.search(model, queries, TOP_K, precision="auto"))
            auto_s = min(auto_s, seconds)
        report["floor_seconds"] = {"fp32": round(floors[torch.float32], 3), "bf16": round(floors[torch.bfloat16], 3)}
        report["timing"] = f"best of {args.repeats + 1} runs (auto), {args.repeats} (fp32, floors), interleaved"
        rows.append(path_row("exact fp32", exact_s, reference, reference,
                             over_fp32_floor=round(exact_s / floors[torch.float32], 3)))
        rows.append(path_row(f"exact auto ({str(auto).split('.')[-1]})", auto_s, auto_hits, reference,
                             top10_equal_fp32=agreement(auto_hits, reference),
                             over_same_dtype_floor=round(auto_s / floors[auto], 3),
                             fp32_floor_over_this=round(floors[torch.float32] / auto_s, 3)))
    else:
        rows.append(path_row(f"exact auto ({str(auto).split('.')[-1]}), the reference", auto_s, auto_hits, auto_hits))
    rows += two_stage_rows(model, ids, passages, queries, reference, args, lambda hits: {}, metrics)
    for row in rows:
        row["speedup_vs_exact_auto"] = round(row["queries_per_s"] * auto_s / len(queries), 1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a trained D2LLM student")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, required=True, help="embedding caches and saved indexes")
    parser.add_argument("--sets", nargs="*", default=list(SETS), choices=list(SETS))
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=32, help="queries, batched, at the synthetic sizes")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timings up to --fp32-up-to")
    parser.add_argument("--fp32-up-to", type=int, default=100_000, help="largest size also searched in fp32")
    parser.add_argument("--ann", nargs="*", default=["hnsw", "ivf"])
    parser.add_argument("--metrics", nargs="*", default=["l2", "ip"],
                        help="ANN metrics; above --fp32-up-to passages only the first")
    parser.add_argument("--candidates", type=int, nargs="*", default=[100, 200])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--encode-dtype", default="bfloat16", help="dtype of the model while encoding texts")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    args.encode_dtype = getattr(torch, args.encode_dtype)
    args.work.mkdir(parents=True, exist_ok=True)
    model = load_d2llm(args.model, "cpu")
    report: dict[str, Any] = {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
                              "bf16_is_fast": bf16_is_fast("cpu"), "torch_threads": torch.get_num_threads(),
                              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "model": args.model}
    with torch.inference_mode():
        report["real"] = [real_set(model, name, args) for name in args.sets]
        print(json.dumps(report["real"], indent=1), flush=True)
        real = encoded(model, args.sets[0], args.data, args.work, args.encode_dtype, args.batch_size)
        report["synthetic"] = []
        for size in args.sizes:
            report["synthetic"].append(synthetic_size(model, real, size, args))
            print(json.dumps(report["synthetic"][-1], indent=1), flush=True)
    if args.output:
        write_whole(args.output, lambda out: out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8"))
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
