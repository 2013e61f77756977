"""Hard-negative mining: BM25 and a dense bi-encoder, fused by reciprocal rank, filtered for false negatives.

For each example (query, positive) the miner ranks the corpus with every chosen retriever (``bm25``: bm25s,
English with a Snowball stemmer and stopwords, Chinese segmented by jieba; ``dense``: any
sentence-transformers model, offline default all-MiniLM-L6-v2, exact inner-product search in numpy or faiss),
fuses the rankings (reciprocal rank fusion), and walks down the fused list:

* never a positive of the query (any row with the same query) nor the query itself (compared after
  lower-casing and collapsing whitespace);
* the first ``skip_top`` remaining candidates are skipped (likely unlabelled positives);
* with the dense retriever, a candidate whose cosine to the query reaches ``max_relative_score`` times the
  positive's cosine is a likely false negative and is dropped (positive-aware mining, NV-Retriever);
* K negatives: the first K left, or K drawn from the first ``sample_pool`` with a seed derived from
  ``seed``, query and positive (the same under any row order or process count).

A row whose fused list runs short is filled with random eligible corpus texts (seeded; counted in the
report). A corpus with fewer than K + 1 texts, or a row with fewer than K eligible texts in the whole corpus,
is an error.

Command line::

    python -m preprocess.mining --input READ_DIR --output MINED_DIR [--k 7] [--methods bm25 dense]
        [--depth 100] [--skip-top 2] [--max-relative-score 0.95] [--sample-pool 0] [--seed 0]
        [--dense-model PATH] [--dense-max-tokens N] [--faiss] [--device cpu]

``READ_DIR`` is what ``python -m preprocess.readers`` wrote; the output is a ``datasets`` dataset with
``common.schema.MINED_FEATURES`` (the examples plus ``negatives``), saved with ``save_to_disk``.
"""

from __future__ import annotations

import argparse
import functools
import logging
import random
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasets import Dataset

from common.schema import MINED_FEATURES
from common.stages import write_whole
from preprocess.readers import DataError, load_read

logger = logging.getLogger(__name__)

METHODS = ("bm25", "dense")


@dataclass
class MiningConfig:
    k: int = 7
    methods: tuple[str, ...] = METHODS
    depth: int = 100
    skip_top: int = 2
    max_relative_score: float | None = 0.95
    sample_pool: int | None = None
    seed: int = 0
    rrf_constant: int = 60
    dense_model: str | None = None
    dense_max_tokens: int | None = None
    use_faiss: bool = False
    batch_size: int = 64
    device: str | None = None


@dataclass
class MiningReport:
    rows: int = 0
    queries: int = 0
    filled_randomly: int = 0
    false_negatives_dropped: int = 0
    seconds: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        timing = ", ".join(f"{name} {value:.1f}s" for name, value in self.seconds.items())
        return (f"mined {self.rows} rows ({self.queries} distinct queries): {self.false_negatives_dropped} "
                f"likely false negatives dropped, {self.filled_randomly} rows filled with random negatives; {timing}")


def normalise(text: str) -> str:
    """The form texts are compared in when excluding the query and its positives."""
    return " ".join(text.lower().split())


# ---------------------------------------------------------------------- retrievers
class BM25Retriever:
    """bm25s over the corpus; ``language`` zh segments with jieba, anything else gets the English stemmer."""

    def __init__(self, corpus: Sequence[str], language: str = "en") -> None:
        import bm25s
        from bm25s.tokenization import Tokenizer

        if language == "zh":
            import jieba
            from bm25s.stopwords import STOPWORDS_CHINESE

            jieba.setLogLevel(logging.WARNING)
            self.tokenizer = Tokenizer(splitter=_jieba_words, stopwords=list(STOPWORDS_CHINESE))
        else:
            import Stemmer

            self.tokenizer = Tokenizer(stopwords="en", stemmer=Stemmer.Stemmer("english"))
        self.index = bm25s.BM25()
        self.index.index(self.tokenizer.tokenize(list(corpus), return_as="string", show_progress=False),
                         show_progress=False)
        self.size = len(corpus)

    def search(self, queries: Sequence[str], depth: int) -> list[list[int]]:
        """Corpus indices per query, best first; documents sharing no term with the query are left out."""
        return [[doc for doc, _ in found] for found in self.search_scored(queries, depth)]

    def search_scored(self, queries: Sequence[str], depth: int) -> list[list[tuple[int, float]]]:
        """``(corpus index, BM25 score)`` per query, best first; documents sharing no term with it left out."""
        tokens = self.tokenizer.tokenize(list(queries), return_as="string", update_vocab=False, show_progress=False)
        known = [[token for token in query if token] for query in tokens]  # "" stands for words not in the corpus
        searchable = [row for row, query in enumerate(known) if query]
        ranked: list[list[tuple[int, float]]] = [[] for _ in known]
        if searchable:
            documents, scores = self.index.retrieve([known[row] for row in searchable], k=min(depth, self.size),
                                                    show_progress=False, n_threads=1)
            for row, row_docs, row_scores in zip(searchable, documents, scores):
                ranked[row] = [(int(d), float(s)) for d, s in zip(row_docs, row_scores) if s > 0]
        return ranked


