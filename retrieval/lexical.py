"""The BM25 side of a search index: the documents' texts, saved beside the dense index with a digest of its ids,
and BM25 (``preprocess.mining.BM25Retriever``) over them, rebuilt from the texts when first asked."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Sequence


def ids_digest(ids: Sequence[str]) -> str:
    """sha256 of the ids in order: which documents, in which order, a BM25 side was written for."""
    return hashlib.sha256(json.dumps(list(ids), ensure_ascii=False).encode()).hexdigest()


def write_lexical(path: str, ids: Sequence[str], texts: Sequence[str], language: str) -> None:
    """The texts, their language and ``ids_digest(ids)`` as JSON at ``path``."""
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"language": language, "ids_digest": ids_digest(ids), "texts": list(texts)}, handle,
                  ensure_ascii=False)


def read_lexical(path: str, ids: Sequence[str]) -> tuple[list[str], str]:
    """The texts and language at ``path``; ``ValueError`` naming it when damaged or written for other documents."""
    try:
        with open(path, encoding="utf-8") as handle:
            lexical = json.load(handle)
        texts, language, digest = lexical["texts"], lexical["language"], lexical["ids_digest"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: damaged BM25 side of the index ({error}); rebuild the index") from None
    if digest != ids_digest(ids) or not isinstance(texts, list) or len(texts) != len(ids):
        raise ValueError(f"{path}: the BM25 side does not match the dense index (other documents); rebuild the "
                         "index")
    return texts, language


def bm25(texts: Sequence[str], language: str) -> Any:
    """A ``preprocess.mining.BM25Retriever`` over ``texts`` (``search_scored`` gives ``(row, score)`` lists)."""
    from preprocess.mining import BM25Retriever

    return BM25Retriever(list(texts), language)
