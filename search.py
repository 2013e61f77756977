"""Search a corpus with a D2LLM checkpoint: encode once, score every query exactly with the IEM.

An index stores, per document, the PMA embedding and the IEM passage projection ``W1p y_p``
(``model.project_passages``) in ``index.safetensors``, and the document ids, the task and a fingerprint of the
model's PMA/IEM weights in ``index.json`` (no pickle). A query then costs one query encoding plus one
``h x h`` IEM layer per document (``model.similarity(..., passage_projections=...)``, in chunks). Adding
documents encodes only the new ones.

Two-stage mode (optional): a faiss inner-product search over the embeddings picks ``candidates`` documents per
query and the IEM re-scores only those; ``two_stage_recall`` measures how many of the exact top-k it keeps.

    python search.py build --model CKPT --corpus corpus.jsonl --index DIR
    python search.py add   --model CKPT --corpus more.jsonl   --index DIR
    python search.py query --model CKPT --index DIR --query "text" [--query ...] [--top-k 10]
                           [--two-stage --candidates 100] [--corpus corpus.jsonl]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import weakref
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from evaluation import ranking
from evaluation.loaders import DataError, read_corpus, read_queries
from evaluation.models import ModelError, load_d2llm

TENSORS_FILE = "index.safetensors"
META_FILE = "index.json"
FORMAT_VERSION = 1
Hits = list[list[tuple[str, float]]]


class SearchError(ValueError):
    """An index that cannot be used as asked (missing, built by another model, duplicate ids, ...)."""


def model_fingerprint(model: Any) -> str:
    """sha256 of the model's PMA and IEM weights: a checkpoint's heads change whenever it is trained."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if not name.startswith("backbone."):
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass
class SearchIndex:
    """Document ids with their embeddings ``[N, D]`` and IEM passage projections ``[N, h]`` (float32, CPU)."""

    ids: list[str]
    embeddings: torch.Tensor
    projections: torch.Tensor
    task: str
    fingerprint: str
    _faiss: Any = field(default=None, repr=False, compare=False)
    _verified: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def build(cls, model: Any, corpus: dict[str, str], task: str = "asymmetric", batch_size: int = 32) -> "SearchIndex":
        """Encode ``corpus`` (``{id: text}``) with the task's passage instruction."""
        index = cls.from_embeddings(model, [], torch.empty(0, model.config.embedding_size), task)
        index.add(model, corpus, batch_size)
        return index

    @classmethod
    def from_embeddings(cls, model: Any, ids: Sequence[str], embeddings: torch.Tensor,
                        task: str = "asymmetric") -> "SearchIndex":
        """An index over passage embeddings computed elsewhere (``[N, D]``, one row per id)."""
        index = cls([], torch.empty(0, model.config.embedding_size), torch.empty(0, model.config.iem_hidden_size),
                    task, model_fingerprint(model))
        index.add_embeddings(model, ids, embeddings)
        return index

    def add(self, model: Any, corpus: dict[str, str], batch_size: int = 32) -> int:
        """Encode and append new documents only; an id already in the index is refused. Returns how many."""
        self.check_model(model)
        self._check_new_ids(corpus)
        if not corpus:
            return 0
        with torch.no_grad():
            embeddings = model.encode_document(list(corpus.values()), task=self.task, batch_size=batch_size,
                                               convert_to_tensor=True)
        return self.add_embeddings(model, list(corpus), embeddings)

    def add_embeddings(self, model: Any, ids: Sequence[str], embeddings: torch.Tensor) -> int:
        """Append documents by their embeddings (their IEM projections are computed here). Returns how many."""
        self.check_model(model)
        self._check_new_ids(ids)
        if len(ids) != len(embeddings):
            raise SearchError(f"{len(ids)} ids but {len(embeddings)} embeddings")
        with torch.no_grad():
            embeddings = embeddings.float().cpu()
            projections = model.project_passages(embeddings).float().cpu()
        self.ids += list(ids)
        self.embeddings = torch.cat([self.embeddings, embeddings])
        self.projections = torch.cat([self.projections, projections])
        if self._faiss is not None:
            self._faiss.add(embeddings.contiguous().numpy())
        return len(ids)

    def _check_new_ids(self, ids) -> None:
        known = set(self.ids)
        clashes = [doc for doc in ids if doc in known]
        if clashes or len(set(ids)) != len(ids):
            raise SearchError(f"ids must be new and unique; already in the index: {clashes[:3]}")

    def __len__(self) -> int:
        return len(self.ids)

    def check_model(self, model: Any) -> None:
        """Refuse a model other than the one that built the index (checked once per model object)."""
        if self._verified is not None and self._verified() is model:
            return
        if model_fingerprint(model) != self.fingerprint:
            raise SearchError("this index was built with another model (its PMA/IEM weights differ); rebuild it "
                              "with this checkpoint or query it with the one that built it")
        self._verified = weakref.ref(model)

    # ------------------------------------------------------------------ querying
    def encode_queries(self, model: Any, queries: Sequence[str] | torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """Query embeddings ``[Nq, D]`` (texts are encoded with the task's query instruction)."""
        if isinstance(queries, torch.Tensor):
            return queries
        with torch.no_grad():
            return model.encode_query(list(queries), task=self.task, batch_size=batch_size, convert_to_tensor=True)

    @torch.no_grad()
    def search(self, model: Any, queries: Sequence[str] | torch.Tensor, top_k: int = 10, *, two_stage: bool = False,
               candidates: int = 100) -> Hits:
        """The ``top_k`` best ``(id, IEM score)`` of each query, best first: exact over every document, or
        re-scoring a faiss inner-product shortlist of ``candidates`` with ``two_stage``."""
        self.check_model(model)
        if not self.ids:
            raise SearchError("the index is empty")
        embedded = self.encode_queries(model, queries)
        if two_stage:
            scores, indices = self._two_stage(model, embedded, top_k, candidates)
        else:
            scores, indices = self._exact(model, embedded, top_k)
        return [[(self.ids[i], s) for i, s in zip(row_indices, row_scores)]
                for row_indices, row_scores in zip(indices.tolist(), scores.tolist())]

    def two_stage_recall(self, model: Any, queries: Sequence[str] | torch.Tensor, top_k: int = 10,
                         candidates: int = 100) -> float:
        """Mean fraction of each query's exact top-k that the two-stage search also returns."""
        embedded = self.encode_queries(model, queries)
        exact = self.search(model, embedded, top_k)
        approximate = self.search(model, embedded, top_k, two_stage=True, candidates=candidates)
        found = [len({i for i, _ in a} & {i for i, _ in e}) / len(e) for a, e in zip(approximate, exact)]
        return sum(found) / len(found)

    def _exact(self, model: Any, queries: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return ranking.top_k(
            lambda rows: model.similarity(queries[rows], None, self.task, passage_projections=self.projections),
            len(queries), len(self.ids), top_k, progress="Searching")

    def _two_stage(self, model: Any, queries: torch.Tensor, top_k: int,
                   candidates: int) -> tuple[torch.Tensor, torch.Tensor]:
        if candidates < top_k:
            raise SearchError(f"candidates ({candidates}) must be at least top_k ({top_k})")
        _, shortlists = self.faiss_index().search(queries.float().cpu().contiguous().numpy(),
                                                  min(candidates, len(self.ids)))
        shortlists = torch.as_tensor(shortlists)
        values, indices = [], []
        for query, shortlist in zip(queries, shortlists):
            scores = model.similarity(query[None], None, self.task, passage_projections=self.projections[shortlist])
            best = torch.topk(scores[0].float().cpu(), min(top_k, len(shortlist)))
            values.append(best.values)
            indices.append(shortlist[best.indices])
        return torch.stack(values), torch.stack(indices)

    def faiss_index(self) -> Any:
        """An exact inner-product faiss index over the embeddings, built on first use and kept up to date."""
        if self._faiss is None:
            import faiss

            self._faiss = faiss.IndexFlatIP(self.embeddings.shape[1])
            self._faiss.add(self.embeddings.contiguous().numpy())
        return self._faiss

    # ------------------------------------------------------------------ storage
    def save(self, folder: str) -> None:
        from safetensors.torch import save_file

        os.makedirs(folder, exist_ok=True)
        save_file({"embeddings": self.embeddings.contiguous(), "projections": self.projections.contiguous()},
                  os.path.join(folder, TENSORS_FILE))
        meta = {"format": FORMAT_VERSION, "task": self.task, "model_fingerprint": self.fingerprint, "ids": self.ids}
        with open(os.path.join(folder, META_FILE), "w", encoding="utf-8") as handle:
            json.dump(meta, handle, ensure_ascii=False)

    @classmethod
    def load(cls, folder: str) -> "SearchIndex":
        from safetensors.torch import load_file

        paths = [os.path.join(folder, name) for name in (META_FILE, TENSORS_FILE)]
        missing = [path for path in paths if not os.path.isfile(path)]
        if missing:
            raise SearchError(f"{folder}: not a search index (missing {', '.join(missing)}); build one first")
        with open(paths[0], encoding="utf-8") as handle:
            meta = json.load(handle)
        if meta.get("format") != FORMAT_VERSION:
            raise SearchError(f"{paths[0]}: index format {meta.get('format')!r}, expected {FORMAT_VERSION}")
        tensors = load_file(paths[1])
        index = cls(meta["ids"], tensors["embeddings"], tensors["projections"], meta["task"],
                    meta["model_fingerprint"])
        if not len(index.ids) == len(index.embeddings) == len(index.projections):
            raise SearchError(f"{folder}: {len(index.ids)} ids but {len(index.embeddings)} embeddings and "
                              f"{len(index.projections)} projections")
        return index


# ---------------------------------------------------------------------------------------------- command line
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("build", "encode a corpus into a new index"), ("add", "append new documents to an index"),
                       ("query", "top-k documents of queries")):
        command = commands.add_parser(name, help=text)
        command.add_argument("--model", required=True, help="D2LLM checkpoint (folder or hub id)")
        command.add_argument("--index", required=True, help="index folder")
        command.add_argument("--batch-size", type=int, default=32)
        command.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
        command.add_argument("--corpus", required=name != "query",
                             help="BEIR corpus.jsonl ({_id, title, text}); for query: to print the passages")
    commands.choices["build"].add_argument("--task", default="asymmetric", help="IEM task the index serves")
    query = commands.choices["query"]
    query.add_argument("--query", action="append", default=[], help="a query text (repeatable)")
    query.add_argument("--queries", help="BEIR queries.jsonl ({_id, text})")
    query.add_argument("--top-k", type=int, default=10)
    query.add_argument("--two-stage", action="store_true", help="faiss inner-product shortlist, IEM re-scoring")
    query.add_argument("--candidates", type=int, default=100, help="shortlist size of --two-stage")
    args = parser.parse_args(argv)
    if args.command == "query" and not (args.query or args.queries):
        parser.error("give --query TEXT and/or --queries FILE")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        model = load_d2llm(args.model, args.device)
        corpus = read_corpus(args.corpus) if args.corpus else {}
        if args.command == "build":
            if not corpus:
                raise SearchError(f"{args.corpus}: the corpus has no documents")
            index = SearchIndex.build(model, corpus, args.task, args.batch_size)
            index.save(args.index)
            report: Any = {"index": args.index, "documents": len(index)}
        elif args.command == "add":
            index = SearchIndex.load(args.index)
            added = index.add(model, corpus, args.batch_size)
            index.save(args.index)
            report = {"index": args.index, "added": added, "documents": len(index)}
        else:
            report = _query(args, model, corpus)
    except (DataError, ModelError, SearchError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0


def _query(args: argparse.Namespace, model: Any, corpus: dict[str, str]) -> dict[str, Any]:
    index = SearchIndex.load(args.index)
    texts = list(args.query) + (list(read_queries(args.queries).values()) if args.queries else [])
    embedded = index.encode_queries(model, texts, args.batch_size)
    hits = index.search(model, embedded, args.top_k, two_stage=args.two_stage, candidates=args.candidates)
    report: dict[str, Any] = {"results": [
        {"query": text, "hits": [{"id": doc, "score": round(score, 4),
                                  **({"text": corpus[doc]} if doc in corpus else {})} for doc, score in found]}
        for text, found in zip(texts, hits)]}
    if args.two_stage:
        report[f"two_stage_recall_at_{args.top_k}"] = index.two_stage_recall(model, embedded, args.top_k,
                                                                              args.candidates)
    return report


if __name__ == "__main__":
    sys.exit(main())
