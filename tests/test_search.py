"""search.py: exact top-k equals brute force over the stored projections, adding documents encodes only them,
save/load, two-stage, CLI."""

from __future__ import annotations

import json

import pytest
import torch
from evaluation_tiny import CORPUS, save_tiny_d2llm, tiny_d2llm, write_beir, write_jsonl
from tiny import tiny_bert
from transformers import BertModel

from search import META_FILE, SearchError, SearchIndex, main

DOCS = {doc: f"{title} {text}".strip() for doc, (title, text) in CORPUS.items()}
QUERIES = ["what is the capital of france", "where did the cat sit", "what is a banana"]
EXACT = "fp32"  # exact search in one precision, whatever a timed matmul would pick here (search_scoring)


@pytest.fixture(scope="module")
def model():
    return tiny_d2llm()


@pytest.fixture(scope="module")
def index(model):
    return SearchIndex.build(model, DOCS, batch_size=2)


def brute_force(model, queries, docs, k):
    """fp32 IEM scores over the fp16-rounded embeddings an index stores."""
    with torch.no_grad():
        passages = model.encode_document(list(docs.values()), convert_to_tensor=True).half()
        projections = model.project_passages(passages.float()).half().float()
        scores = model.similarity(model.encode_query(queries, convert_to_tensor=True), None,
                                  passage_projections=projections)
    ids = list(docs)
    best = torch.topk(scores, k, dim=1)
    return [[(ids[i], s) for i, s in zip(row_i, row_s)] for row_i, row_s in zip(best.indices.tolist(),
                                                                                  best.values.tolist())]


def assert_same_hits(actual, expected):
    assert [[doc for doc, _ in row] for row in actual] == [[doc for doc, _ in row] for row in expected]
    for row_a, row_e in zip(actual, expected):
        assert [s for _, s in row_a] == pytest.approx([s for _, s in row_e], abs=1e-5)


def test_exact_search_equals_brute_force_iem_scores(model, index):
    assert_same_hits(index.search(model, QUERIES, top_k=4, precision=EXACT), brute_force(model, QUERIES, DOCS, 4))


def test_top_k_larger_than_the_corpus_returns_every_document(model, index):
    assert [len(row) for row in index.search(model, QUERIES, top_k=50, precision=EXACT)] == [len(DOCS)] * len(QUERIES)


def test_adding_documents_encodes_only_the_new_ones(model, monkeypatch):
    first, second = dict(list(DOCS.items())[:4]), dict(list(DOCS.items())[4:])
    index = SearchIndex.build(model, first)
    before = index.embeddings.clone()
    encoded: list[str] = []
    original = model.encode_document

    def spy(texts, **kwargs):
        encoded.extend(texts)
        return original(texts, **kwargs)

    monkeypatch.setattr(model, "encode_document", spy)
    assert index.add(model, second) == 2
    assert encoded == list(second.values())
    assert torch.equal(index.embeddings[:4], before)
    monkeypatch.undo()
    whole = SearchIndex.build(model, DOCS)
    assert index.ids == whole.ids
    torch.testing.assert_close(index.projections, whole.projections, atol=1e-5, rtol=1e-5)
    assert_same_hits(index.search(model, QUERIES, 3, precision=EXACT), whole.search(model, QUERIES, 3, precision=EXACT))


def test_adding_a_known_id_is_refused(model, index):
    with pytest.raises(SearchError, match="id 'd1' is already in the index"):
        index.add(model, {"d1": "paris again"})


def test_save_and_load_round_trip_in_safetensors_and_json(model, index, tmp_path):
    index.save(str(tmp_path / "idx"))
    meta = json.loads((tmp_path / "idx" / META_FILE).read_text())
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == sorted([META_FILE, meta["files"]["tensors"]])
    assert meta["ids"] == list(DOCS) and meta["ann"] is None
    loaded = SearchIndex.load(str(tmp_path / "idx"))
    assert loaded.ids == index.ids and loaded.task == index.task
    assert torch.equal(loaded.embeddings, index.embeddings) and torch.equal(loaded.projections, index.projections)
    assert loaded.search(model, QUERIES, 3, precision=EXACT) == index.search(model, QUERIES, 3, precision=EXACT)


def test_an_index_refuses_a_different_model(index):
    with pytest.raises(SearchError, match="another model"):
        index.search(tiny_d2llm(seed=1), QUERIES, 3)


def test_two_stage_with_every_document_as_candidate_is_exact(model, index):
    exact = index.search(model, QUERIES, top_k=3, precision=EXACT)
    assert_same_hits(index.search(model, QUERIES, top_k=3, two_stage=True, candidates=len(DOCS)), exact)
    assert index.two_stage_recall(model, QUERIES, top_k=3, candidates=len(DOCS)) == 1.0


