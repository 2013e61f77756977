"""Teacher scoring of fixed batches: schema and shapes, batch ownership of S_ib, and resuming a killed run."""

from __future__ import annotations

import pytest
import torch
from datasets import concatenate_datasets, load_from_disk
from teacher_tiny import tiny_mined, tiny_teacher

from common.schema import SCORED_BATCH_FEATURES
from preprocess.mining import normalise
from teacher.score import ScoringConfig, plan_batches, score_dataset

B, K = 4, 3


@pytest.fixture(scope="module")
def teacher():
    return tiny_teacher()


@pytest.fixture(scope="module")
def rows():
    return concatenate_datasets([tiny_mined(9, K, "symmetric"), tiny_mined(6, K, "asymmetric")])


def test_scored_batches_have_the_agreed_schema_and_shapes(teacher, rows, tmp_path):
    scored = score_dataset(rows, teacher, tmp_path / "scored", ScoringConfig(batch_size=B, shard_batches=2))
    assert scored.features == SCORED_BATCH_FEATURES
    assert sorted(scored["batch_id"]) == list(range(len(scored)))
    assert sum(len(queries) for queries in scored["queries"]) == len(rows)
    for row in scored:
        b = len(row["queries"])
        assert 1 <= b <= B and len(row["positives"]) == b
        assert len(row["negatives"]) == b
        assert all(len(negatives) == K for negatives in row["negatives"])
        assert torch.tensor(row["teacher_hard_logits"]).shape == (b, 1 + K, 2)
        assert torch.tensor(row["teacher_inbatch_logits"]).shape == (b, b, 2)
        cosine = torch.tensor(row["teacher_feature_cosine"])
        assert cosine.shape == (b, 1 + K, 1 + K)
        assert torch.allclose(cosine, cosine.transpose(1, 2), atol=1e-5)
        assert torch.allclose(torch.diagonal(cosine, dim1=1, dim2=2), torch.ones(b, 1 + K), atol=1e-5)


def test_inbatch_logits_are_the_teachers_scores_of_that_batchs_pairs(teacher, rows, tmp_path):
    scored = score_dataset(rows, teacher, tmp_path / "scored", ScoringConfig(batch_size=B, shard_batches=3))
    for row in scored.select(range(3)):
        queries, positives = row["queries"], row["positives"]
        expected = teacher.score([q for q in queries for _ in positives], positives * len(queries), row["task"])
        assert torch.allclose(torch.tensor(row["teacher_inbatch_logits"]).reshape(-1, 2), expected, atol=1e-4)
        hard = torch.tensor(row["teacher_hard_logits"])
        assert torch.allclose(torch.diagonal(torch.tensor(row["teacher_inbatch_logits"]), dim1=0, dim2=1).T,
                              hard[:, 0], atol=1e-4)
        negatives = teacher.score(queries, [negatives[-1] for negatives in row["negatives"]], row["task"])
        assert torch.allclose(hard[:, -1], negatives, atol=1e-4)


def test_batches_hold_one_task_and_no_text_twice(rows):
    batches, dropped = plan_batches(rows.to_list(), B, seed=3)
    assert dropped == 0 and sorted(i for batch in batches for i in batch) == list(range(len(rows)))
    for batch in batches:
        assert len({rows[i]["task"] for i in batch}) == 1
        texts = [normalise(rows[i][column]) for i in batch for column in ("query", "positive")]
        assert len(texts) == len(set(texts))
    assert plan_batches(rows.to_list(), B, seed=3) == (batches, 0)


def test_drop_last_counts_the_rows_it_leaves_out(rows):
    batches, dropped = plan_batches(rows.to_list(), B, drop_last=True)
    assert all(len(batch) == B for batch in batches)
    assert dropped == len(rows) - B * len(batches) > 0


