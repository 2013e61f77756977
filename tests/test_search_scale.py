"""search_scoring / search_ann / search.py at scale: precision choice, chunking, ANN round trips, fingerprint
refusals after save/load and through the CLI, bad corpus rows, atomic saves."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch
from evaluation_tiny import save_tiny_d2llm, tiny_d2llm, write_beir, write_jsonl

from common import hardware
from retrieval import scoring as search_scoring
from retrieval.ann import AnnIndex
from search import META_FILE, SearchError, SearchIndex, main

N, Q = 600, 12


@pytest.fixture(scope="module")
def model():
    return tiny_d2llm()


@pytest.fixture(scope="module")
def data(model):
    generator = torch.Generator().manual_seed(3)
    size = model.config.embedding_size
    return torch.randn(N, size, generator=generator), torch.randn(Q, size, generator=generator)


def error_lines(stderr):
    """The CLI's own lines (transformers' progress bars also write to stderr)."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def ids(count, prefix="p"):
    return [f"{prefix}{i}" for i in range(count)]


def test_exact_search_in_many_small_chunks_equals_one_similarity_matrix(model, data):
    passages, queries = data
    index = SearchIndex.from_embeddings(model, ids(N), passages)
    with torch.no_grad():
        full = model.similarity(queries, None, passage_projections=index.projections.float())
    best = torch.topk(full, 10, dim=1)
    assert search_scoring.chunk_size(Q, 16, torch.float32, memory_mb=0.01) < N  # many chunks below
    hits = index.search(model, queries, 10, precision="fp32", memory_mb=0.01)
    assert [[doc for doc, _ in row] for row in hits] == [[f"p{i}" for i in row] for row in best.indices.tolist()]
    torch.testing.assert_close(torch.tensor([[s for _, s in row] for row in hits]), best.values, atol=1e-5,
                               rtol=1e-5)


def test_bf16_shortlisting_returns_the_fp32_top_k_and_fp32_scores(model, data):
    passages, queries = data
    index = SearchIndex.from_embeddings(model, ids(N), passages)
    exact = index.search(model, queries, 10, precision="fp32")
    assert index.search(model, queries, 10, precision="bf16", memory_mb=0.05) == exact


def test_chunk_size_follows_the_memory_budget():
    # two [32, chunk, 512] activations: 128 KiB per passage in fp32, 64 KiB in bf16
    assert search_scoring.chunk_size(32, 512, torch.float32, memory_mb=256) == 2048
    assert search_scoring.chunk_size(32, 512, torch.bfloat16, memory_mb=256) == 4096
    assert search_scoring.chunk_size(10**6, 512, torch.float32, memory_mb=1) == 1


def test_auto_precision_uses_bf16_only_where_measured_faster(monkeypatch):
    monkeypatch.setattr(search_scoring, "_BF16_FAST", {})
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    monkeypatch.setattr(search_scoring, "_measured_bf16_speedup", lambda: 0.2)  # an AVX2 CPU emulating bf16
    assert search_scoring.compute_dtype("auto", "cpu") == torch.float32
    monkeypatch.setattr(search_scoring, "_BF16_FAST", {})
    monkeypatch.setattr(search_scoring, "_measured_bf16_speedup", lambda: 2.5)
    assert search_scoring.compute_dtype("auto", "cpu") == torch.bfloat16
    assert search_scoring.compute_dtype("fp32", "cpu") == torch.float32
    with pytest.raises(ValueError, match="precision"):
        search_scoring.compute_dtype("int8", "cpu")