def _jieba_words(text: str) -> list[str]:
    import jieba

    return [word for word in jieba.lcut(text) if word.strip() and any(char.isalnum() for char in word)]


class DenseRetriever:
    """A sentence-transformers bi-encoder; cosine similarities by exact inner product (numpy or faiss)."""

    def __init__(self, corpus: Sequence[str], model_name_or_path: str | None = None, *, batch_size: int = 64,
                 device: str | None = None, use_faiss: bool = False, max_tokens: int | None = None) -> None:
        from common.embedded_models import minilm_dir

        self.model = _sentence_transformer(model_name_or_path or minilm_dir(), device)
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.corpus_embeddings = self.embed(corpus)
        self.faiss_index = None
        if use_faiss:
            import faiss

            self.faiss_index = faiss.IndexFlatIP(self.corpus_embeddings.shape[1])
            self.faiss_index.add(self.corpus_embeddings)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        default_length = self.model.max_seq_length
        self.model.max_seq_length = self.max_tokens or default_length
        try:
            return self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=len(texts) > 5000).astype(np.float32)
        finally:
            self.model.max_seq_length = default_length

    def search(self, query_embeddings: np.ndarray, depth: int, chunk: int = 256) -> list[list[int]]:
        depth = min(depth, len(self.corpus_embeddings))
        if self.faiss_index is not None:
            return self.faiss_index.search(query_embeddings, depth)[1].tolist()
        ranked = []
        for start in range(0, len(query_embeddings), chunk):
            scores = query_embeddings[start:start + chunk] @ self.corpus_embeddings.T
            top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
            for row, candidates in zip(scores, top):
                ranked.append(candidates[np.lexsort((candidates, -row[candidates]))].tolist())
        return ranked


