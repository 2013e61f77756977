"""The mteb 2.x encoder wrapper: mteb's own evaluators score with the IEM, on mteb's offline mock tasks."""

from __future__ import annotations

import mteb
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
    encoder = D2LLMEncoder(model)
    results = mteb.evaluate(encoder, [MockSTSTask(), MockPairClassificationTask(), MockRetrievalTask()],
                            cache=None, show_progress_bar=False)
    scores = {result.task_name: result.scores["test"][0] for result in results.task_results}
    assert set(scores) == {"MockSTSTask", "MockPairClassificationTask", "MockRetrievalTask"}
    assert ("similarity_pairwise", "symmetric") in calls
    assert ("similarity", "asymmetric") in calls
    assert not any(name == "similarity" and task == "symmetric" for name, task in calls)
    assert 0 <= scores["MockRetrievalTask"]["ndcg_at_10"] <= 1


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
