"""Search a corpus with a D2LLM checkpoint: encode once, then score queries with the IEM, exactly or in two stages.

An index stores, per document, the PMA embedding and the IEM passage projection ``W1p y_p``
(``model.project_passages``), both in half precision, and the ids, the task, the options and a fingerprint of the
model (backbone config and weights, PMA/IEM weights) in ``index.json`` (no pickle).

* Exact search (default): every query against every document, many queries per GEMM, bf16 where the hardware runs
  it fast (``retrieval.scoring``). Cost grows with the corpus: one ``h x h`` layer per (query, document).
* Two-stage (``two_stage=True``): a faiss first stage picks ``candidates`` documents per query and the IEM scores
  only those. The first stage is an ANN index when the index was built with ``ann="hnsw"`` or ``"ivf"``
  (``retrieval.ann``; the embeddings then live in it), else an exact (flat) faiss L2 search over the embeddings.
  ``two_stage_recall`` measures how much of the exact top-k it keeps.
* Hybrid (``hybrid=True``, an index built with ``lexical=True``): BM25 over the stored document texts
  (``preprocess.mining.BM25Retriever``) and the IEM's ranking, each ``depth`` deep, fused by reciprocal rank
  (``rrf``, the default) or by a normalised sum (``retrieval.fusion``). The texts are saved beside the dense
  index with a digest of its ids (a BM25 side of other documents is refused at load); ``add`` updates both, and
  the BM25 index is rebuilt from the texts when first queried after a load or an ``add``.

Saving is atomic: data files get a fresh name, ``index.json`` (which names them) is replaced in one rename, and
only then are the old files removed, so a killed ``build`` or ``add`` leaves the previous index readable.

    python search.py build --model CKPT --corpus corpus.jsonl --index DIR [--ann hnsw|ivf] [--metric l2|ip]
                           [--lexical [--language en]]
    python search.py add   --model CKPT --corpus more.jsonl   --index DIR
    python search.py query --model CKPT --index DIR --query "text" [--query ...] [--queries queries.jsonl]
                           [--top-k 10] [--two-stage --candidates 200] [--hybrid [--fusion rrf|sum]]
                           [--corpus corpus.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from pathlib import Path
import weakref
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from common.cli_errors import report_bad_input
from common.fingerprints import model_fingerprint
from common.stages import write_whole
from evaluation.loaders import DataError, read_corpus, read_queries
from evaluation.models import ModelError, load_d2llm
from retrieval.ann import DEFAULT_METRIC, AnnIndex
from retrieval.fusion import FUSIONS, fuse
from retrieval.lexical import bm25, read_lexical, write_lexical
from retrieval.scoring import DEFAULT_MEMORY_MB, exact_top_k, rescore

META_FILE = "index.json"
FORMAT_VERSION = 2
DEFAULT_CANDIDATES = 200
HYBRID_DEPTH = 100  # documents each side ranks before the fusion
QUERY_BLOCK = 64
Hits = list[list[tuple[str, float]]]


class SearchError(ValueError):
    """An index that cannot be used as asked (missing, built by another model, duplicate ids, ...)."""


@dataclass
class SearchIndex:
    """Document ids, their IEM passage projections ``[N, h]`` (fp16, CPU), and their embeddings ``[N, D]``
    (fp16): in ``flat_embeddings`` without an ANN index, inside ``ann`` with one; ``texts`` (the documents, in id
    order) where the index keeps a BM25 side for hybrid search."""

    ids: list[str]
    projections: torch.Tensor
    task: str
    fingerprint: str
    flat_embeddings: torch.Tensor | None = None
    ann: AnnIndex | None = None
    texts: list[str] | None = None
    language: str = "en"
    _flat: Any = field(default=None, repr=False, compare=False)
    _lexical: Any = field(default=None, repr=False, compare=False)
    _verified: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def build(cls, model: Any, corpus: dict[str, str], task: str = "asymmetric", batch_size: int = 32, *,
              ann: str | None = None, metric: str = DEFAULT_METRIC, lexical: bool = False,
              language: str = "en") -> "SearchIndex":
        """Encode ``corpus`` (``{id: text}``) with the task's passage instruction; ``ann``: hnsw, ivf or None;
        ``lexical``: keep the texts for a BM25 side (hybrid search), tokenised for ``language``."""
        if not corpus:
            raise SearchError("the corpus has no documents")
        _check_unique(list(corpus), [])
        with torch.no_grad():
            embeddings = model.encode_document(list(corpus.values()), task=task, batch_size=batch_size,
                                               convert_to_tensor=True)
        index = cls.from_embeddings(model, list(corpus), embeddings, task, ann=ann, metric=metric)
        if lexical:
            index.texts, index.language = list(corpus.values()), language
        return index

    @classmethod
    def from_embeddings(cls, model: Any, ids: Sequence[str], embeddings: torch.Tensor, task: str = "asymmetric",
                        *, ann: str | None = None, metric: str = DEFAULT_METRIC) -> "SearchIndex":
        """An index over passage embeddings computed elsewhere (``[N, D]``, one row per id)."""
        _check_unique(list(ids), [])
        if len(ids) != len(embeddings):
            raise SearchError(f"{len(ids)} ids but {len(embeddings)} embeddings")
        model.iem.task_branch(task)
        embeddings = embeddings.detach().cpu().half()
        index = cls(list(ids), _project(model, embeddings), task, model_fingerprint(model))
        if ann is None:
            index.flat_embeddings = embeddings
        elif len(ids):
            index.ann = AnnIndex.build(ann, metric, embeddings)
        else:
            raise SearchError("an ANN index needs at least one document")
        return index

    @property
    def embeddings(self) -> torch.Tensor:
        """The documents' PMA embeddings ``[N, D]`` in half precision."""
        return self.ann.embeddings() if self.ann is not None else self.flat_embeddings

    def add(self, model: Any, corpus: dict[str, str], batch_size: int = 32) -> int:
        """Encode and append new documents only; an id already in the index is refused. Returns how many."""
        self.check_model(model)
        _check_unique(list(corpus), self.ids)
        if not corpus:
            return 0
        with torch.no_grad():
            embeddings = model.encode_document(list(corpus.values()), task=self.task, batch_size=batch_size,
                                               convert_to_tensor=True)
        return self.add_embeddings(model, list(corpus), embeddings, texts=list(corpus.values()))

    def add_embeddings(self, model: Any, ids: Sequence[str], embeddings: torch.Tensor,
                       texts: Sequence[str] | None = None) -> int:
        """Append documents by their embeddings (their IEM projections are computed here) and, where the index
        keeps a BM25 side, their ``texts`` (required then). Returns how many."""
        self.check_model(model)
        _check_unique(list(ids), self.ids)
        if len(ids) != len(embeddings):
            raise SearchError(f"{len(ids)} ids but {len(embeddings)} embeddings")
        if self.texts is not None:
            if texts is None or len(texts) != len(ids):
                raise SearchError("this index keeps a BM25 side: give the texts of the documents added")
            self.texts, self._lexical = self.texts + list(texts), None
        embeddings = embeddings.detach().cpu().half()
        self.projections = torch.cat([self.projections, _project(model, embeddings)])
        self.ids = self.ids + list(ids)
        if self.ann is not None:
            self.ann.add(embeddings)
        else:
            self.flat_embeddings = torch.cat([self.flat_embeddings, embeddings])
            if self._flat is not None:
                self._flat.add(embeddings.float().numpy())
        return len(ids)

    def __len__(self) -> int:
        return len(self.ids)

    def check_model(self, model: Any) -> None:
        """Refuse a model other than the one that built the index (checked once per model object)."""
        if self._verified is not None and self._verified() is model:
            return
        if model_fingerprint(model) != self.fingerprint:
            raise SearchError("this index was built with another model (its config, backbone or PMA/IEM weights "
                              "differ); rebuild it with this checkpoint or query it with the one that built it")
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
               candidates: int = DEFAULT_CANDIDATES, precision: str = "auto",
               memory_mb: float = DEFAULT_MEMORY_MB, hybrid: bool = False, fusion: str = "rrf",
               query_texts: Sequence[str] | None = None, depth: int = HYBRID_DEPTH) -> Hits:
        """The ``top_k`` best ``(id, IEM score)`` of each query, best first (fp32 scores).

        Exact: every document, ``QUERY_BLOCK`` queries per pass, ``precision`` auto/fp32/bf16 (bf16 shortlists, fp32
        scores the shortlist), at most ``memory_mb`` of activations. ``two_stage``: the IEM re-scores the first
        stage's ``candidates`` best documents. ``hybrid``: BM25's and this ranking's ``depth`` best fused by
        ``fusion`` (``retrieval.fusion``; scores are then fused scores); it needs the query texts (``queries``, or
        ``query_texts`` beside embeddings).
        """
        self.check_model(model)
        if not self.ids:
            raise SearchError("the index is empty")
        if top_k < 1:
            raise SearchError(f"top_k must be at least 1, got {top_k}")
        if two_stage and candidates < top_k:
            raise SearchError(f"candidates ({candidates}) must be at least top_k ({top_k})")
        if hybrid:
            return self._hybrid(model, queries, top_k, fusion, query_texts, max(depth, top_k),
                                two_stage=two_stage, candidates=max(candidates, depth, top_k), precision=precision,
                                memory_mb=memory_mb)
        embedded = self.encode_queries(model, queries)
        found = []
        for start in range(0, len(embedded), QUERY_BLOCK):
            block = embedded[start : start + QUERY_BLOCK]
            projected = model.iem.project_query(block.to(model.iem.first.weight.device).float())
            if two_stage:
                shortlist = self._first_stage(block, min(candidates, len(self.ids)))
                scores, indices = rescore(model.iem, self.task, projected, self.projections, shortlist, top_k)
            else:
                scores, indices = exact_top_k(model.iem, self.task, projected, self.projections, top_k,
                                              precision=precision, memory_mb=memory_mb)
            found += [[(self.ids[i], s) for i, s in zip(row_i, row_s) if i >= 0]
                      for row_i, row_s in zip(indices.tolist(), scores.tolist())]
        return found

    def lexical_search(self, queries: Sequence[str], depth: int) -> Hits:
        """BM25's ``depth`` best ``(id, score)`` of each query over the stored texts; ``SearchError`` where the index
        keeps none."""
        if self.texts is None:
            raise SearchError("this index keeps no BM25 side: build it with --lexical (lexical=True) for hybrid search")
        if self._lexical is None:
            self._lexical = bm25(self.texts, self.language)
        return [[(self.ids[doc], score) for doc, score in found]
                for found in self._lexical.search_scored(list(queries), depth)]

    def _hybrid(self, model: Any, queries: Sequence[str] | torch.Tensor, top_k: int, fusion: str,
                query_texts: Sequence[str] | None, depth: int, **dense: Any) -> Hits:
        if fusion not in FUSIONS:
            raise SearchError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        texts = query_texts if isinstance(queries, torch.Tensor) else queries
        if texts is None or len(texts) != len(queries):
            raise SearchError("hybrid search needs the text of every query")
        lexical = self.lexical_search(texts, depth)
        dense_hits = self.search(model, queries, min(depth, len(self.ids)), **dense)
        return [fuse(fusion, words, meaning, top_k) for words, meaning in zip(lexical, dense_hits)]

    def two_stage_recall(self, model: Any, queries: Sequence[str] | torch.Tensor, top_k: int = 10,
                         candidates: int = DEFAULT_CANDIDATES) -> float:
        """Mean fraction of each query's exact (fp32) top-k that the two-stage search also returns."""
        embedded = self.encode_queries(model, queries)
        exact = self.search(model, embedded, top_k, precision="fp32")
        approximate = self.search(model, embedded, top_k, two_stage=True, candidates=candidates)
        return recall_against(approximate, exact)

    def _first_stage(self, queries: torch.Tensor, depth: int) -> torch.Tensor:
        if self.ann is not None:
            return self.ann.search(queries, depth)
        if self._flat is None:
            import faiss

            self._flat = faiss.IndexFlatL2(self.flat_embeddings.shape[1])  # L2: see DEFAULT_METRIC in retrieval.ann
            self._flat.add(self.flat_embeddings.float().numpy())
        _, found = self._flat.search(queries.detach().float().cpu().contiguous().numpy(), depth)
        return torch.as_tensor(found, dtype=torch.long)

    # ------------------------------------------------------------------ storage
    def save(self, folder: str) -> None:
        """Write the index atomically: fresh data files, then ``index.json`` replaced in one rename."""
        from safetensors.torch import save_file

        os.makedirs(folder, exist_ok=True)
        token = uuid.uuid4().hex[:12]
        tensors = {"projections": self.projections.contiguous()}
        if self.ann is None:
            tensors["embeddings"] = self.flat_embeddings.contiguous()
        files = {"tensors": f"tensors-{token}.safetensors"}
        save_file(tensors, os.path.join(folder, files["tensors"]))
        if self.ann is not None:
            files["ann"] = f"ann-{token}.faiss"
            self.ann.save(os.path.join(folder, files["ann"]))
        if self.texts is not None:
            files["lexical"] = f"lexical-{token}.json"
            write_lexical(os.path.join(folder, files["lexical"]), self.ids, self.texts, self.language)
        meta = {"format": FORMAT_VERSION, "task": self.task, "model_fingerprint": self.fingerprint, "files": files,
                "ann": self.ann and {"kind": self.ann.kind, "metric": self.ann.metric}, "ids": self.ids}

        def write_meta(partial: Path) -> None:
            with open(partial, "w", encoding="utf-8") as handle:
                json.dump(meta, handle, ensure_ascii=False)
                handle.flush()
                os.fsync(handle.fileno())

        write_whole(Path(folder) / META_FILE, write_meta)
        for name in os.listdir(folder):
            if name not in files.values() and name != META_FILE and name.startswith(
                    ("tensors-", "ann-", "lexical-", META_FILE)):
                os.remove(os.path.join(folder, name))

    @classmethod
    def load(cls, folder: str) -> "SearchIndex":
        """The index ``save`` wrote in ``folder``; a missing, damaged or truncated file is a ``SearchError`` naming
        it."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        meta_path = os.path.join(folder, META_FILE)
        if not os.path.isfile(meta_path):
            raise SearchError(f"{folder}: not a search index (missing {meta_path}); build one first")
        meta = _read_meta(meta_path)
        paths = {role: os.path.join(folder, name) for role, name in meta["files"].items()}
        missing = [path for path in paths.values() if not os.path.isfile(path)]
        if missing:
            raise SearchError(f"{folder}: index files missing: {', '.join(missing)}")
        try:
            tensors = load_file(paths["tensors"])
        except SafetensorError as error:
            raise SearchError(f"{paths['tensors']}: damaged index tensors ({error}); rebuild the index") from None
        if "projections" not in tensors or (meta["ann"] is None) != ("embeddings" in tensors):
            raise SearchError(f"{paths['tensors']}: holds {sorted(tensors)}, not the tensors {meta_path} names; "
                              "rebuild the index")
        index = cls(meta["ids"], tensors["projections"], meta["task"], meta["model_fingerprint"],
                    flat_embeddings=tensors.get("embeddings"))
        if meta["ann"]:
            try:
                index.ann = AnnIndex.load(paths["ann"], meta["ann"]["kind"], meta["ann"]["metric"])
            except RuntimeError as error:  # faiss reports a damaged file this way
                raise SearchError(f"{paths['ann']}: damaged ANN index ({' '.join(str(error).split())[:200]}); "
                                  "rebuild the index") from None
        if "lexical" in paths:
            try:
                index.texts, index.language = read_lexical(paths["lexical"], index.ids)
            except ValueError as error:
                raise SearchError(str(error)) from None
        rows = len(index.ann) if index.ann is not None else len(index.flat_embeddings)
        if not len(index.ids) == rows == len(index.projections):
            raise SearchError(f"{folder}: {len(index.ids)} ids but {rows} embeddings and "
                              f"{len(index.projections)} projections")
        return index


META_KEYS = {"format": int, "task": str, "model_fingerprint": str, "files": dict, "ann": (dict, type(None)),
             "ids": list}


def _read_meta(path: str) -> dict[str, Any]:
    """``index.json``, checked for the keys and types ``SearchIndex.save`` writes; ``SearchError`` naming ``path``."""
    try:
        with open(path, encoding="utf-8") as handle:
            meta = json.load(handle)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SearchError(f"{path}: damaged index file, not valid JSON ({error}); rebuild the index") from None
    if not isinstance(meta, dict):
        raise SearchError(f"{path}: damaged index file, not a JSON object; rebuild the index")
    if meta.get("format") != FORMAT_VERSION:
        raise SearchError(f"{path}: index format {meta.get('format')!r}, expected {FORMAT_VERSION}; "
                          "rebuild the index")
    wrong = [key for key, kind in META_KEYS.items() if not isinstance(meta.get(key), kind)]
    if not wrong:
        ann_named = meta["ann"] is None or ("ann" in meta["files"] and {"kind", "metric"} <= set(meta["ann"]))
        wrong = [] if "tensors" in meta["files"] and ann_named else ["files", "ann"]
    if wrong:
        raise SearchError(f"{path}: damaged index file (missing or malformed {', '.join(wrong)}); rebuild the index")
    return meta


def _project(model: Any, embeddings: torch.Tensor) -> torch.Tensor:
    """fp16 IEM passage projections of fp16 embeddings (computed in the model's dtype, on its device)."""
    with torch.no_grad():
        return model.project_passages(embeddings.float()).cpu().half()


def _check_unique(new_ids: list[str], known_ids: list[str]) -> None:
    known, seen = set(known_ids), set()
    for doc in new_ids:
        if doc in known:
            raise SearchError(f"id {doc!r} is already in the index")
        if doc in seen:
            raise SearchError(f"id {doc!r} appears twice")
        seen.add(doc)


def recall_against(approximate: Hits, exact: Hits) -> float:
    """Mean over queries of the fraction of the exact hits that ``approximate`` also returns."""
    found = [len({doc for doc, _ in a} & {doc for doc, _ in e}) / len(e) for a, e in zip(approximate, exact)]
    return sum(found) / len(found)


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
    build = commands.choices["build"]
    build.add_argument("--task", default="asymmetric", help="IEM task the index serves")
    build.add_argument("--ann", choices=["hnsw", "ivf"], help="an ANN first stage for --two-stage (faiss)")
    build.add_argument("--metric", choices=["l2", "ip"], default=DEFAULT_METRIC, help="the ANN index's metric")
    build.add_argument("--lexical", action="store_true", help="keep the texts for a BM25 side (query --hybrid)")
    build.add_argument("--language", default="en", help="BM25 tokenisation of --lexical: en (stemmed) or zh")
    query = commands.choices["query"]
    query.add_argument("--query", action="append", default=[], help="a query text (repeatable)")
    query.add_argument("--queries", help="BEIR queries.jsonl ({_id, text})")
    query.add_argument("--top-k", type=int, default=10)
    query.add_argument("--two-stage", action="store_true",
                       help="first stage (the index's ANN, else flat faiss L2) shortlists, the IEM re-scores")
    query.add_argument("--candidates", type=int, default=DEFAULT_CANDIDATES, help="shortlist depth of --two-stage")
    query.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                       help="exact search: bf16 shortlisting where fast (auto), or one precision throughout")
    query.add_argument("--memory-mb", type=float, default=DEFAULT_MEMORY_MB, help="exact search activation budget")
    query.add_argument("--hybrid", action="store_true", help="fuse BM25's ranking with the IEM's (--lexical index)")
    query.add_argument("--fusion", choices=FUSIONS, default="rrf", help="hybrid: reciprocal rank or normalised sum")
    args = parser.parse_args(argv)
    if args.command == "query" and not (args.query or args.queries):
        parser.error("give --query TEXT and/or --queries FILE")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        model = load_d2llm(args.model, args.device)
        corpus = read_corpus(args.corpus) if args.corpus else {}
        if args.command != "query" and not corpus:
            raise SearchError(f"{args.corpus}: the corpus has no documents")
        if args.command == "build":
            index = SearchIndex.build(model, corpus, args.task, args.batch_size, ann=args.ann, metric=args.metric,
                                      lexical=args.lexical, language=args.language)
            index.save(args.index)
            report: Any = {"index": args.index, "documents": len(index)}
        elif args.command == "add":
            index = SearchIndex.load(args.index)
            added = _in_file(args.corpus, lambda: index.add(model, corpus, args.batch_size))
            index.save(args.index)
            report = {"index": args.index, "added": added, "documents": len(index)}
        else:
            report = _query(args, model, corpus)
    except (DataError, ModelError, SearchError) as error:
        return report_bad_input(error)
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0


def _in_file(path: str, action: Any) -> Any:
    """Run ``action``; a ``SearchError`` it raises names ``path`` (the file whose rows caused it)."""
    try:
        return action()
    except SearchError as error:
        raise SearchError(f"{path}: {error}") from None


def _query(args: argparse.Namespace, model: Any, corpus: dict[str, str]) -> dict[str, Any]:
    index = SearchIndex.load(args.index)
    index.check_model(model)
    texts = list(args.query) + (list(read_queries(args.queries).values()) if args.queries else [])
    embedded = index.encode_queries(model, texts, args.batch_size)
    hits = index.search(model, embedded, args.top_k, two_stage=args.two_stage, candidates=args.candidates,
                        precision=args.precision, memory_mb=args.memory_mb, hybrid=args.hybrid, fusion=args.fusion,
                        query_texts=texts)
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