def test_the_precision_chooser_times_bf16_once_and_only_where_the_cpu_has_a_bf16_feature(monkeypatch, tmp_path):
    """bf16 needs a bf16 CPU feature (read from a cpuinfo file of the test) and a measured speedup of >= 1.5."""
    timings: list[float] = []
    measure_for_real = search_scoring._measured_bf16_speedup

    def timed(speedup: float):
        def measure() -> float:
            timings.append(speedup)
            return speedup
        return measure

    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(hardware, "CPUINFO", cpuinfo)
    cpuinfo.write_text("flags\t\t: fpu avx2\n")
    monkeypatch.setattr(search_scoring, "_BF16_FAST", {})
    monkeypatch.setattr(search_scoring, "_measured_bf16_speedup", timed(3.0))
    assert search_scoring.compute_dtype("auto", "cpu") == torch.float32 and timings == []  # no feature: no timing
    cpuinfo.write_text("flags\t\t: fpu avx2 avx512f avx512_bf16\n")
    for speedup, chosen in ((1.49, torch.float32), (1.5, torch.bfloat16)):
        monkeypatch.setattr(search_scoring, "_BF16_FAST", {})
        monkeypatch.setattr(search_scoring, "_measured_bf16_speedup", timed(speedup))
        assert [search_scoring.compute_dtype("auto", "cpu") for _ in range(3)] == [chosen] * 3
        assert timings[-1] == speedup and timings.count(speedup) == 1  # measured once, then remembered
    assert search_scoring.compute_dtype("bf16", "cpu") == torch.bfloat16  # an explicit precision is kept
    speedup = measure_for_real(rows=256, hidden=64, repeats=1)
    assert 0 < speedup < float("inf")


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_ann_index_round_trips_through_save_and_load(model, data, kind, metric, tmp_path):
    passages, queries = data
    index = SearchIndex.from_embeddings(model, ids(N), passages, ann=kind, metric=metric)
    assert torch.equal(index.embeddings, passages.half())  # fp16 codes hold the fp16 embeddings exactly
    index.save(str(tmp_path / "idx"))
    meta = json.loads((tmp_path / "idx" / META_FILE).read_text())
    assert meta["ann"] == {"kind": kind, "metric": metric} and os.path.isfile(tmp_path / "idx" / meta["files"]["ann"])
    loaded = SearchIndex.load(str(tmp_path / "idx"))
    assert loaded.ann.kind == kind and loaded.ann.metric == metric and len(loaded.ann) == N
    assert torch.equal(loaded.embeddings, index.embeddings)
    two_stage = index.search(model, queries, 5, two_stage=True, candidates=50)
    assert loaded.search(model, queries, 5, two_stage=True, candidates=50) == two_stage
    # a shortlist of 50 random ids would keep 50/600 = 0.08 of the exact top 5; the ANN's keeps 0.27-0.32 here
    assert loaded.two_stage_recall(model, queries, 5, candidates=50) >= 0.2


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_ann_with_every_document_as_candidate_is_exact_and_sees_added_documents(model, data, kind):
    passages, queries = data
    index = SearchIndex.from_embeddings(model, ids(N - 100), passages[: N - 100], ann=kind)
    index.add_embeddings(model, ids(100, "new"), passages[N - 100 :])
    assert len(index.ann) == N and torch.equal(index.embeddings, passages.half())
    exact = index.search(model, queries, 10, precision="fp32")
    assert index.search(model, queries, 10, two_stage=True, candidates=N) == exact
    assert index.two_stage_recall(model, queries, 10, candidates=N) == 1.0


def test_ann_metric_and_kind_are_checked(data):
    with pytest.raises(ValueError, match="ann must be"):
        AnnIndex.build("lsh", "l2", data[0])
    with pytest.raises(ValueError, match="metric must be"):
        AnnIndex.build("hnsw", "cosine", data[0])


def other_backbone(seed=0):
    """Same PMA/IEM heads and config, one backbone weight changed."""
    model = tiny_d2llm(seed)
    with torch.no_grad():
        model.backbone.embed_tokens.weight[0] += 1.0
    return model