def test_two_stage_recall_counts_exact_hits_kept_by_the_shortlist(model, index):
    recall = index.two_stage_recall(model, QUERIES, top_k=3, candidates=3)
    approximate = index.search(model, QUERIES, top_k=3, two_stage=True, candidates=3)
    exact = index.search(model, QUERIES, top_k=3, precision=EXACT)
    kept = [len({d for d, _ in a} & {d for d, _ in e}) / 3 for a, e in zip(approximate, exact)]
    assert recall == pytest.approx(sum(kept) / len(kept))
    with pytest.raises(SearchError, match="at least top_k"):
        index.search(model, QUERIES, top_k=3, two_stage=True, candidates=2)


def test_cli_build_add_query(tmp_path, capsys):
    checkpoint = save_tiny_d2llm(tmp_path / "ckpt")
    folder = write_beir(tmp_path / "beir")
    more = write_jsonl(tmp_path / "more.jsonl", [{"_id": "d7", "title": "", "text": "a fish swam in the sea"}])
    idx = str(tmp_path / "idx")
    assert main(["build", "--model", str(checkpoint), "--corpus", str(folder / "corpus.jsonl"), "--index", idx]) == 0
    assert json.loads(capsys.readouterr().out)["documents"] == 6
    assert main(["add", "--model", str(checkpoint), "--corpus", str(more), "--index", idx]) == 0
    assert json.loads(capsys.readouterr().out) == {"index": idx, "added": 1, "documents": 7}
    query = ["query", "--model", str(checkpoint), "--index", idx, "--query", "a fish in the sea",
             "--queries", str(folder / "queries.jsonl"), "--corpus", str(more)]
    assert main([*query, "--top-k", "7", "--precision", EXACT]) == 0
    exact = json.loads(capsys.readouterr().out)["results"]
    assert len(exact) == 5 and all(len(r["hits"]) == 7 for r in exact)
    for result in exact:  # every document ranked once; only d7, from --corpus, carries its text
        assert sorted(hit["id"] for hit in result["hits"]) == sorted([*CORPUS, "d7"])
        assert [hit["text"] for hit in result["hits"] if "text" in hit] == ["a fish swam in the sea"]
        assert next(hit for hit in result["hits"] if hit["id"] == "d7")["text"] == "a fish swam in the sea"
    assert main([*query, "--top-k", "2", "--two-stage", "--candidates", "4"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["results"]) == 5 and all(len(r["hits"]) == 2 for r in report["results"])
    kept = [len({h["id"] for h in r["hits"]} & {h["id"] for h in e["hits"][:2]}) / 2
            for r, e in zip(report["results"], exact)]
    assert report["two_stage_recall_at_2"] == pytest.approx(sum(kept) / len(kept))


def test_cli_refuses_a_non_d2llm_checkpoint_and_a_missing_index(tmp_path, capsys):
    BertModel(tiny_bert()).save_pretrained(tmp_path / "bert")
    assert main(["query", "--model", str(tmp_path / "bert"), "--index", str(tmp_path), "--query", "a"]) == 2
    assert "not a D2LLM checkpoint" in capsys.readouterr().err
    checkpoint = save_tiny_d2llm(tmp_path / "ckpt")
    assert main(["query", "--model", str(checkpoint), "--index", str(tmp_path / "none"), "--query", "a"]) == 2
    assert "not a search index" in capsys.readouterr().err


def test_index_from_precomputed_embeddings_searches_exactly(model):
    torch.manual_seed(0)
    passages, queries = torch.randn(50, model.config.embedding_size), torch.randn(4, model.config.embedding_size)
    index = SearchIndex.from_embeddings(model, [f"p{i}" for i in range(50)], passages)
    with torch.no_grad():
        stored = model.project_passages(passages.half().float()).half().float()
        best = torch.topk(model.similarity(queries, None, passage_projections=stored), 5, dim=1)
    expected = [[(f"p{i}", s) for i, s in zip(row_i, row_s)]
                for row_i, row_s in zip(best.indices.tolist(), best.values.tolist())]
    assert_same_hits(index.search(model, queries, top_k=5, precision=EXACT), expected)
    with pytest.raises(SearchError, match="ids but"):
        index.add_embeddings(model, ["x"], passages[:2])


def test_cli_query_names_a_truncated_tensors_file_in_one_line(model, index, tmp_path, capsys):
    checkpoint = save_tiny_d2llm(tmp_path / "ckpt")
    SearchIndex.build(model, DOCS).save(str(tmp_path / "idx"))
    tensors = tmp_path / "idx" / json.loads((tmp_path / "idx" / META_FILE).read_text())["files"]["tensors"]
    tensors.write_bytes(tensors.read_bytes()[:100])
    assert main(["query", "--model", str(checkpoint), "--index", str(tmp_path / "idx"), "--query", "a cat"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {tensors}: damaged index tensors"), errors


def test_an_index_json_without_the_keys_save_writes_is_named_as_damaged(tmp_path):
    (tmp_path / META_FILE).write_text(json.dumps({"format": 2, "task": "asymmetric", "ids": "d1"}))
    with pytest.raises(SearchError, match=r"index\.json: damaged index file \(missing or malformed "
                                          r"model_fingerprint, files, ids\)"):
        SearchIndex.load(str(tmp_path))
