"""Cost controls of teacher scoring: the dtype chosen from the hardware, scoring without in-batch pairs, short
prompts, and training refusing data without in-batch scores when the pairwise rank term needs them."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import concatenate_datasets
from scored_fixture import scored_rows, to_dataset
from teacher_tiny import tiny_mined, tiny_teacher
from test_train_cli import _config

import train
from common import hardware
from data_collator import ScoredBatchError, inbatch_scores_present
from teacher.model import YesNoTeacher
from teacher.prompts import PRESETS, load_prompts
from teacher.score import RUN_FILE, ScoringConfig, score_dataset

B, K = 4, 3


@pytest.mark.parametrize("flags, expected", [({"avx2", "fma"}, "float32"), ({"avx512f", "avx512_bf16"}, "bfloat16"),
                                             ({"avx512f", "amx_bf16", "amx_tile"}, "bfloat16")])
def test_auto_dtype_is_bfloat16_only_where_the_cpu_has_a_fast_bf16_path(monkeypatch, flags, expected):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
    choice = hardware.resolve_dtype("auto", "cpu")
    assert (choice.dtype, choice.requested, choice.fast_bf16) == (expected, "auto", expected == "bfloat16")
    assert choice.cpu_capability.startswith(torch.backends.cpu.get_cpu_capability())
    assert hardware.resolve_dtype("float32", "cpu").dtype == "float32"


def test_bfloat16_asked_for_on_a_cpu_without_fast_bf16_is_kept_but_warned(monkeypatch, caplog):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2"})
    with caplog.at_level("WARNING"):
        assert hardware.resolve_dtype("bfloat16", "cpu").dtype == "bfloat16"
    assert "no fast bf16 path" in caplog.text
    with pytest.raises(ValueError, match="dtype must be one of"):
        hardware.resolve_dtype("float16", "cpu")


def test_bfloat16_teacher_on_cpu_keeps_float32_weights_and_applies_the_answer_rows_in_float32():
    teacher = tiny_teacher()
    queries, passages = ["the cat sat", "a dog ran far", "the sun"], ["a cat sat", "the moon", "tea and milk"]
    reference = teacher.score(queries, passages, "symmetric")
    teacher.compute = hardware.resolve_dtype("bfloat16", "cpu")
    batch = teacher.collate(teacher.encode_pairs(queries[:1], passages[:1], "symmetric"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = teacher.model.model(**batch).last_hidden_state[:, -1].float()
    rows = teacher.model.lm_head.weight[list(teacher.answer_ids("symmetric"))]
    scored, features = teacher.score(queries, passages, "symmetric", return_features=True)
    assert next(teacher.model.parameters()).dtype == torch.float32 and features.shape == (3, 32)
    assert torch.allclose(scored[0], hidden[0] @ rows.T, atol=1e-5)  # bf16 decoder, float32 answer rows
    assert not torch.equal(scored, reference) and torch.allclose(scored, reference, atol=0.1)


@pytest.fixture(scope="module")
def rows():
    return concatenate_datasets([tiny_mined(8, K, "symmetric"), tiny_mined(8, K, "asymmetric")])


def test_scoring_without_inbatch_pairs_keeps_the_candidates_scores_and_marks_the_block_empty(rows, tmp_path):
    teacher = tiny_teacher()
    full = score_dataset(rows, teacher, tmp_path / "all", ScoringConfig(batch_size=B))
    calls = []
    original = teacher.score
    teacher.score = lambda queries, *args, **kwargs: calls.append(len(queries)) or original(queries, *args, **kwargs)
    light = score_dataset(rows, teacher, tmp_path / "none", ScoringConfig(batch_size=B, inbatch_scores="none"))
    assert sum(calls) == len(rows) * (1 + K)  # only each query's 1 + K candidates were scored
    assert light["teacher_inbatch_logits"] == [[]] * len(light)
    assert light["teacher_hard_logits"] == full["teacher_hard_logits"]
    assert light["teacher_feature_cosine"] == full["teacher_feature_cosine"]
    assert inbatch_scores_present(full) and not inbatch_scores_present(light)
    record = json.loads((tmp_path / "none" / RUN_FILE).read_text())
    assert record["inbatch_scores"] == "none"
    with pytest.raises(ValueError, match="inbatch_scores must be one of"):
        ScoringConfig(inbatch_scores="some")


def test_training_refuses_data_without_inbatch_scores_when_gamma_needs_them(tmp_path, backbone):
    rows = scored_rows(num_batches=3)
    for row in rows:
        row["teacher_inbatch_logits"] = []
    data = tmp_path / "scored-none"
    to_dataset(rows).save_to_disk(str(data))
    with pytest.raises(ScoredBatchError, match="column 'teacher_inbatch_logits' is empty.*gamma = 0.01"):
        train.main([_config(tmp_path, backbone, str(data))])
    assert not (tmp_path / "out").exists()
    trainer = train.main([_config(tmp_path, backbone, str(data), gamma=0.0)])
    logged = [entry for entry in trainer.state.log_history if "total" in entry]
    assert len(logged) == 2 and all(entry["ri_pairwise"] == 0.0 and entry["ci_inbatch"] > 0 for entry in logged)
    mixed = scored_rows(num_batches=2)
    mixed[1]["teacher_inbatch_logits"] = []
    with pytest.raises(ScoredBatchError, match="empty in some batches"):
        inbatch_scores_present(to_dataset(mixed))


def test_short_prompt_preset_keeps_the_instruction_after_the_passage_and_costs_fewer_tokens(tmp_path):
    teacher = tiny_teacher()
    teacher.tokenizer.add_tokens(sorted({word for prompts in PRESETS.values() for prompt in prompts["en"].values()
                                         for word in prompt.template.split()}))
    spec, short = load_prompts(), load_prompts(preset="short")
    for task in ("symmetric", "asymmetric"):
        head, _, tail = short["en"][task].split()
        assert tail.strip() and "{" not in tail
        teacher.prompts = spec
        long_ids = teacher.encode_pairs(["the cat"], ["a dog"], task)[0]
        teacher.prompts = short
        short_ids = teacher.encode_pairs(["the cat"], ["a dog"], task)[0]
        assert len(short_ids) * 2 < len(long_ids)
    with pytest.raises(ValueError, match="unknown prompt preset"):
        load_prompts(preset="tiny")


def test_from_pretrained_records_the_dtype_and_takes_a_prompt_preset(tmp_path):
    teacher = tiny_teacher()
    teacher.model.save_pretrained(tmp_path / "lm")
    teacher.tokenizer.save_pretrained(tmp_path / "lm")
    loaded = YesNoTeacher.from_pretrained(str(tmp_path / "lm"), dtype="float32", prompt_preset="short")
    assert loaded.compute.dtype == "float32" and loaded.compute.requested == "float32"
    assert loaded.prompts == load_prompts(preset="short")
    # the default dtype on the CPU (a GPU's is bfloat16): the device is named so that this holds on any machine
    assert YesNoTeacher.from_pretrained(str(tmp_path / "lm"), device="cpu").compute.dtype == "float32"
