"""Evaluation sets in the layouts of ``shared/data/README.md``, from a local file or a hub dataset id.

* graded pairs: ``{"sentence1", "sentence2", "score"}``
* labelled pairs: ``{"sentence1", "sentence2", "label"}``; which label is positive is the readers' one rule
  (``preprocess.readers.positive_label``: ``entailment``, 1 or true; ``neutral``, ``contradiction``, 0 or false
  negative; anything else refused)
* retrieval: a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``), or a hub dataset in
  MTEB's layout (subsets ``corpus``, ``queries`` and ``default`` for the qrels)

Unlike the training readers (``preprocess.readers``, whose record iteration and errors this reuses), every row
is kept as it is: an evaluation set is never de-duplicated or filtered. Bad input raises ``DataError`` naming
the file, the line and the field.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from preprocess.readers import DataError, beir_document_text, iter_records, positive_label, qrel_judgements

Records = Iterable[tuple[str, dict[str, Any]]]


@dataclass
class Pairs:
    """Sentence pairs with one gold value each: a float score, or a bool for the positive class."""

    first: list[str]
    second: list[str]
    gold: np.ndarray
    source: str


@dataclass
class RetrievalData:
    """``corpus[doc_id]`` and ``queries[query_id]`` texts; ``qrels[query_id][doc_id]`` graded judgements.

    ``queries`` holds the judged queries only, as BEIR and MTEB evaluate.
    """

    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    source: str


def load_graded_pairs(source: str, split: str = "test") -> Pairs:
    """STS-style pairs; ``gold`` is the ``score``."""
    return _load_pairs(source, split, "score", _as_score)


def load_labelled_pairs(source: str, split: str = "test") -> Pairs:
    """Pair-classification data; ``gold`` is True for ``entailment`` or 1. Both classes must occur."""
    pairs = _load_pairs(source, split, "label", _as_positive)
    if pairs.gold.all() or not pairs.gold.any():
        raise DataError(f"{source}: all {len(pairs.gold)} pairs are {'positive' if pairs.gold.all() else 'negative'}; "
                        "pair classification needs both classes")
    return pairs


def load_retrieval(source: str, split: str = "test") -> RetrievalData:
    """A BEIR folder (or an MTEB-layout hub dataset) with the qrels of ``split``."""
    if os.path.isdir(source):
        corpus_name = os.path.join(source, "corpus.jsonl")
        corpus = read_corpus(corpus_name)
        queries = read_queries(os.path.join(source, "queries.jsonl"))
        qrels_rows = _local(os.path.join(source, "qrels", f"{split}.tsv"))
    else:
        corpus_name = f"{source} (corpus)"
        corpus = _texts(iter_records(source, "corpus", "corpus"), beir_document_text)
        queries = _texts(iter_records(source, "queries", "queries"), _query_text)
        qrels_rows = iter_records(source, split, "default")
    if not corpus:
        raise DataError(f"{corpus_name}: the corpus has no documents")
    qrels: dict[str, dict[str, int]] = {}
    for where, query, doc, score in qrel_judgements(qrels_rows, queries, corpus, f"the queries of {source}",
                                                    corpus_name):
        qrels.setdefault(query, {})[doc] = _as_grade(score, where)
    if not qrels:
        raise DataError(f"{source}: the qrels of split {split!r} hold no judgements")
    return RetrievalData(corpus, {query: queries[query] for query in qrels}, qrels, source)


def read_corpus(path: str) -> dict[str, str]:
    """``{_id: passage}`` of a BEIR ``corpus.jsonl``; a passage is its title and text joined by a space."""
    return _texts(_local(path), beir_document_text)


def read_queries(path: str) -> dict[str, str]:
    """``{_id: text}`` of a BEIR ``queries.jsonl``."""
    return _texts(_local(path), _query_text)


# ---------------------------------------------------------------------------------------------- internals
def _load_pairs(source: str, split: str, gold_field: str, convert: Callable[[Any, str], Any]) -> Pairs:
    """Pairs of ``source``; a row whose gold field is present but null (no gold label: a hub ``ClassLabel`` of -1,
    as in SNLI) is left out, and the count is stated in ``Pairs.source``; a missing field is an error."""
    first, second, gold = [], [], []
    unlabelled = 0
    for where, row in iter_records(source, split):
        if gold_field in row and row[gold_field] is None:
            unlabelled += 1
            continue
        first.append(_text(row, "sentence1", where))
        second.append(_text(row, "sentence2", where))
        gold.append(convert(_field(row, gold_field, where), where))
    if len(first) < 2:
        raise DataError(f"{source}: needs at least 2 pairs, found {len(first)}")
    note = f" ({unlabelled} pairs without a gold {gold_field} left out)" if unlabelled else ""
    return Pairs(first, second, np.asarray(gold), source + note)


def _local(path: str) -> Records:
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file (a BEIR folder holds corpus.jsonl, queries.jsonl and "
                        "qrels/<split>.tsv)")
    return iter_records(path)


def _texts(records: Records, text_of: Callable[[dict[str, Any], str], str]) -> dict[str, str]:
    texts: dict[str, str] = {}
    for where, row in records:
        key = str(_field(row, "_id", where))
        if key in texts:
            raise DataError(f"{where}: duplicate _id {key!r}")
        texts[key] = text_of(row, where)
        if not texts[key]:
            raise DataError(f"{where}: empty text")
    return texts


def _query_text(row: dict[str, Any], where: str) -> str:
    return _text(row, "text", where)


def _field(row: dict[str, Any], name: str, where: str) -> Any:
    if row.get(name) is None:
        raise DataError(f"{where}: missing field {name!r}")
    return row[name]


def _text(row: dict[str, Any], name: str, where: str) -> str:
    value = _field(row, name, where)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: field {name!r} must be a non-empty string, got {value!r}")
    return value.strip()


def _as_score(value: Any, where: str) -> float:
    try:
        score = float(value)
    except (TypeError, ValueError):
        score = float("nan")
    if isinstance(value, bool) or not np.isfinite(score):
        raise DataError(f"{where}: field 'score' must be a number, got {value!r}")
    return score


def _as_positive(value: Any, where: str) -> bool:
    if isinstance(value, float):  # 1.0 is not a label
        raise DataError(f"{where}: field 'label' must be a label, not the number {value!r}")
    return positive_label(value, where)


def _as_grade(value: float, where: str) -> int:
    if value != int(value):
        raise DataError(f"{where}: field 'score' must be an integer grade, got {value!r}")
    return int(value)
