"""One scoring interface over every model the project compares.

* :class:`D2LLMScorer`: a D2LLM student; scores are IEM logits (``similarity`` / ``similarity_pairwise``), the
  corpus's passage projections are computed once for retrieval.
* :class:`CosineScorer`: any bi-encoder with a sentence-transformers style ``encode`` (all-MiniLM-L6-v2, a pooled
  LLM bi-encoder); scores are cosines.
* :class:`CrossEncoderScorer`: a yes/no LLM cross-encoder (``teacher.model.YesNoTeacher`` or anything with its
  ``score``); scores are the yes/no log-odds ``l_yes - l_no``, a monotone function of the teacher probability, so
  every (rank-based) metric equals the probability's. It cannot score a whole corpus: retrieval reranks the
  ``depth`` best documents of a first stage (BM25 by default, ``BM25FirstStage``).

All of them answer ``score_pairs(first, second, task) -> [N]`` and
``retrieve(queries, corpus, top_k, task) -> {query_id: {doc_id: score}}``.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import Any, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from evaluation import ranking

Run = dict[str, dict[str, float]]


class Retriever(Protocol):
    def retrieve(self, queries: dict[str, str], corpus: dict[str, str], top_k: int, task: str = "asymmetric") -> Run:
        """The ``top_k`` best documents of each query with their scores."""


class Scorer(ABC):
    """Scores text pairs and ranks a corpus."""

    @abstractmethod
    def score_pairs(self, first: Sequence[str], second: Sequence[str], task: str) -> np.ndarray:
        """``[N]`` scores of the pairs ``(first[i], second[i])``; higher means more related."""

    @abstractmethod
    def retrieve(self, queries: dict[str, str], corpus: dict[str, str], top_k: int, task: str = "asymmetric") -> Run:
        """The ``top_k`` best documents of each query with their scores."""


class EmbeddingScorer(Scorer):
    """A bi-encoder: texts are embedded independently, so a corpus is embedded once and every query is exact
    against all of it."""

    def __init__(self, batch_size: int = 32) -> None:
        self.batch_size = batch_size

    @abstractmethod
    def embed(self, texts: Sequence[str], side: str, task: str) -> torch.Tensor:
        """``[N, D]`` embeddings; ``side`` is ``"query"`` or ``"passage"``."""

    @abstractmethod
    def pairwise(self, queries: torch.Tensor, passages: torch.Tensor, task: str) -> torch.Tensor:
        """``[N]`` scores of row pairs."""

    def prepare_passages(self, passages: torch.Tensor, task: str) -> torch.Tensor:
        """What :meth:`matrix` reads for a corpus, computed once (default: the embeddings)."""
        return passages

    @abstractmethod
    def matrix(self, queries: torch.Tensor, prepared: torch.Tensor, task: str) -> torch.Tensor:
        """``[Nq, Np]`` scores of every query against every prepared passage."""

    @torch.no_grad()
    def score_pairs(self, first: Sequence[str], second: Sequence[str], task: str) -> np.ndarray:
        """Each distinct text of a side is embedded once (an NLI premise recurs with every hypothesis)."""
        queries, passages = self._embed_distinct(first, "query", task), self._embed_distinct(second, "passage", task)
        return self.pairwise(queries, passages, task).float().cpu().numpy()

    def _embed_distinct(self, texts: Sequence[str], side: str, task: str) -> torch.Tensor:
        """``embed`` of ``texts`` (``[N, ...]``, in order), running each distinct text once."""
        distinct = list(dict.fromkeys(texts))
        where = {text: row for row, text in enumerate(distinct)}
        return self.embed(distinct, side, task)[torch.tensor([where[text] for text in texts], dtype=torch.long)]

    @torch.no_grad()
    def retrieve(self, queries: dict[str, str], corpus: dict[str, str], top_k: int, task: str = "asymmetric") -> Run:
        doc_ids, query_ids = list(corpus), list(queries)
        prepared = self.prepare_passages(self.embed([corpus[i] for i in doc_ids], "passage", task), task)
        embedded = self.embed([queries[i] for i in query_ids], "query", task)
        scores, indices = ranking.top_k(lambda rows: self.matrix(embedded[rows], prepared, task),
                                        len(query_ids), len(doc_ids), top_k, progress="Ranking")
        return _as_run(query_ids, doc_ids, scores, indices)


class D2LLMScorer(EmbeddingScorer):
    """A D2LLM student: IEM logits, with the task's query/passage instructions."""

    def __init__(self, model: Any, batch_size: int = 32) -> None:
        super().__init__(batch_size)
        self.model = model.eval()

    def embed(self, texts: Sequence[str], side: str, task: str) -> torch.Tensor:
        encode = self.model.encode_query if side == "query" else self.model.encode_document
        return encode(list(texts), task=task, batch_size=self.batch_size, convert_to_tensor=True)

    def pairwise(self, queries: torch.Tensor, passages: torch.Tensor, task: str) -> torch.Tensor:
        return self.model.similarity_pairwise(queries, passages, task)

    def prepare_passages(self, passages: torch.Tensor, task: str) -> torch.Tensor:
        return self.model.project_passages(passages)

    def matrix(self, queries: torch.Tensor, prepared: torch.Tensor, task: str) -> torch.Tensor:
        return self.model.similarity(queries, None, task, passage_projections=prepared)


