"""Hybrid search: reciprocal-rank and normalised-sum fusion worked by hand; an index with a BM25 side fuses exactly
the two rankings it holds, keeps both sides in step through add, save and load, and refuses a BM25 side of other
documents; the command refuses --hybrid on an index without one in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from evaluation_tiny import CORPUS, save_tiny_d2llm, tiny_d2llm, write_jsonl

from retrieval.fusion import normalised_sum, reciprocal_rank_fusion
from search import META_FILE, SearchError, SearchIndex

REPO = Path(__file__).resolve().parents[1]
DOCS = {doc: f"{title} {text}".strip() for doc, (title, text) in CORPUS.items()}
QUERIES = ["what is the capital of france", "where did the cat sit", "yellow banana"]


@pytest.fixture(scope="module")
def model():
    return tiny_d2llm()


def test_reciprocal_rank_fusion_sums_one_over_sixty_plus_the_rank():
    fused = reciprocal_rank_fusion([[("a", 9.0), ("b", 8.0)], [("b", 0.3), ("c", 0.2)]], top_k=3)
    assert [doc for doc, _ in fused] == ["b", "a", "c"]
    assert [score for _, score in fused] == pytest.approx([1 / 62 + 1 / 61, 1 / 61, 1 / 62])


def test_normalised_sum_scales_each_ranking_to_zero_one_before_adding():
    fused = normalised_sum([("a", 10.0), ("b", 5.0), ("c", 0.0)], [("c", 0.9), ("b", 0.1)], top_k=3)
    # lexical: a 1, b 0.5, c 0; dense: c 1, b 0; each at half weight
    assert dict(fused) == pytest.approx({"a": 0.5, "b": 0.25, "c": 0.5})
    assert [doc for doc, _ in fused] == ["a", "c", "b"]  # ties keep the order of first appearance


def test_hybrid_search_fuses_the_bm25_and_iem_rankings_the_index_holds(model):
    index = SearchIndex.build(model, DOCS, lexical=True)
    lexical = index.lexical_search(QUERIES, 6)
    assert lexical[2][0][0] == "d5"  # "yellow banana": only d5 shares its words
    dense = index.search(model, QUERIES, top_k=6, precision="fp32")
    expected = [reciprocal_rank_fusion([words, meaning], 3) for words, meaning in zip(lexical, dense)]
    found = index.search(model, QUERIES, top_k=3, hybrid=True, precision="fp32")
    assert [[doc for doc, _ in row] for row in found] == [[doc for doc, _ in row] for row in expected]
    for row_found, row_expected in zip(found, expected):
        assert [s for _, s in row_found] == pytest.approx([s for _, s in row_expected])


def test_add_save_and_load_keep_the_bm25_side_in_step_with_the_dense_one(model, tmp_path):
    first, rest = dict(list(DOCS.items())[:4]), dict(list(DOCS.items())[4:])
    index = SearchIndex.build(model, first, lexical=True)
    assert index.lexical_search(["yellow banana"], 5) == [[]]  # d5 is not in yet
    index.add(model, rest)
    index.save(str(tmp_path / "index"))
    loaded = SearchIndex.load(str(tmp_path / "index"))
    assert loaded.texts == list(DOCS.values()) and loaded.ids == list(DOCS)
    assert loaded.lexical_search(["yellow banana"], 5)[0][0][0] == "d5"
    with pytest.raises(SearchError, match="give the texts"):
        loaded.add_embeddings(model, ["d7"], loaded.embeddings[:1])


def test_a_bm25_side_of_other_documents_is_refused_at_load(model, tmp_path):
    SearchIndex.build(model, DOCS, lexical=True).save(str(tmp_path / "index"))
    meta = json.loads((tmp_path / "index" / META_FILE).read_text())
    lexical_file = tmp_path / "index" / meta["files"]["lexical"]
    lexical = json.loads(lexical_file.read_text())
    lexical["ids_digest"] = "0" * 64  # written for another set of documents
    lexical_file.write_text(json.dumps(lexical))
    with pytest.raises(SearchError, match="the BM25 side does not match the dense index"):
        SearchIndex.load(str(tmp_path / "index"))


def test_hybrid_query_on_an_index_without_a_bm25_side_ends_with_one_line(model, tmp_path):
    checkpoint = save_tiny_d2llm(tmp_path / "model")
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"_id": i, "title": t, "text": x} for i, (t, x) in CORPUS.items()])
    run = [sys.executable, "search.py"]
    built = subprocess.run([*run, "build", "--model", str(checkpoint), "--corpus", str(corpus), "--index",
                            str(tmp_path / "index")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    result = subprocess.run([*run, "query", "--model", str(checkpoint), "--index", str(tmp_path / "index"),
                             "--query", "cat", "--hybrid"], cwd=REPO, capture_output=True, text=True, timeout=120)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]  # beside progress bars
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(errors) == 1 and "keeps no BM25 side" in errors[0]
