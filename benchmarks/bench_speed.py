"""Speed of ranking 1,000 candidate passages for one query, and of the search index, on one machine and backbone.

Ranking (embedded SmolLM2-135M-Instruct as every backbone, all in one run):
* D2LLM student: the query is encoded now, the passages were encoded (and IEM-projected) beforehand; then
  ``model.similarity`` over the 1,000 cached projections and a top-k;
* teacher cross-encoder (``YesNoTeacher``): scores every (query, passage) pair; measured on ``--teacher-pairs``
  of them and extrapolated linearly to all candidates when that is fewer (the output says so);
* cosine bi-encoder (``baselines.bi_encoder.BiEncoder``, mean pooling): query encoded now, passages beforehand, cosine.
Targets: student >= 300x faster than the cross-encoder, and at most 1.5x the cosine bi-encoder's time.

Index (``search.SearchIndex``, the student's PMA/IEM heads over random passage embeddings, which do not change
the cost): queries per second with ``--index-queries`` query embeddings batched in one call, at 5,000 and 100,000
passages, exact (auto precision) and two-stage with a flat first stage. ``benchmarks/bench_search.py`` measures
the index against the matmul floor, the ANN first stages and their recall on real data.

``*_seconds`` are medians over ``--repeats`` runs after a warm-up; ``*_scoring_seconds`` leave out the query
encoding (the part where the IEM and the cosine differ).

Candidates: MS MARCO passages and a query from ``--data``/en/msmarco-mini (the 1,000-candidate reranking
setting of MS MARCO). Heads are untrained: speed does not depend on the weights.

    python benchmarks/bench_speed.py [--candidates 1000] [--teacher-pairs 64] [--repeats 10] [--threads N]
        [--index-sizes 5000 100000] [--output speed.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from baselines.bi_encoder import BiEncoder  # noqa: E402
from common.embedded_models import smollm2_gguf  # noqa: E402
from common.stages import write_whole  # noqa: E402
from evaluation.loaders import load_retrieval  # noqa: E402
from modeling_d2llm import D2LLMModel  # noqa: E402
from search import SearchIndex  # noqa: E402
from teacher.model import YesNoTeacher  # noqa: E402

TOP_K = 10


def median_time(function: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls, after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def candidates(data: Path, count: int) -> tuple[str, list[str]]:
    """The first judged query of the MS MARCO sample and ``count`` passages: its judged ones first, then others."""
    sample = load_retrieval(str(data / "en" / "msmarco-mini"))
    query_id = next(iter(sample.qrels))
    judged = list(sample.qrels[query_id])
    rest = [doc for doc in sample.corpus if doc not in sample.qrels[query_id]]
    ids = (judged + rest)[:count]
    if len(ids) < count:
        raise SystemExit(f"the sample has only {len(ids)} passages; lower --candidates")
    return sample.queries[query_id], [sample.corpus[doc] for doc in ids]


def rank_student(student: D2LLMModel, query: str, projections: torch.Tensor) -> torch.Tensor:
    embedding = student.encode_query([query], convert_to_tensor=True)
    scores = student.similarity(embedding, None, "asymmetric", passage_projections=projections)
    return torch.topk(scores[0], TOP_K).indices


def rank_cosine(encoder: BiEncoder, query: str, passages: torch.Tensor) -> torch.Tensor:
    embedding = encoder.encode([query])
    return torch.topk((embedding @ passages.T)[0], TOP_K).indices


def ranking(args: argparse.Namespace) -> dict:
    path = smollm2_gguf()
    query, passages = candidates(args.data, args.candidates)
    student = D2LLMModel.from_backbone(path).eval()
    cosine = BiEncoder.from_pretrained(path, pooling="mean").eval()
    teacher = YesNoTeacher.from_pretrained(path, device="cpu")
    with torch.inference_mode():
        start = time.perf_counter()
        projections = student.project_passages(student.encode_document(passages, batch_size=args.batch_size,
                                                                       convert_to_tensor=True))
        student_precompute = time.perf_counter() - start
        cosine_passages = cosine.encode(passages, batch_size=args.batch_size)
        student_s = median_time(lambda: rank_student(student, query, projections), args.repeats)
        cosine_s = median_time(lambda: rank_cosine(cosine, query, cosine_passages), args.repeats)
        student_query = student.encode_query([query], convert_to_tensor=True)
        student_scoring_s = median_time(lambda: torch.topk(student.similarity(
            student_query, None, "asymmetric", passage_projections=projections)[0], TOP_K), args.repeats)
        cosine_query = cosine.encode([query])
        cosine_scoring_s = median_time(lambda: torch.topk((cosine_query @ cosine_passages.T)[0], TOP_K),
                                       args.repeats)
        measured = passages[: args.teacher_pairs]
        teacher_measured_s = median_time(
            lambda: teacher.score([query] * len(measured), measured, "asymmetric", batch_size=args.batch_size),
            args.teacher_repeats)
    teacher_s = teacher_measured_s * len(passages) / len(measured)
    return {
        "candidates": len(passages),
        "query": query,
        "student_seconds": student_s,
        "student_scoring_seconds": student_scoring_s,
        "student_passage_precompute_seconds": student_precompute,
        "cosine_bi_encoder_seconds": cosine_s,
        "cosine_scoring_seconds": cosine_scoring_s,
        "teacher_seconds": teacher_s,
        "teacher_measured_pairs": len(measured),
        "teacher_extrapolated": len(measured) < len(passages),
        "speedup_vs_teacher": teacher_s / student_s,
        "student_over_cosine": student_s / cosine_s,
        "targets_met": {"speedup_vs_teacher>=300": teacher_s / student_s >= 300,
                        "student_over_cosine<=1.5": student_s / cosine_s <= 1.5},
    }, student


def index_speed(student: D2LLMModel, sizes: list[int], queries: int, candidates: int) -> list[dict]:
    """Queries per second of ``SearchIndex.search`` over ``queries`` embeddings at once (encoding not included)."""
    results = []
    generator = torch.Generator().manual_seed(0)
    dim = student.config.embedding_size
    probes = torch.randn(queries, dim, generator=generator)
    for size in sizes:
        embeddings = torch.randn(size, dim, generator=generator)
        index = SearchIndex.from_embeddings(student, [str(i) for i in range(size)], embeddings)
        row = {"passages": size, "queries": queries, "two_stage_candidates": candidates}
        for mode, two_stage in (("exact", False), ("two_stage", True)):
            index.search(student, probes[:1], TOP_K, two_stage=two_stage, candidates=candidates)  # warm-up, faiss
            start = time.perf_counter()
            index.search(student, probes, TOP_K, two_stage=two_stage, candidates=candidates)
            row[f"{mode}_qps"] = queries / (time.perf_counter() - start)
        results.append(row)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--candidates", type=int, default=1000)
    parser.add_argument("--teacher-pairs", type=int, default=64,
                        help="pairs the teacher is timed on (extrapolated to --candidates when fewer)")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs of the student and cosine rankings")
    parser.add_argument("--teacher-repeats", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--index-sizes", type=int, nargs="*", default=[5000, 100_000])
    parser.add_argument("--index-queries", type=int, default=32)
    parser.add_argument("--index-candidates", type=int, default=100, help="two-stage shortlist size")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    report, student = ranking(args)
    with torch.inference_mode():
        report["index"] = index_speed(student, args.index_sizes, args.index_queries, args.index_candidates)
    report["torch_threads"] = torch.get_num_threads()
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        write_whole(args.output, lambda out: out.write_text(text + "\n", encoding="utf-8"))


if __name__ == "__main__":
    main()
