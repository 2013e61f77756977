"""Teacher adaptation as a Trainer stage: training rows per objective, the collator's prompt layout, resuming a
killed run, starting over on other settings, keeping the best checkpoint, and full fine-tuning saved and loaded."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from teacher_tiny import tiny_mined, tiny_teacher
from test_teacher_adapt import pet_pairs
from tiny import PICKLES, tiny_llama, tiny_tokenizer
from transformers import LlamaForCausalLM

from preprocess.readers import DataError
from teacher import adapt as adapt_module
from teacher.adapt import AdaptConfig, adapt, add_lora, build_training_rows, save_adapter
from teacher.adapt_data import TeacherCollator, group_rows, pair_rows
from teacher.model import YesNoTeacher
from teacher.trainer import TeacherTrainer

REPO = Path(__file__).resolve().parents[1]


def test_graded_rows_are_unweighted_and_symmetric_pairs_come_in_both_orders():
    pairs = pet_pairs().select(range(6))
    asymmetric = Dataset.from_list([{**pairs[0], "task": "asymmetric"}], features=pairs.features)
    rows = build_training_rows([pairs, asymmetric], [], AdaptConfig(pair_objective="graded"))
    assert len(rows) == 2 * 6 + 1 and set(sum(rows["weights"], [])) == {1.0}
    forward = {(row["query"], row["passages"][0]) for row in rows if row["task"] == "symmetric"}
    assert forward == {(p["query"], p["passage"]) for p in pairs} | {(p["passage"], p["query"]) for p in pairs}
    pointwise = build_training_rows([pairs], [], AdaptConfig(pair_objective="pointwise"))
    assert len(pointwise) == 6 and len(set(sum(pointwise["weights"], []))) == 2


def test_listwise_rows_are_groups_of_the_positive_and_the_first_k_negatives():
    mined = tiny_mined(3, k=4)
    rows = build_training_rows([], [("mined", mined)], AdaptConfig(negatives=2))
    assert rows["kind"] == ["group"] * 3
    for row, example in zip(rows, mined):
        assert row["passages"] == [example["positive"], *example["negatives"][:2]]
        assert row["targets"] == [1.0, 0.0, 0.0]
    pointwise = build_training_rows([], [("mined", mined)], AdaptConfig(mined_objective="pointwise"))
    assert pointwise["kind"] == ["pair"] * 6


def test_a_mined_row_with_too_few_negatives_or_an_empty_text_is_refused_by_row_and_field():
    with pytest.raises(DataError, match=r"mined, row 1: field 'negatives' has 2 texts, fewer than the 3"):
        group_rows(tiny_mined(2, k=2), 3, "mined")
    empty = tiny_mined(2, k=3).map(lambda row, index: {"query": "" if index == 1 else row["query"]},
                                   with_indices=True)
    with pytest.raises(DataError, match=r"mined, row 2: field 'query'"):
        group_rows(empty, 3, "mined")


def test_the_collator_lays_out_pairs_then_groups_left_padded_with_their_indices():
    teacher = tiny_teacher()
    rows = [*pair_rows(pet_pairs().select(range(2))), *group_rows(tiny_mined(2, k=2), 2)]
    batch = TeacherCollator(teacher)(rows)
    assert batch["pair_index"].tolist() == [0, 1]
    assert batch["group_index"].tolist() == [[2, 3, 4], [5, 6, 7]]
    assert batch["targets"].tolist() == [rows[0]["targets"][0], rows[1]["targets"][0], 1, 0, 0, 1, 0, 0]
    assert (batch["attention_mask"][:, -1] == 1).all()  # left padding: every prompt ends at the last column
    expected = teacher.encode_pairs([rows[2]["query"]] * 3, rows[2]["passages"], "symmetric")
    for row, ids in zip(range(2, 5), expected):
        assert batch["input_ids"][row, -len(ids):].tolist() == ids
        assert batch["attention_mask"][row].sum().item() == len(ids)


def fresh(config: AdaptConfig) -> YesNoTeacher:
    teacher = tiny_teacher(seed=1)
    add_lora(teacher, config)
    return teacher


def test_a_killed_adaptation_resumes_from_its_last_checkpoint_with_the_same_losses(tmp_path, monkeypatch):
    config = AdaptConfig(max_steps=6, batch_size=8, lr=1e-2, seed=0, lora_r=4, lora_alpha=8, lora_dropout=0.0,
                         eval_steps=2)
    rows = pair_rows(pet_pairs())
    whole = adapt(fresh(config), rows, config).losses
    original = TeacherTrainer.compute_loss

    def killed_at_step_5(self, *args, **kwargs):
        if self.state.global_step == 5:
            raise KeyboardInterrupt("killed")
        return original(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(TeacherTrainer, "compute_loss", killed_at_step_5)
        with pytest.raises(KeyboardInterrupt):
            adapt(fresh(config), rows, config, checkpoint_dir=tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "checkpoint-4" / "adapter_model.safetensors").is_file()
    assert not [path for pattern in PICKLES for path in (tmp_path / "ckpt").rglob(pattern)]  # no pickle
    stored = {path.name for path in (tmp_path / "ckpt" / "checkpoint-4").iterdir()}
    assert {"optimizer.safetensors", "scheduler.json", "rng_state.safetensors"} <= stored
    resumed = adapt(fresh(config), rows, config, checkpoint_dir=tmp_path / "ckpt")
    assert resumed.losses == pytest.approx(whole, rel=1e-4)
    assert resumed.steps_run == 2  # steps 5 and 6: the cost per prompt counts only what this call trained


def test_checkpoints_of_other_settings_are_not_resumed(tmp_path, caplog):
    config = AdaptConfig(max_steps=2, batch_size=8, lr=1e-2, seed=0, lora_r=4, lora_alpha=8, eval_steps=2)
    rows = pair_rows(pet_pairs())
    adapt(fresh(config), rows, config, checkpoint_dir=tmp_path / "ckpt")
    other = AdaptConfig(**{**config.__dict__, "lr": 5e-3})
    with caplog.at_level(logging.WARNING):
        result = adapt(fresh(other), rows, other, checkpoint_dir=tmp_path / "ckpt")
    assert "other settings: starting over" in caplog.text
    assert len(result.losses) == 2  # trained both steps again, not resumed past them


def test_the_best_checkpoint_by_the_dev_metric_is_the_one_kept(tmp_path):
    config = AdaptConfig(max_steps=6, batch_size=8, lr=1e-2, seed=0, lora_r=4, lora_alpha=8, lora_dropout=0.0,
                         eval_steps=2)
    dev = pet_pairs()
    teacher = fresh(config)
    result = adapt(teacher, pair_rows(pet_pairs()), config, dev_pairs=dev, checkpoint_dir=tmp_path / "ckpt")
    evaluated = {entry["step"]: entry["eval_pairs_average_precision"] for entry in result.log_history
                 if "eval_pairs_average_precision" in entry}
    assert sorted(evaluated) == [2, 4, 6]
    best_step = max(evaluated, key=lambda step: (evaluated[step], -step))
    assert result.best_metric == pytest.approx(evaluated[best_step])
    assert result.best_checkpoint.endswith(f"checkpoint-{best_step}")
    from teacher.evaluate import evaluate_pairs

    assert evaluate_pairs(teacher, dev)["average_precision"] == pytest.approx(evaluated[best_step], abs=1e-6)


def test_every_checkpoint_loads_as_an_adapter_that_scores_as_the_trainer_evaluated_it(tmp_path):
    model_dir = tmp_path / "tiny-llm"
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama()).save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    config = AdaptConfig(max_steps=6, batch_size=8, lr=1e-2, seed=0, lora_r=4, lora_alpha=8, lora_dropout=0.0,
                         eval_steps=2)
    # on the CPU in float32 wherever a GPU is visible: the checkpoints are scored the same way and compared at 1e-5
    teacher = YesNoTeacher.from_pretrained(str(model_dir), max_query_tokens=9, merge_adapter=False, device="cpu",
                                           dtype="float32")
    add_lora(teacher, config)
    dev = pet_pairs()
    result = adapt(teacher, pair_rows(pet_pairs()), config, dev_pairs=dev, checkpoint_dir=tmp_path / "ckpt",
                   keep_checkpoints=True)
    from teacher.evaluate import evaluate_pairs

    assert sorted(path.name for path in (tmp_path / "ckpt").glob("checkpoint-*")) == [
        "checkpoint-2", "checkpoint-4", "checkpoint-6"]  # all kept, not the Trainer's last two and the best
    for entry in (entry for entry in result.log_history if "eval_pairs_average_precision" in entry):
        checkpoint = tmp_path / "ckpt" / f"checkpoint-{entry['step']}"
        loaded = YesNoTeacher.from_pretrained(str(model_dir), adapter=str(checkpoint), device="cpu", dtype="float32")
        assert loaded.settings()["max_query_tokens"] == 9  # the trained token limits, not the defaults
        assert evaluate_pairs(loaded, dev)["average_precision"] == pytest.approx(
            entry["eval_pairs_average_precision"], abs=1e-5)


def test_a_fully_fine_tuned_teacher_saves_as_a_model_folder_that_loads_with_its_prompts(tmp_path):
    model_dir = tmp_path / "tiny-llm"
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama()).save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    teacher = YesNoTeacher.from_pretrained(str(model_dir), max_query_tokens=7, device="cpu", dtype="float32")
    config = AdaptConfig(method="full", max_steps=2, batch_size=8, lr=1e-3, seed=0)
    add_lora(teacher, config)
    before = teacher.score(["the cat sat"], ["a cat ran"], "symmetric")
    adapt(teacher, pair_rows(pet_pairs()), config)
    after = teacher.score(["the cat sat"], ["a cat ran"], "symmetric")
    assert not torch.allclose(before, after)
    save_adapter(teacher, tmp_path / "full", {})
    loaded = YesNoTeacher.from_pretrained(str(tmp_path / "full"), device="cpu", dtype="float32")
    assert loaded.settings()["max_query_tokens"] == 7
    assert torch.allclose(loaded.score(["the cat sat"], ["a cat ran"], "symmetric"), after, atol=1e-5)


def test_the_command_skips_a_rerun_with_the_same_settings_and_refuses_bad_rows(tmp_path):
    model_dir = tmp_path / "tiny-llm"
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama()).save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"sentence1": f"the {w} sat", "sentence2": f"a {w} ran", "score": s}) + "\n"
                             for w, s in (("cat", 5.0), ("dog", 1.0), ("bird", 4.0), ("fish", 0.5))))
    command = ["--teacher", str(model_dir), "--output", str(tmp_path / "adapter"), "--train-pairs", str(pairs),
               "--batch-size", "4", "--lora-r", "4", "--dtype", "float32", "--pair-objective", "graded"]
    adapt_module.main(command)
    report = json.loads((tmp_path / "adapter" / adapt_module.REPORT_FILE).read_text())
    assert report["train_size"] == 8 and report["settings"]["config"]["pair_objective"] == "graded"
    assert not (tmp_path / "adapter.checkpoints").exists()
    stamp = (tmp_path / "adapter" / adapt_module.REPORT_FILE).stat().st_mtime_ns
    adapt_module.main(command)
    assert (tmp_path / "adapter" / adapt_module.REPORT_FILE).stat().st_mtime_ns == stamp
    adapt_module.main([*command[:2], "--output", str(tmp_path / "kept"), *command[4:], "--keep-checkpoints"])
    assert (tmp_path / "kept.checkpoints" / "checkpoint-2" / "adapter_model.safetensors").is_file()

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"sentence1": "a", "sentence2": "b", "score": 4}) + "\n"
                   + json.dumps({"sentence1": "c", "sentence2": "d", "score": 7}) + "\n")
    for path, expected in ((bad, "bad.jsonl:2: score 7"), (tmp_path / "missing.jsonl", "missing.jsonl")):
        result = subprocess.run([sys.executable, "-m", "teacher.adapt", *command[:4], "--train-pairs", str(path)],
                                cwd=REPO, capture_output=True, text=True)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and expected in lines[0], result.stderr
