"""How good a teacher is as a cross-encoder, on dev data the adaptation never trained on.

* pairs with graded targets (``readers.read_pairs`` of graded pairs): Spearman of p(yes) with the target;
* pairs with 0/1 targets (labelled pairs): average precision of p(yes) for label 1;
* mined examples (query, positive, K negatives): NDCG@10 of re-ranking each query's positives and negatives
  by p(yes) (a cheap stand-in for full-corpus retrieval, which a cross-encoder cannot afford).

Command line::

    python -m teacher.evaluate --teacher MODEL_OR_GGUF [--adapter DIR]
        [--dev-pairs FILE [--dev-limit N]] [--dev-mined DIR [--dev-queries N]]

prints the metrics as JSON. Dev pairs the reader skips (an empty text, no gold, identical texts, a repeated pair)
are not evaluated: they are counted in one line on stderr and under ``skipped`` in the JSON
(``preprocess.read_report.announce_skips``). A row that cannot be read, or a ``--teacher`` that does not load, ends the
command with exit status 2 and one line.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from collections.abc import Sequence

import torch
from datasets import Dataset
from scipy.stats import spearmanr

from common import metrics
from teacher.model import YesNoTeacher, add_teacher_cost_arguments


def average_precision(scores: Sequence[float], labels: Sequence[float]) -> float:
    """Average precision of the pairs whose target is >= 0.5 (``common.metrics``); NaN with one class."""
    try:
        return metrics.pair_classification(scores, [label >= 0.5 for label in labels])["average_precision"]
    except metrics.MetricError:
        return float("nan")


def ndcg_at_10(scores: Sequence[float], relevant: Sequence[bool]) -> float:
    """Binary-relevance NDCG@10 of one ranked candidate list (``common.metrics``); NaN without a positive."""
    qrels = {"query": {str(index): 1 for index, is_relevant in enumerate(relevant) if is_relevant}}
    if not qrels["query"]:
        return float("nan")
    run = {"query": {str(index): float(score) for index, score in enumerate(scores)}}
    return metrics.retrieval(run, qrels)["ndcg_at_10"]


def _probabilities(teacher: YesNoTeacher, queries: Sequence[str], passages: Sequence[str], tasks: Sequence[str],
                   languages: Sequence[str], batch_size: int) -> list[float]:
    """p(yes) per pair, one teacher call per (task, language)."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for index, key in enumerate(zip(tasks, languages)):
        groups[key].append(index)
    result = torch.empty(len(queries))
    for (task, language), indices in groups.items():
        result[indices] = teacher.probability([queries[i] for i in indices], [passages[i] for i in indices], task,
                                              language=language, batch_size=batch_size)
    return result.tolist()


@torch.no_grad()
def evaluate_pairs(teacher: YesNoTeacher, pairs: Dataset, batch_size: int = 16) -> dict[str, float]:
    """``{"spearman": ...}`` for graded targets, ``{"average_precision": ...}`` for 0/1 targets."""
    probabilities = _probabilities(teacher, pairs["query"], pairs["passage"], pairs["task"], pairs["language"],
                                   batch_size)
    targets = pairs["target"]
    if set(targets) <= {0.0, 1.0}:
        return {"average_precision": average_precision(probabilities, targets), "pairs": len(targets)}
    return {"spearman": float(spearmanr(probabilities, targets).statistic), "pairs": len(targets)}


@torch.no_grad()
def evaluate_reranking(teacher: YesNoTeacher, mined: Dataset, batch_size: int = 16) -> dict[str, float]:
    """Mean NDCG@10 over queries of re-ranking {positives of the query} + {its mined negatives} by p(yes)."""
    candidates: dict[tuple[str, str, str], dict[str, bool]] = defaultdict(dict)
    for row in mined:
        texts = candidates[(row["query"], row["task"], row["language"])]
        texts[row["positive"]] = True
        for negative in row["negatives"]:
            texts.setdefault(negative, False)
    queries, passages, tasks, languages, relevant, owners = [], [], [], [], [], []
    for owner, ((query, task, language), texts) in enumerate(candidates.items()):
        for passage, is_positive in texts.items():
            queries.append(query), passages.append(passage), tasks.append(task), languages.append(language)
            relevant.append(is_positive), owners.append(owner)
    probabilities = _probabilities(teacher, queries, passages, tasks, languages, batch_size)
    per_query: dict[int, list[int]] = defaultdict(list)
    for index, owner in enumerate(owners):
        per_query[owner].append(index)
    values = [ndcg_at_10([probabilities[i] for i in indices], [relevant[i] for i in indices])
              for indices in per_query.values()]
    return {"ndcg@10": sum(values) / len(values), "queries": len(values), "pairs": len(queries)}