class CosineScorer(EmbeddingScorer):
    """Cosine similarity of a bi-encoder's embeddings; the task does not change a cosine.

    ``encoder.encode(texts, batch_size=)`` returns ``[N, D]`` (array or tensor); ``encode_query`` /
    ``encode_document`` are used instead where the encoder has them (sentence-transformers' prompts), and
    ``show_progress_bar`` / ``convert_to_tensor`` are passed where the method takes them.
    """

    def __init__(self, encoder: Any, batch_size: int = 32) -> None:
        super().__init__(batch_size)
        self.encoder = encoder

    def embed(self, texts: Sequence[str], side: str, task: str) -> torch.Tensor:
        encode = getattr(self.encoder, "encode_query" if side == "query" else "encode_document", self.encoder.encode)
        options = {"show_progress_bar": len(texts) > 8 * self.batch_size, "convert_to_tensor": True}
        accepted = inspect.signature(encode).parameters
        embeddings = encode(list(texts), batch_size=self.batch_size,
                            **{key: value for key, value in options.items() if key in accepted})
        return F.normalize(torch.as_tensor(embeddings).float(), dim=-1)

    def pairwise(self, queries: torch.Tensor, passages: torch.Tensor, task: str) -> torch.Tensor:
        return (queries * passages).sum(-1)

    def matrix(self, queries: torch.Tensor, prepared: torch.Tensor, task: str) -> torch.Tensor:
        return queries @ prepared.T


class CrossEncoderScorer(Scorer):
    """A yes/no cross-encoder: ``teacher.score(queries, passages, task, batch_size=, show_progress=) -> [N, 2]`` logits
    ``[l_yes, l_no]``. Retrieval reranks the ``depth`` best documents of ``first_stage`` per query (documents
    it misses are never retrieved, so keep ``depth`` at least the deepest cut-off measured, 100)."""

    def __init__(self, teacher: Any, first_stage: Retriever, depth: int = 100, batch_size: int = 8) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.teacher, self.first_stage, self.depth, self.batch_size = teacher, first_stage, depth, batch_size

    @torch.no_grad()
    def score_pairs(self, first: Sequence[str], second: Sequence[str], task: str) -> np.ndarray:
        if not len(first):
            return np.empty(0, dtype=np.float32)
        logits = torch.as_tensor(self.teacher.score(list(first), list(second), task, batch_size=self.batch_size,
                                                    show_progress=len(first) > 8 * self.batch_size))
        if logits.shape != (len(first), 2):
            raise ValueError(f"teacher.score returned shape {tuple(logits.shape)}, expected {(len(first), 2)}")
        return (logits[:, 0] - logits[:, 1]).float().cpu().numpy()

    def retrieve(self, queries: dict[str, str], corpus: dict[str, str], top_k: int, task: str = "asymmetric") -> Run:
        shortlist = self.first_stage.retrieve(queries, corpus, self.depth, task)
        pairs = [(query, doc) for query in queries for doc in shortlist.get(query, {})]
        scores = self.score_pairs([queries[q] for q, _ in pairs], [corpus[d] for _, d in pairs], task)
        run: Run = {query: {} for query in queries}
        for (query, doc), score in zip(pairs, scores):
            run[query][doc] = float(score)
        return {query: dict(sorted(docs.items(), key=lambda item: -item[1])[:top_k]) for query, docs in run.items()}


class BM25FirstStage:
    """Lexical first stage: ``preprocess.mining.BM25Retriever`` (bm25s; English stemming and stop words, jieba
    for ``zh``); documents sharing no term with a query are left out. Run scores are negative ranks: a
    reranker needs only the order."""

    name = "bm25"

    def __init__(self, language: str = "en") -> None:
        self.language = language

    def retrieve(self, queries: dict[str, str], corpus: dict[str, str], top_k: int, task: str = "asymmetric") -> Run:
        from preprocess.mining import BM25Retriever

        doc_ids = list(corpus)
        ranked = BM25Retriever([corpus[i] for i in doc_ids], self.language).search(list(queries.values()), top_k)
        return {query: {doc_ids[d]: -float(rank) for rank, d in enumerate(docs)}
                for query, docs in zip(queries, ranked)}


def _as_run(query_ids: list[str], doc_ids: list[str], scores: torch.Tensor, indices: torch.Tensor) -> Run:
    return {query: {doc_ids[int(i)]: float(s) for s, i in zip(row_scores, row_indices)}
            for query, row_scores, row_indices in zip(query_ids, scores.tolist(), indices.tolist())}
