"""The mteb 2.x encoder wrapper: mteb's own evaluators score with the IEM, on mteb's offline mock tasks.

mteb is optional at run time but required by the set-up the README gives for the tests (``scripts/setup.sh``
installs it with pytest and ruff): without it this module fails to import instead of skipping, so that the
wrapper is never left untested unnoticed."""

from __future__ import annotations

import math

import mteb
import pytest
import torch
from evaluation_tiny import tiny_d2llm

from mteb.mocks.mock_tasks.pair_classification import MockPairClassificationTask  # noqa: E402
from mteb.mocks.mock_tasks.retrieval import MockRetrievalTask  # noqa: E402
from mteb.mocks.mock_tasks.sts import MockSTSTask  # noqa: E402

from evaluation.mteb_encoder import D2LLMEncoder, task_kind  # noqa: E402


def test_retrieval_types_are_asymmetric_and_the_rest_symmetric():
    assert [task_kind(t) for t in ("Retrieval", "Reranking", "InstructionRetrieval", "STS", "PairClassification")] \
        == ["asymmetric", "asymmetric", "asymmetric", "symmetric", "symmetric"]


def test_mteb_mock_tasks_run_offline_on_iem_scores(monkeypatch):
    model = tiny_d2llm()
    calls: list[tuple[str, str]] = []
    for name in ("similarity", "similarity_pairwise"):
        original = getattr(model, name)

        def spy(first, second, task="asymmetric", *args, _original=original, _name=name, **kwargs):
            calls.append((_name, task))
            return _original(first, second, task, *args, **kwargs)

        monkeypatch.setattr(model, name, spy)
    encoded: dict[str, list[str]] = {"encode_query": [], "encode_document": []}
    for name in encoded:
        original = getattr(model, name)

        def record(texts, *args, _original=original, _name=name, task="asymmetric", **kwargs):
            if task == "asymmetric":
                encoded[_name] += list(texts)
            return _original(texts, *args, task=task, **kwargs)

        monkeypatch.setattr(model, name, record)
    encoder = D2LLMEncoder(model)
    results = mteb.evaluate(encoder, [MockSTSTask(), MockPairClassificationTask(), MockRetrievalTask()],
                            cache=None, show_progress_bar=False)
    scores = {result.task_name: result.scores["test"][0] for result in results.task_results}
    assert set(scores) == {"MockSTSTask", "MockPairClassificationTask", "MockRetrievalTask"}
    assert ("similarity_pairwise", "symmetric") in calls
    assert ("similarity", "asymmetric") in calls
    assert not any(name == "similarity" and task == "symmetric" for name, task in calls)
    monkeypatch.undo()
    # the mock STS and pair-classification sets: the same two pairs, gold 1 (a translation) then 0
    first = ["This is a test sentence", "This is another test sentence"]
    second = ["dette er en test sætning", "denne her matche ikke den ovenstående"]
    with torch.no_grad():
        iem_pairs = model.similarity_pairwise(model.encode_query(first, task="symmetric", convert_to_tensor=True),
                                              model.encode_query(second, task="symmetric", convert_to_tensor=True),
                                              "symmetric").tolist()
    agrees = iem_pairs[0] > iem_pairs[1]  # two pairs: every rank correlation is +1 or -1
    assert scores["MockSTSTask"]["spearman"] == pytest.approx(1.0 if agrees else -1.0)
    assert scores["MockSTSTask"]["pearson"] == pytest.approx(1.0 if agrees else -1.0)
    pair_scores = scores["MockPairClassificationTask"]
    assert pair_scores["similarity_ap"] == pytest.approx(1.0 if agrees else 0.5)  # the positive ranked 1st or 2nd
    assert pair_scores["similarity_accuracy"] == pytest.approx(1.0 if agrees else 0.5)
    # the mock corpus: q1 -> d1 ("This is another positive sentence"), q2 ("another") -> d2; one relevant of two
    queries, documents = (list(dict.fromkeys(encoded[name])) for name in ("encode_query", "encode_document"))
    assert len(queries) == len(documents) == 2
    with torch.no_grad():
        iem = model.similarity(model.encode_query(queries, task="asymmetric", convert_to_tensor=True),
                               model.encode_document(documents, task="asymmetric", convert_to_tensor=True),
                               "asymmetric")
    gains = []
    for row, query in enumerate(queries):
        relevant = next(column for column, text in enumerate(documents) if ("another" in text) != ("another" in query))
        rank = 1 + int((iem[row] > iem[row, relevant]).sum())
        gains.append(1 / math.log2(1 + rank))
    assert scores["MockRetrievalTask"]["ndcg_at_10"] == pytest.approx(sum(gains) / len(gains), abs=1e-4)


def test_wrapper_similarity_is_the_model_similarity_of_the_last_task_kind():
    model = tiny_d2llm()
    encoder = D2LLMEncoder(model)
    first, second = torch.randn(3, model.config.embedding_size), torch.randn(4, model.config.embedding_size)
    for kind in ("asymmetric", "symmetric"):
        encoder.task = kind
        with torch.no_grad():
            torch.testing.assert_close(encoder.similarity(first.numpy(), second), model.similarity(first, second, kind))
            torch.testing.assert_close(encoder.similarity_pairwise(first, second[:3]),
                                       model.similarity_pairwise(first, second[:3], kind))