def evaluate_teacher(teacher: YesNoTeacher, dev_pairs: Dataset | None = None, dev_mined: Dataset | None = None,
                     batch_size: int = 16) -> dict[str, dict[str, float]]:
    """The metrics of every dev set given, keyed ``pairs`` / ``reranking``."""
    was_training = teacher.model.training
    teacher.model.eval()
    metrics = {}
    if dev_pairs is not None:
        metrics["pairs"] = evaluate_pairs(teacher, dev_pairs, batch_size)
    if dev_mined is not None:
        metrics["reranking"] = evaluate_reranking(teacher, dev_mined, batch_size)
    teacher.model.train(was_training)
    return metrics


def sample_queries(mined: Dataset, count: int | None, seed: int = 0) -> Dataset:
    """The rows of ``count`` distinct queries of ``mined``, drawn with ``seed`` (all rows when None; a count below
    1 is a ``DataError``)."""
    from preprocess.readers import check_limit

    check_limit(count, "--dev-queries")
    queries = list(dict.fromkeys(mined["query"]))
    if count is None or count >= len(queries):
        return mined
    keep = set(random.Random(seed).sample(queries, count))
    return mined.filter(lambda row: row["query"] in keep)


def add_dev_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dev-pairs", help="graded or labelled pairs file (Spearman or average precision)")
    parser.add_argument("--dev-limit", type=int, help="evaluate this many dev pairs, drawn with --seed")
    parser.add_argument("--dev-mined", help="mined dataset of dev queries (re-ranking NDCG@10)")
    parser.add_argument("--dev-queries", type=int, help="re-rank this many dev queries, drawn with --seed")
    parser.add_argument("--dev-task", default="symmetric", help="task of the dev pairs")


def load_dev(args: argparse.Namespace) -> tuple[Dataset | None, Dataset | None, dict[str, dict]]:
    """The dev pairs and the mined dev rows of ``add_dev_arguments`` (None where not given), and the rows skipped in
    the dev pairs: ``{FILE: announce_skips(report)}`` (empty without dev pairs)."""
    from datasets import load_from_disk

    from preprocess.read_report import announce_skips
    from preprocess.readers import check_limit, read_pairs

    check_limit(args.dev_limit, "--dev-limit")
    pairs, skipped = None, {}
    if args.dev_pairs:
        pairs, report = read_pairs(args.dev_pairs, task=args.dev_task, limit=args.dev_limit, seed=args.seed)
        skipped[args.dev_pairs] = announce_skips(report)
    mined = sample_queries(load_from_disk(args.dev_mined), args.dev_queries, args.seed) if args.dev_mined else None
    return pairs, mined, skipped


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Evaluate a yes/no teacher on dev data. Dev pairs the reader skips "
                                     "(empty text, no gold, identical texts, repeated pair) are counted in one line on "
                                     "stderr and under 'skipped' in the printed JSON.")
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--adapter")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-query-tokens", type=int, help="default: the adapter's (teacher_settings.json), else 128")
    parser.add_argument("--max-passage-tokens", type=int, help="default: the adapter's, else 384")
    parser.add_argument("--seed", type=int, default=0)
    add_dev_arguments(parser)
    add_teacher_cost_arguments(parser)
    args = parser.parse_args(argv)
    dev_pairs, dev_mined, skipped = load_dev(args)  # read (and refused) before the model loads
    teacher = YesNoTeacher.from_pretrained(args.teacher, adapter=args.adapter, max_query_tokens=args.max_query_tokens,
                                           max_passage_tokens=args.max_passage_tokens, dtype=args.dtype,
                                           prompt_preset=args.prompt_preset)
    metrics = evaluate_teacher(teacher, dev_pairs, dev_mined, batch_size=args.batch_size)
    print(json.dumps({**metrics, "compute": teacher.compute.to_dict(), "skipped": skipped}, indent=2))


if __name__ == "__main__":
    from common.cli_errors import ModelError, run_command
    from preprocess.readers import DataError

    run_command(main, DataError, ModelError, FileNotFoundError)
