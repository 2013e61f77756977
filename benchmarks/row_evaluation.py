"""One benchmark row's evaluation: STS-B test, NLI on the SNLI test half and the SciFact slice, each result kept
in ``WORK/evaluations`` with the identity of the weights and settings it was measured with (``evaluated``), the
model loaded in a spawned child process so its memory is given back (``bench_teacher.py``'s rows)."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from common.stages import write_json
from evaluation.loaders import RetrievalData

TASKS: dict[str, tuple[str, str]] = {  # task -> (column title, metric key)
    "sts": ("STS-B Spearman", "spearman"),
    "nli": ("NLI AP", "average_precision"),
    "scifact": ("SciFact NDCG@10", "ndcg_at_10"),
}


def evaluation_file(work: Path, name: str, task: str) -> Path:
    """Where one row's result on one task is kept."""
    return work / "evaluations" / f"{name}.{task}.json"


def teacher_model(backbone: str, folder: Path) -> tuple[str, str | None]:
    """(model, adapter) that load an adapted teacher's folder: a LoRA adapter on ``backbone``, or a whole model
    (``teacher.adapt --method full``) on its own."""
    if (Path(folder) / "adapter_config.json").is_file():
        return backbone, str(folder)
    return str(folder), None


def isolated(function: Callable[..., None], *arguments: Any) -> None:
    """``function(*arguments)`` in a spawned process, so that a model's memory is given back when it ends; a failed
    child ends the benchmark with one line (the child's own message is printed above it)."""
    child = multiprocessing.get_context("spawn").Process(target=function, args=arguments)
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"error: {function.__name__} failed in its own process with exit status {child.exitcode} "
                         "(its message is above)")


@dataclass
class EvalData:
    """The evaluation sets, read before any model is loaded."""

    sts: Any
    nli: Any
    scifact: RetrievalData


def slice_retrieval(data: RetrievalData, queries: int, documents: int, seed: int) -> RetrievalData:
    """``queries`` judged queries drawn with ``seed``, over every document judged for them plus seeded random
    others, ``documents`` in all (more when the judged ones alone are more)."""
    rng = random.Random(seed)
    query_ids = sorted(rng.sample(sorted(data.queries), min(queries, len(data.queries))))
    judged = sorted({doc for query in query_ids for doc in data.qrels[query]})
    others = sorted(set(data.corpus) - set(judged))
    keep = set(judged) | set(rng.sample(others, max(0, min(len(others), documents - len(judged)))))
    corpus = {doc: text for doc, text in data.corpus.items() if doc in keep}
    return RetrievalData(corpus, {q: data.queries[q] for q in query_ids}, {q: data.qrels[q] for q in query_ids},
                         f"{data.source} ({len(query_ids)} of {len(data.queries)} queries, {len(corpus)} of "
                         f"{len(data.corpus)} documents: all judged ones + seeded others, seed {seed})")


def load_eval_data(args: argparse.Namespace, snli: Path) -> EvalData:
    from evaluation.loaders import load_graded_pairs, load_labelled_pairs, load_retrieval

    en = Path(args.data) / "en"
    return EvalData(load_graded_pairs(str(en / "stsb" / "test.jsonl")),
                    load_labelled_pairs(str(snli / "test.jsonl")),
                    slice_retrieval(load_retrieval(str(en / "scifact"), "test"), args.scifact_queries,
                                    args.scifact_docs, args.seed))


def load_row_scorer(kind: str, path: str, adapter: str | None, args: argparse.Namespace):
    from evaluation.models import load_scorer

    if kind == "teacher":
        return load_scorer(path, "teacher", teacher_adapter=adapter, rerank_depth=args.rerank_depth, batch_size=32,
                           max_passage_tokens=args.teacher_passage_tokens)
    if kind == "bm25":
        from evaluation.scorers import BM25FirstStage

        return BM25FirstStage("en")
    return load_scorer(path, kind)


def evaluation_identity(kind: str, path: str, adapter: str | None, tasks: Sequence[str], args: argparse.Namespace
                        ) -> dict[str, dict[str, Any]]:
    """{task: what its result depends on}: the row's kind, the bytes of its model and adapter (``saved_digest``;
    a name that is not on disk, such as a hub id, stands for itself) and the settings that task reads."""
    from common.fingerprints import saved_digest

    def digest(location: str | None) -> str | None:
        return saved_digest(location) if location and Path(location).exists() else location or None

    model = {"kind": kind, "model": digest(path), "adapter": digest(adapter)}
    if kind == "teacher":
        model["teacher_passage_tokens"] = args.teacher_passage_tokens
    settings = {"sts": {}, "nli": {"seed": args.seed},
                "scifact": {"seed": args.seed, "queries": args.scifact_queries, "documents": args.scifact_docs,
                            **({"rerank_depth": args.rerank_depth} if kind == "teacher" else {})}}
    return {task: {**model, **settings[task]} for task in tasks}


def evaluated(work: Path, name: str, kind: str, path: str, adapter: str | None, tasks: Sequence[str],
              args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """{task: result} of one row. A task runs (in a child process) unless ``WORK/evaluations`` holds its result
    for the same ``evaluation_identity``: one recorded for other weights or settings is measured again, and says so."""
    identities = evaluation_identity(kind, path, adapter, tasks, args)
    pending = {}
    for task, identity in identities.items():
        file = evaluation_file(work, name, task)
        if file.exists() and json.loads(file.read_text()).get("identity") == identity:
            continue
        if file.exists():
            print(f"[evaluate {name} / {task}] the result on record is of other weights or settings: "
                  "measured again", flush=True)
        pending[task] = identity
    if pending:
        isolated(evaluate_tasks, work, name, kind, path, adapter, pending, args)
    return {task: json.loads(evaluation_file(work, name, task).read_text()) for task in tasks}


def evaluate_tasks(work: Path, name: str, kind: str, path: str, adapter: str | None,
                   identities: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    """(Child process.) Evaluate one row on each task of ``identities``; each result (with the STS-B scores and
    its identity) is written when known."""
    from evaluation import tasks as evaluation_tasks
    from common import metrics

    data = load_eval_data(args, work / "snli")
    scorer = load_row_scorer(kind, path, adapter, args)
    for task, identity in identities.items():
        start = time.perf_counter()
        if task == "sts":
            scores = scorer.score_pairs(data.sts.first, data.sts.second, "symmetric")
            result = {"spearman": metrics.spearman(scores, data.sts.gold), "pairs": len(scores),
                      "scores": [float(value) for value in scores]}
        elif task == "nli":
            result = evaluation_tasks.evaluate_pair_classification(scorer, data.nli)
        elif kind == "bm25":
            result = metrics.retrieval(scorer.retrieve(data.scifact.queries, data.scifact.corpus, 100),
                                       data.scifact.qrels)
        else:
            result = evaluation_tasks.evaluate_retrieval(scorer, data.scifact)
        result["seconds"] = round(time.perf_counter() - start, 1)
        result["identity"] = identity
        write_json(evaluation_file(work, name, task), result)
        print(f"[evaluate {name} / {task}] {TASKS[task][1]} {result[TASKS[task][1]]:.4f} "
              f"({result['seconds']:.0f} s)", flush=True)