@functools.lru_cache(maxsize=2)
def _sentence_transformer(name_or_path: str, device: str | None):
    """Loaded once per process (mining several datasets, or tests, reuse it)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(name_or_path, device=device)


def reciprocal_rank_fusion(rankings: Sequence[Sequence[int]], constant: int = 60) -> list[int]:
    """Indices by summed ``1 / (constant + rank)`` over the rankings; ties by index, so the order is fixed."""
    fused: dict[int, float] = defaultdict(float)
    for ranking in rankings:
        for rank, index in enumerate(ranking):
            fused[index] += 1.0 / (constant + rank + 1)
    return sorted(fused, key=lambda index: (-fused[index], index))


# ---------------------------------------------------------------------- mining
def mine(examples: Dataset, corpus: Sequence[str], config: MiningConfig | None = None
         ) -> tuple[Dataset, MiningReport]:
    """``examples`` (``EXAMPLE_FEATURES``) plus K ``negatives`` each from ``corpus``; see the module docstring."""
    config = config or MiningConfig()
    report = MiningReport(rows=len(examples))
    unknown = set(config.methods) - set(METHODS)
    if unknown or not config.methods:
        raise ValueError(f"methods must be a non-empty subset of {METHODS}, got {config.methods}")
    corpus = list(dict.fromkeys(text for text in corpus if text and text.strip()))
    if len(corpus) < config.k + 1:
        raise DataError(f"the corpus has {len(corpus)} distinct non-empty texts, fewer than k + 1 = {config.k + 1}")
    if len(examples) == 0:
        raise DataError("no examples to mine negatives for")
    languages = set(examples["language"])
    if len(languages) > 1:
        raise DataError(f"mine one language at a time; the examples mix {sorted(languages)}")

    language = next(iter(languages))
    queries, positives = examples["query"], examples["positive"]
    excluded: dict[str, set[str]] = defaultdict(set)
    for query, positive in zip(queries, positives):
        excluded[query].update((normalise(query), normalise(positive)))
    unique_queries = list(excluded)
    report.queries = len(unique_queries)
    corpus_keys = [normalise(text) for text in corpus]
    depth = config.depth + config.skip_top + max(len(keys) for keys in excluded.values())

    rankings: list[list[list[int]]] = []
    dense = None
    if "bm25" in config.methods:
        started = time.perf_counter()
        rankings.append(BM25Retriever(corpus, language).search(unique_queries, depth))
        report.seconds["bm25"] = time.perf_counter() - started
    if "dense" in config.methods:
        started = time.perf_counter()
        dense = DenseRetriever(corpus, config.dense_model, batch_size=config.batch_size, device=config.device,
                               use_faiss=config.use_faiss, max_tokens=config.dense_max_tokens)
        query_vectors = dict(zip(unique_queries, dense.embed(unique_queries)))
        rankings.append(dense.search(np.stack(list(query_vectors.values())), depth))
        distinct_positives = list(dict.fromkeys(positives))
        positive_vectors = dict(zip(distinct_positives, dense.embed(distinct_positives)))
        report.seconds["dense"] = time.perf_counter() - started
    fused = {query: reciprocal_rank_fusion([ranking[row] for ranking in rankings], config.rrf_constant)
             for row, query in enumerate(unique_queries)}

    mined = []
    for row, (query, positive) in enumerate(zip(queries, positives)):
        keys = excluded[query]
        candidates = [index for index in fused[query] if corpus_keys[index] not in keys][config.skip_top:]
        ceiling = None
        if dense is not None and config.max_relative_score is not None:
            query_vector = query_vectors[query]
            ceiling = config.max_relative_score * float(query_vector @ positive_vectors[positive])
            kept = [index for index, score in zip(candidates, dense.corpus_embeddings[candidates] @ query_vector)
                    if score < ceiling]
            report.false_negatives_dropped += len(candidates) - len(kept)
            candidates = kept
        rng = random.Random(f"{config.seed}\x1f{query}\x1f{positive}")
        pool = candidates[: max(config.k, config.sample_pool or 0)]
        chosen = rng.sample(pool, config.k) if len(pool) > config.k else pool
        if len(chosen) < config.k:
            report.filled_randomly += 1
            eligible = [index for index, key in enumerate(corpus_keys) if key not in keys and index not in chosen]
            if ceiling is not None:
                eligible = [index for index, score in
                            zip(eligible, dense.corpus_embeddings[eligible] @ query_vectors[query]) if score < ceiling]
            if len(eligible) + len(chosen) < config.k:
                raise DataError(f"row {row} (query {query[:60]!r}): only {len(eligible) + len(chosen)} eligible "
                                f"negatives in the whole corpus, fewer than k = {config.k}; lower k or "
                                "--max-relative-score")
            chosen = chosen + rng.sample(eligible, config.k - len(chosen))
        mined.append([corpus[index] for index in chosen])
    return examples.add_column("negatives", mined).cast(MINED_FEATURES), report


def main(argv: Sequence[str] | None = None) -> None:
    defaults = MiningConfig()
    parser = argparse.ArgumentParser(description="Mine K hard negatives per example (BM25 + dense, fused).")
    parser.add_argument("--input", required=True, help="folder written by python -m preprocess.readers")
    parser.add_argument("--output", required=True, help="folder for the mined dataset")
    parser.add_argument("--k", type=int, default=defaults.k)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(defaults.methods))
    parser.add_argument("--depth", type=int, default=defaults.depth, help="candidates per retriever")
    parser.add_argument("--skip-top", type=int, default=defaults.skip_top)
    parser.add_argument("--max-relative-score", type=float, default=defaults.max_relative_score,
                        help="drop candidates whose dense cosine >= this x the positive's; <= 0 disables")
    parser.add_argument("--sample-pool", type=int, default=0, help="draw K among the first N eligible (0: top K)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--dense-model", help="sentence-transformers model (default: embedded all-MiniLM-L6-v2)")
    parser.add_argument("--dense-max-tokens", type=int, help="truncate texts for the dense model (default: its own)")
    parser.add_argument("--faiss", action="store_true", help="search with a faiss IndexFlatIP")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--device")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    examples, corpus = load_read(args.input)
    config = MiningConfig(k=args.k, methods=tuple(args.methods), depth=args.depth, skip_top=args.skip_top,
                          max_relative_score=args.max_relative_score if args.max_relative_score > 0 else None,
                          sample_pool=args.sample_pool or None, seed=args.seed, dense_model=args.dense_model,
                          dense_max_tokens=args.dense_max_tokens, use_faiss=args.faiss, batch_size=args.batch_size,
                          device=args.device)
    started = time.perf_counter()
    try:
        mined, report = mine(examples, corpus, config)
    except DataError as error:
        raise DataError(f"{args.input}: {error}") from None  # the message names the folder as well as the row
    write_whole(Path(args.output), lambda folder: mined.save_to_disk(str(folder)))  # whole or not at all
    logger.info("%s\ntotal %.1fs -> %s", report.summary(), time.perf_counter() - started, args.output)


if __name__ == "__main__":
    from common.cli_errors import run_command

    run_command(main, DataError, FileNotFoundError)