def test_a_model_with_another_backbone_but_the_same_heads_is_refused_after_save_and_load(model, tmp_path):
    SearchIndex.build(model, {"a": "paris is in france", "b": "a cat sat"}).save(str(tmp_path / "idx"))
    loaded = SearchIndex.load(str(tmp_path / "idx"))
    # the same weights, built again: accepted
    assert len(loaded.search(tiny_d2llm(), ["france"], 1, precision="fp32")[0]) == 1
    with pytest.raises(SearchError, match="another model"):
        loaded.search(other_backbone(), ["france"], 1, precision="fp32")
    changed_config = tiny_d2llm()
    changed_config.config.max_seq_length = 7
    with pytest.raises(SearchError, match="another model"):
        loaded.search(changed_config, ["france"], 1, precision="fp32")


def test_cli_refuses_another_backbone_with_one_line(tmp_path, capsys):
    folder = write_beir(tmp_path / "beir")
    save_tiny_d2llm(tmp_path / "ckpt")
    other_backbone().save_pretrained(tmp_path / "other")
    idx = str(tmp_path / "idx")
    assert main(["build", "--model", str(tmp_path / "ckpt"), "--corpus", str(folder / "corpus.jsonl"),
                 "--index", idx, "--ann", "hnsw"]) == 0
    capsys.readouterr()
    assert main(["query", "--model", str(tmp_path / "other"), "--index", idx, "--query", "a", "--two-stage"]) == 2
    err = capsys.readouterr().err
    assert error_lines(err) == [error_lines(err)[0]] and "another model" in err and "Traceback" not in err


@pytest.mark.parametrize("rows, message", [
    ([{"_id": "d1", "title": "", "text": "again"}], r"more\.jsonl: id 'd1' is already in the index"),
    ([], r"more\.jsonl: the corpus has no documents"),
    ([{"_id": "x1", "title": "t"}], r"more\.jsonl:1: missing column 'text'"),
    ([{"_id": "x1", "text": "a"}, {"_id": "x1", "text": "b"}], r"more\.jsonl:2: duplicate _id 'x1'"),
])
def test_cli_add_with_bad_rows_exits_2_naming_file_and_row_and_keeps_the_index(tmp_path, capsys, rows, message):
    folder = write_beir(tmp_path / "beir")
    checkpoint = save_tiny_d2llm(tmp_path / "ckpt")
    idx = str(tmp_path / "idx")
    assert main(["build", "--model", str(checkpoint), "--corpus", str(folder / "corpus.jsonl"), "--index", idx]) == 0
    capsys.readouterr()
    more = write_jsonl(tmp_path / "more.jsonl", rows)
    assert main(["add", "--model", str(checkpoint), "--corpus", str(more), "--index", idx]) == 2
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 1 and "Traceback" not in err
    assert re.search(message, error_lines(err)[0]), err
    assert len(SearchIndex.load(idx)) == 6


def test_cli_build_of_an_empty_corpus_exits_2(tmp_path, capsys):
    checkpoint = save_tiny_d2llm(tmp_path / "ckpt")
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    assert main(["build", "--model", str(checkpoint), "--corpus", str(empty), "--index", str(tmp_path / "i")]) == 2
    assert "empty.jsonl: the corpus has no documents" in capsys.readouterr().err
    assert not (tmp_path / "i").exists()


@pytest.mark.parametrize("ann", [None, "ivf"])
def test_a_save_killed_before_its_commit_leaves_the_old_index_readable(model, data, tmp_path, monkeypatch, ann):
    passages, _ = data
    folder = str(tmp_path / "idx")
    index = SearchIndex.from_embeddings(model, ids(100), passages[:100], ann=ann)
    index.save(folder)
    index.add_embeddings(model, ids(50, "new"), passages[100:150])

    def killed(*args):
        raise KeyboardInterrupt  # the process dies after writing the new data files, before index.json moves

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        index.save(folder)
    monkeypatch.undo()
    old = SearchIndex.load(folder)
    assert old.ids == ids(100) and torch.equal(old.embeddings, passages[:100].half())
    index.save(folder)  # the next save commits and clears the killed one's files
    meta = json.loads((tmp_path / "idx" / META_FILE).read_text())
    assert sorted(os.listdir(folder)) == sorted([META_FILE, *meta["files"].values()])
    assert len(SearchIndex.load(folder)) == 150
