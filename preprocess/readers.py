"""Reading training data into the example schema (``common.schema.EXAMPLE_FEATURES``: query, positive, task, language).

Sources, by ``layout`` (``auto`` picks from the columns or folder):

* ``graded``   JSONL/CSV/TSV or hub rows ``{sentence1, sentence2, score}``: positive where ``score >= threshold``;
* ``labelled`` rows ``{sentence1, sentence2, label}``: positive where the label is ``entailment`` / ``1`` / ``true``;
* ``examples`` rows ``{query, positive[, task][, language]}``, already in the schema;
* ``beir``     a folder ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``: positive where qrel score >= 1;
* ``unlabelled`` rows ``{sentence1, sentence2}`` without gold (``read_pairs`` only, never picked by ``auto``): pairs
  a teacher labels alone, such as ``preprocess.silver_pairs`` writes.

Besides the examples, every reader returns the **corpus** hard negatives are mined from: both sides of every
valid pair, or the BEIR corpus. ``read_pairs`` gives the same rows as (query, passage, target) with a target
probability in [0, 1] (score / max score, or label 1 / 0; NaN for an unlabelled pair) for teacher adaptation and
evaluation.

Bad input: a missing column, an unreadable row or score, a duplicate BEIR id or a qrel naming an unknown id
raise an error naming the file, row and column. Rows that cannot be used but are legal data are skipped and
counted by reason in a ``preprocess.read_report.ReadReport`` (printed at the end): empty text, no gold label (a
hub class label of -1), a pair identical on both sides, a repeated pair, a BEIR query without any positive, a qrel
to an empty document. A command that takes what is left says so with ``read_report.announce_skips``: one line on
stderr per source, and a record for its output's metadata. A ``limit`` below 1 is a ``DataError``
(``check_limit``).

Command line::

    python -m preprocess.readers SOURCE --output DIR [--layout auto] [--split train] [--threshold 4.0]
        [--task symmetric|asymmetric] [--language auto|en|zh] [--limit N] [--seed 0]

writes ``DIR/examples`` and ``DIR/corpus`` (``datasets.save_to_disk``; load both with ``load_read``).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import random
from collections.abc import Container, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from datasets import ClassLabel, Dataset, Features, Value, load_dataset, load_from_disk

from common.schema import EXAMPLE_FEATURES, TASKS
from common.stages import write_whole
from preprocess.read_report import ReadReport

logger = logging.getLogger(__name__)

LAYOUTS = ("auto", "graded", "labelled", "examples", "beir", "unlabelled")
POSITIVE_LABELS = ("entailment", "1", "true")  # the one rule for labelled pairs: ``positive_label``
NEGATIVE_LABELS = ("neutral", "contradiction", "0", "false")
PAIR_FEATURES = Features({"query": Value("string"), "passage": Value("string"), "target": Value("float32"),
                          "task": Value("string"), "language": Value("string")})
CORPUS_FEATURES = Features({"text": Value("string")})
Row = TypeVar("Row")


class DataError(ValueError):
    """Input that cannot be read as asked; the message names the file, row and column."""


def check_limit(limit: int | None, name: str = "--limit") -> None:
    """A ``DataError`` unless ``limit`` is None (every row) or at least 1."""
    if limit is not None and limit < 1:
        raise DataError(f"{name} {limit}: must be at least 1 (leave it out to keep every row)")


def sample_rows(rows: list[Row], limit: int | None, seed: int) -> list[Row]:
    """``limit`` of ``rows`` drawn with ``random.Random(seed)``, in their input order (all of them when ``limit`` is
    None or not below ``len(rows)``); ``check_limit`` first."""
    check_limit(limit)
    if limit is None or limit >= len(rows):
        return rows
    return [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), limit))]


@dataclass
class ReadResult:
    examples: Dataset
    corpus: list[str]
    report: ReadReport


# ---------------------------------------------------------------------- records
def iter_records(source: str, split: str = "train", subset: str | None = None) -> Iterator[tuple[str, dict]]:
    """``(location, row)`` pairs of a JSONL / JSON / CSV / TSV file, or of a hub dataset's split.

    A hub dataset's ``ClassLabel`` columns come as their names (``entailment``, not 0); a value outside the
    classes (SNLI's -1, "no gold label") comes as None.
    """
    path = Path(source)
    if path.is_file():
        yield from _file_records(path)
        return
    if path.exists() or source.startswith((".", "/")):
        raise DataError(f"{source}: not a readable file (folders are read with layout 'beir' or as split files)")
    try:
        dataset = load_dataset(source, subset, split=split)
    except Exception as error:  # the hub's own errors are long and varied; keep the cause attached
        raise DataError(f"{source}: not a local file and not loadable as a hub dataset ({error})") from error
    class_labels = {name: feature for name, feature in dataset.features.items() if isinstance(feature, ClassLabel)}
    for index, row in enumerate(dataset):
        for name, feature in class_labels.items():  # hub NLI sets store labels as ints: SNLI's 0 is entailment
            value = row[name]
            row[name] = feature.int2str(value) if value is not None and 0 <= value < feature.num_classes else None
        yield f"{source}[{split}] row {index}", row


def _file_records(path: Path) -> Iterator[tuple[str, dict]]:
    suffix = path.suffix.lower()
    with open(path, encoding="utf-8", newline="") as handle:
        if suffix in (".csv", ".tsv"):
            reader = csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ",")
            for line, row in enumerate(reader, start=2):
                yield f"{path}:{line}", row
        elif suffix == ".json":
            rows = json.load(handle)
            if not isinstance(rows, list):
                raise DataError(f"{path}: a .json file must hold a list of rows")
            for index, row in enumerate(rows):
                yield f"{path}[{index}]", _as_row(row, f"{path}[{index}]")
        else:
            for line, text in enumerate(handle, start=1):
                if text.strip():
                    yield f"{path}:{line}", _as_row(_parse_json(text, f"{path}:{line}"), f"{path}:{line}")


def _parse_json(text: str, location: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{location}: not valid JSON ({error.msg})") from None


def _as_row(value, location: str) -> dict:
    if not isinstance(value, dict):
        raise DataError(f"{location}: expected an object with named columns, got {type(value).__name__}")
    return value


def _column(row: dict, name: str, location: str):
    if name not in row:
        raise DataError(f"{location}: missing column {name!r} (columns: {sorted(row)})")
    return row[name]


def _text(row: dict, name: str, location: str) -> str:
    value = _column(row, name, location)
    if value is not None and not isinstance(value, str):
        raise DataError(f"{location}: column {name!r} must be text, got {type(value).__name__}")
    return (value or "").strip()


# ---------------------------------------------------------------------- pairs
def detect_layout(source: str, first_row: dict | None) -> str:
    if Path(source).is_dir():
        return "beir"
    columns = set(first_row or ())
    if {"query", "positive"} <= columns:
        return "examples"
    if {"sentence1", "sentence2"} <= columns:
        return "graded" if "score" in columns else "labelled" if "label" in columns else "unknown"
    return "unknown"


def _pair_values(records: Iterator[tuple[str, dict]], layout: str, report: ReadReport
                 ) -> Iterator[tuple[str, str, str, object, dict]]:
    """``(location, first, second, value, row)`` of usable pairs; value is the score, the label or None."""
    first_name, second_name, value_name = {
        "graded": ("sentence1", "sentence2", "score"),
        "labelled": ("sentence1", "sentence2", "label"),
        "examples": ("query", "positive", None),
        "unlabelled": ("sentence1", "sentence2", None),
    }[layout]
    seen: set[tuple[str, str]] = set()
    for location, row in records:
        report.rows += 1
        first, second = _text(row, first_name, location), _text(row, second_name, location)
        value = _column(row, value_name, location) if value_name else None
        if not first or not second:
            report.skip("empty text", location)
        elif value_name and value is None:
            report.skip(f"no gold {value_name}", location)
        elif first == second:
            report.skip("identical query and passage", location)
        elif (first, second) in seen:
            report.skip("repeated pair", location)
        else:
            seen.add((first, second))
            yield location, first, second, value, row


def _score(value, location: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(f"{location}: column 'score' must be a number, got {value!r}") from None


def positive_label(value: Any, location: str, positive_labels: Sequence[str] = POSITIVE_LABELS) -> bool:
    """Whether a pair's ``label`` is the positive class, by one rule for every reader: ``POSITIVE_LABELS`` are
    positive and ``NEGATIVE_LABELS`` negative (case and spaces aside), anything else a ``DataError`` naming
    ``location``; with other ``positive_labels``, those are positive and every other label negative."""
    name = str(value).strip().lower()
    if name in positive_labels:
        return True
    if tuple(positive_labels) != POSITIVE_LABELS or name in NEGATIVE_LABELS:
        return False
    raise DataError(f"{location}: field 'label' must be one of {', '.join(POSITIVE_LABELS + NEGATIVE_LABELS)}, "
                    f"got {value!r}")


def _row_task_language(row: dict, task: str, language: str, location: str) -> tuple[str, str]:
    row_task = row.get("task") or task
    if row_task not in TASKS:
        raise DataError(f"{location}: column 'task' must be one of {TASKS}, got {row_task!r}")
    return row_task, row.get("language") or language


# ---------------------------------------------------------------------- public readers
def read_examples(
    source: str,
    *,
    layout: str = "auto",
    split: str = "train",
    subset: str | None = None,
    threshold: float = 4.0,
    positive_labels: Sequence[str] = POSITIVE_LABELS,
    min_relevance: int = 1,
    task: str | None = None,
    language: str = "auto",
    limit: int | None = None,
    seed: int = 0,
) -> ReadResult:
    """Training examples (positive pairs) and the mining corpus of ``source``; see the module docstring.

    ``task`` defaults to symmetric for pairs and asymmetric for BEIR; ``language="auto"`` picks zh when most
    texts hold CJK characters. ``limit`` keeps that many examples, drawn with ``seed`` (the corpus stays whole).
    """
    check_limit(limit)
    report = ReadReport(source)
    layout = _resolve_layout(source, layout, split, subset)
    if layout == "unlabelled":
        raise DataError(f"{source}: unlabelled pairs hold no positives to train on; label them first "
                        "(python -m teacher.label_pairs --unlabelled)")
    if layout == "beir":
        rows, corpus = _beir_examples(Path(source), split, min_relevance, report)
        task = task or "asymmetric"
    else:
        rows, corpus = [], {}
        for location, first, second, value, row in _pair_values(iter_records(source, split, subset), layout, report):
            corpus[first] = corpus[second] = None
            positive = (layout == "examples" or (layout == "graded" and _score(value, location) >= threshold)
                        or (layout == "labelled" and positive_label(value, location, positive_labels)))
            if positive:
                rows.append((first, second, row, location))
            else:
                report.not_positive += 1
        corpus = list(corpus)
        task = task or "symmetric"
    if language == "auto":
        language = detect_language(corpus)
    if task not in TASKS:
        raise DataError(f"task must be one of {TASKS}, got {task!r}")
    examples = []
    for query, positive, row, location in rows:
        row_task, row_language = _row_task_language(row, task, language, location)
        examples.append({"query": query, "positive": positive, "task": row_task, "language": row_language})
    if not examples:
        raise DataError(f"{source}: no positive pairs found ({report.rows} rows; layout {layout!r}, "
                        f"threshold {threshold}, positive labels {list(positive_labels)})")
    examples = sample_rows(examples, limit, seed)
    report.examples = len(examples)
    return ReadResult(Dataset.from_list(examples, features=EXAMPLE_FEATURES), corpus, report)


def read_pairs(
    source: str,
    *,
    layout: str = "auto",
    split: str = "train",
    subset: str | None = None,
    max_score: float = 5.0,
    positive_labels: Sequence[str] = POSITIVE_LABELS,
    task: str = "symmetric",
    language: str = "auto",
    limit: int | None = None,
    seed: int = 0,
) -> tuple[Dataset, ReadReport]:
    """Graded, labelled or unlabelled pairs as (query, passage, target, task, language), target = score / max_score,
    1 / 0, or NaN (no gold)."""
    check_limit(limit)
    report = ReadReport(source)
    layout = _resolve_layout(source, layout, split, subset)
    if layout not in ("graded", "labelled", "unlabelled"):
        raise DataError(f"{source}: read_pairs needs graded, labelled or unlabelled pairs, found layout {layout!r}")
    rows = []
    for location, first, second, value, row in _pair_values(iter_records(source, split, subset), layout, report):
        if layout == "graded":
            target = _score(value, location) / max_score
            if not 0.0 <= target <= 1.0:
                raise DataError(f"{location}: score {value!r} is outside [0, {max_score}] (set max_score)")
        elif layout == "labelled":
            target = float(positive_label(value, location, positive_labels))
        else:
            target = math.nan
        row_task, row_language = _row_task_language(row, task, language, location)
        rows.append({"query": first, "passage": second, "target": target, "task": row_task,
                     "language": row_language})
    if not rows:
        raise DataError(f"{source}: no usable pairs ({report.rows} rows)")
    if language == "auto":
        detected = detect_language([row["query"] for row in rows])
        for row in rows:
            row["language"] = detected if row["language"] == "auto" else row["language"]
    rows = sample_rows(rows, limit, seed)
    report.examples = len(rows)
    return Dataset.from_list(rows, features=PAIR_FEATURES), report


def _resolve_layout(source: str, layout: str, split: str, subset: str | None) -> str:
    if layout not in LAYOUTS:
        raise DataError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout != "auto":
        return layout
    first = None if Path(source).is_dir() else next(iter_records(source, split, subset), (None, None))[1]
    found = detect_layout(source, first)
    if found == "unknown":
        raise DataError(f"{source}: cannot tell the layout from columns {sorted(first or ())}; expected "
                        "sentence1/sentence2/score, sentence1/sentence2/label, query/positive or a BEIR folder")
    return found


# ---------------------------------------------------------------------- BEIR
def beir_document_text(row: dict, location: str) -> str:
    """A BEIR document as one passage: title and text joined by a space."""
    title = _text(row, "title", location) if "title" in row else ""
    return " ".join(part for part in (title, _text(row, "text", location)) if part)


def _beir_table(path: Path, text_of, report: ReadReport, kind: str) -> dict[str, str]:
    """``_id -> text`` of a BEIR JSONL file; duplicate ids are errors, empty texts counted skips."""
    if not path.is_file():
        raise DataError(f"{path}: missing (a BEIR folder holds corpus.jsonl, queries.jsonl and qrels/<split>.tsv)")
    table: dict[str, str] = {}
    for location, row in _file_records(path):
        identifier = str(_column(row, "_id", location))
        if identifier in table:
            raise DataError(f"{location}: duplicate _id {identifier!r}")
        text = text_of(row, location)
        table[identifier] = text
        if not text:
            report.skip(f"empty {kind}", location)
    return table


def qrel_judgements(records: Iterable[tuple[str, dict]], queries: Container[str], documents: Container[str],
                    queries_name: str, corpus_name: str) -> Iterator[tuple[str, str, str, float]]:
    """``(location, query_id, doc_id, score)`` of every BEIR qrels row; a row whose query-id or corpus-id is not
    among ``queries`` / ``documents`` (named ``queries_name`` / ``corpus_name`` in the error), a missing column
    or a non-numeric score is a ``DataError``."""
    for location, row in records:
        query_id, doc_id = str(_column(row, "query-id", location)), str(_column(row, "corpus-id", location))
        score = _score(_column(row, "score", location), location)
        if query_id not in queries:
            raise DataError(f"{location}: query-id {query_id!r} is not in {queries_name}")
        if doc_id not in documents:
            raise DataError(f"{location}: corpus-id {doc_id!r} is not in {corpus_name}")
        yield location, query_id, doc_id, score


def _beir_examples(folder: Path, split: str, min_relevance: int, report: ReadReport
                   ) -> tuple[list[tuple[str, str, dict, str]], list[str]]:
    documents = _beir_table(folder / "corpus.jsonl", beir_document_text, report, "document")
    queries = _beir_table(folder / "queries.jsonl", lambda row, at: _text(row, "text", at), report, "query")
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        available = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
        raise DataError(f"{qrels_path}: missing; qrels splits here: {available}")
    judged: dict[str, list[str]] = {}
    seen: set[tuple[str, str]] = set()
    rows = []
    for location, query_id, doc_id, score in qrel_judgements(_file_records(qrels_path), queries, documents,
                                                             str(folder / "queries.jsonl"),
                                                             str(folder / "corpus.jsonl")):
        report.rows += 1
        judged.setdefault(query_id, [])
        if score < min_relevance:
            continue
        if not queries[query_id]:
            continue  # counted once as an empty query when read
        if not documents[doc_id]:
            report.skip("qrel to an empty document", location)
            continue
        if (query_id, doc_id) in seen:
            report.skip("repeated pair", location)
            continue
        seen.add((query_id, doc_id))
        judged[query_id].append(doc_id)
        rows.append((queries[query_id], documents[doc_id], {}, location))
    for query_id, positives in judged.items():
        if not positives and queries[query_id]:
            report.skip("query without any positive", f"{qrels_path} query-id {query_id}")
    return rows, list(dict.fromkeys(text for text in documents.values() if text))


# ---------------------------------------------------------------------- helpers
def detect_language(texts: Sequence[str], sample: int = 200) -> str:
    """``zh`` when most of the first ``sample`` texts hold a CJK character, else ``en``."""
    picked = texts[:sample]
    cjk = sum(any("\u4e00" <= char <= "\u9fff" for char in text) for text in picked)
    return "zh" if picked and cjk * 2 > len(picked) else "en"


def save_read(result: ReadResult, output: str | Path) -> None:
    """``output/examples`` and ``output/corpus`` as datasets on disk; ``output`` appears whole or not at all
    (``common.stages.write_whole``), replacing an older one."""

    def write(folder: Path) -> None:
        result.examples.save_to_disk(str(folder / "examples"))
        Dataset.from_dict({"text": result.corpus}, features=CORPUS_FEATURES).save_to_disk(str(folder / "corpus"))

    write_whole(Path(output), write)


def load_read(folder: str | Path) -> tuple[Dataset, list[str]]:
    """The examples and the corpus texts that ``save_read`` wrote."""
    folder = Path(folder)
    for part in ("examples", "corpus"):
        if not (folder / part).is_dir():
            raise FileNotFoundError(f"{folder / part}: missing; write it with python -m preprocess.readers")
    return load_from_disk(str(folder / "examples")), load_from_disk(str(folder / "corpus"))["text"]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Read training examples and their mining corpus.")
    parser.add_argument("source", help="JSONL/JSON/CSV/TSV file, BEIR folder or hub dataset id")
    parser.add_argument("--output", required=True, help="folder for examples/ and corpus/")
    parser.add_argument("--layout", default="auto", choices=LAYOUTS)
    parser.add_argument("--split", default="train", help="hub split or BEIR qrels split")
    parser.add_argument("--subset", help="hub dataset configuration")
    parser.add_argument("--threshold", type=float, default=4.0, help="graded pairs: positive when score >= this")
    parser.add_argument("--positive-labels", nargs="+", default=list(POSITIVE_LABELS))
    parser.add_argument("--min-relevance", type=int, default=1, help="BEIR: positive when qrel score >= this")
    parser.add_argument("--task", choices=TASKS)
    parser.add_argument("--language", default="auto")
    parser.add_argument("--limit", type=int, help="keep this many examples, drawn with --seed")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = read_examples(args.source, layout=args.layout, split=args.split, subset=args.subset,
                           threshold=args.threshold, positive_labels=[l.lower() for l in args.positive_labels],
                           min_relevance=args.min_relevance, task=args.task, language=args.language,
                           limit=args.limit, seed=args.seed)
    save_read(result, args.output)
    logger.info("%s\n%d examples, %d corpus texts -> %s", result.report.summary(), len(result.examples),
                len(result.corpus), os.path.abspath(args.output))


if __name__ == "__main__":
    from common.cli_errors import run_command

    run_command(main, DataError, FileNotFoundError)