class CrashingTeacher:
    """Delegates to a teacher, records the queries it scores, and raises after ``calls`` scoring calls,
    like a process killed mid-run."""

    def __init__(self, teacher, calls: int = 10**9) -> None:
        self._teacher, self._calls, self.queries = teacher, calls, set()

    def __getattr__(self, name):
        return getattr(self._teacher, name)

    def score(self, queries, passages, task, **kwargs):
        if self._calls == 0:
            raise KeyboardInterrupt("killed")
        self._calls -= 1
        self.queries.update((query, task) for query in queries)
        return self._teacher.score(queries, passages, task, **kwargs)


def test_a_killed_run_resumes_to_the_same_dataset_scoring_nothing_twice(teacher, rows, tmp_path):
    config = ScoringConfig(batch_size=B, shard_batches=1)
    reference = score_dataset(rows, teacher, tmp_path / "reference", config)

    output, work = tmp_path / "resumed", tmp_path / "resumed.work"
    with pytest.raises(KeyboardInterrupt):  # each shard takes one or two scoring calls: dies in shard 2 or 3
        score_dataset(rows, CrashingTeacher(teacher, calls=3), output, config)
    done = [load_from_disk(str(path)) for path in sorted(work.glob("shard-*")) if ".tmp-" not in path.name]
    assert 1 <= len(done) < len(reference) and not output.exists()
    (work / f"shard-{len(done):05d}.tmp-99999").mkdir()  # a half-written shard left by the kill

    resuming = CrashingTeacher(teacher)
    resumed = score_dataset(rows, resuming, output, config)

    assert resumed.to_list() == reference.to_list()
    done_queries = {(query, task) for shard in done for queries, task in zip(shard["queries"], shard["task"])
                    for query in queries}
    assert resuming.queries == set(zip(rows["query"], rows["task"])) - done_queries  # nothing scored twice
    assert not work.exists()


def test_stopping_after_max_shards_resumes_later(teacher, rows, tmp_path):
    config = ScoringConfig(batch_size=B, shard_batches=2)
    reference = score_dataset(rows, teacher, tmp_path / "reference", config)
    assert score_dataset(rows, teacher, tmp_path / "out", config, max_shards=1) is None
    assert score_dataset(rows, teacher, tmp_path / "out", config).to_list() == reference.to_list()
    assert score_dataset(rows, teacher, tmp_path / "out", config).to_list() == reference.to_list()  # complete


def test_a_run_with_other_settings_refuses_the_existing_output(teacher, rows, tmp_path):
    score_dataset(rows, teacher, tmp_path / "out", ScoringConfig(batch_size=B))
    with pytest.raises(FileExistsError, match="not scored from these inputs"):
        score_dataset(rows, teacher, tmp_path / "out", ScoringConfig(batch_size=B, seed=1))


def test_processes_score_disjoint_shards_that_merge_into_the_single_process_dataset(teacher, rows, tmp_path):
    config = ScoringConfig(batch_size=B, shard_batches=1)
    reference = score_dataset(rows, teacher, tmp_path / "reference", config)
    output = tmp_path / "parallel"
    first, second = CrashingTeacher(teacher), CrashingTeacher(teacher)
    assert score_dataset(rows, first, output, config, process_index=0, num_processes=2) is None  # waits for 1
    assert score_dataset(rows, second, output, config, process_index=1, num_processes=2) is None  # never merges
    assert first.queries and second.queries and not first.queries & second.queries
    assert score_dataset(rows, teacher, output, config, process_index=0, num_processes=2).to_list() == \
        reference.to_list()


def test_the_teacher_is_named_by_its_content_so_a_retrained_adapter_is_another_teacher(tmp_path):
    from teacher.score import teacher_identity

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"weights 1")
    first = teacher_identity("HuggingFaceTB/SmolLM2-135M-Instruct", str(adapter))
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "adapter_model.safetensors").write_bytes(b"weights 1")
    assert teacher_identity("HuggingFaceTB/SmolLM2-135M-Instruct", str(copy)) == first  # where it lives: no matter
    (adapter / "adapter_model.safetensors").write_bytes(b"weights 2")  # retrained in place
    assert teacher_identity("HuggingFaceTB/SmolLM2-135M-Instruct", str(adapter)) != first
    assert first.startswith("HuggingFaceTB/SmolLM2-135M-Instruct|")  # a Hub id stands as itself
