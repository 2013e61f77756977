"""Teacher adaptation: LoRA on the yes/no logits makes a tiny teacher right, with balanced classes."""

from __future__ import annotations

import json
import math

import pytest
import torch
from datasets import Dataset
from teacher_tiny import tiny_mined, tiny_teacher
from transformers import LlamaForCausalLM

from preprocess.readers import PAIR_FEATURES
from teacher import adapt as adapt_module
from teacher.adapt import (AdaptConfig, adapt, add_lora, load_training_pairs, save_adapter, training_arguments,
                           with_lengths)
from teacher.adapt_data import pair_rows, pairs_from_mined, row_lengths
from teacher.evaluate import average_precision, evaluate_pairs, evaluate_reranking, ndcg_at_10
from teacher.model import PROMPTS_FILE, SETTINGS_FILE, YesNoTeacher
from teacher.objectives import class_weights
from teacher.trainer import TeacherTrainer
from tiny import tiny_llama, tiny_tokenizer

ANIMALS, FOOD = ["cat", "dog", "bird", "fish"], ["apple", "banana", "coffee", "tea"]


def pet_pairs() -> Dataset:
    """Yes when the passage names an animal: 16 positives, 16 negatives."""
    rows = [{"query": f"{word} is a pet", "passage": f"the {thing} sat", "target": float(thing in ANIMALS),
             "task": "symmetric", "language": "en"}
            for word in ("what", "who", "how", "which") for thing in ANIMALS + FOOD]
    return Dataset.from_list(rows, features=PAIR_FEATURES)


def accuracy(teacher, pairs: Dataset) -> float:
    probabilities = teacher.probability(pairs["query"], pairs["passage"], "symmetric")
    return ((probabilities > 0.5).float() == torch.tensor(pairs["target"])).float().mean().item()


def test_adaptation_on_a_tiny_task_raises_the_teachers_accuracy(tmp_path):
    teacher, pairs = tiny_teacher(seed=1), pet_pairs()
    before = accuracy(teacher, pairs)
    add_lora(teacher, AdaptConfig(lora_r=8, lora_alpha=16, lora_dropout=0.0))
    losses = adapt(teacher, pair_rows(pairs), AdaptConfig(epochs=10, batch_size=8, lr=1e-2, warmup_ratio=0.05,
                                                          seed=0)).losses
    after = accuracy(teacher, pairs)
    assert after >= 0.9 > before + 0.2
    assert sum(losses[-5:]) < sum(losses[:5])
    assert evaluate_pairs(teacher, pairs)["average_precision"] > 0.9

    save_adapter(teacher, tmp_path / "adapter", {"note": "test"})
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    assert (tmp_path / "adapter" / PROMPTS_FILE).exists()


def test_an_adapter_folder_appears_whole_and_loads_only_with_its_prompts_and_settings(tmp_path, monkeypatch):
    model_dir = tmp_path / "tiny-llm"
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama()).save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    teacher = YesNoTeacher.from_pretrained(str(model_dir), max_query_tokens=7, merge_adapter=False, device="cpu",
                                           dtype="float32")
    add_lora(teacher, AdaptConfig(lora_r=4, lora_alpha=8, lora_dropout=0.0))
    output = tmp_path / "adapter"

    def killed() -> dict:
        raise RuntimeError("killed before the settings file")

    with monkeypatch.context() as patch:
        patch.setattr(teacher, "settings", killed)
        with pytest.raises(RuntimeError, match="killed"):
            save_adapter(teacher, output, {})
    assert not output.exists()  # not an adapter without its settings
    save_adapter(teacher, output, {})
    assert YesNoTeacher.from_pretrained(str(model_dir), adapter=str(output)).settings()["max_query_tokens"] == 7

    for name in (PROMPTS_FILE, SETTINGS_FILE):
        saved = (output / name).read_bytes()
        (output / name).unlink()
        with pytest.raises(FileNotFoundError, match=name):
            YesNoTeacher.from_pretrained(str(model_dir), adapter=str(output))
        (output / name).write_bytes(saved)


def adapted(**options) -> tuple[YesNoTeacher, list[float]]:
    """A fresh tiny teacher after two epochs on the pet pairs with ``options`` of ``AdaptConfig``; its losses."""
    config = AdaptConfig(epochs=2, batch_size=8, lr=1e-2, seed=0, lora_r=4, lora_alpha=8, lora_dropout=0.0,
                         **options)
    teacher = tiny_teacher(seed=1)
    add_lora(teacher, config)
    return teacher, adapt(teacher, pair_rows(pet_pairs()), config).losses


def test_activation_checkpointing_leaves_the_adaptation_losses_unchanged():
    _, plain = adapted()
    teacher, checkpointed = adapted(activation_checkpointing=True)
    assert checkpointed == pytest.approx(plain, rel=1e-4)
    assert not teacher.model.is_activation_checkpointing


def test_bf16_autocast_adaptation_tracks_the_float32_losses_and_keeps_float32_weights():
    _, plain = adapted()
    teacher, autocast = adapted(bf16=True)
    assert autocast != plain
    assert autocast == pytest.approx(plain, abs=0.05)
    assert all(parameter.dtype == torch.float32 for parameter in teacher.model.parameters())


def test_a_teacher_on_the_cpu_trains_on_the_cpu_even_where_a_gpu_is_visible(monkeypatch):
    made = []

    def recorded(*args, **kwargs):
        made.append(training_arguments(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(adapt_module, "training_arguments", recorded)
    teacher = tiny_teacher(seed=1)
    config = AdaptConfig(max_steps=1, batch_size=8, lora_r=2, lora_alpha=4, seed=0)
    add_lora(teacher, config)
    adapt(teacher, pair_rows(pet_pairs()), config)
    assert made[0].use_cpu and made[0].device.type == "cpu" and teacher.device.type == "cpu"


def test_untrained_teacher_has_nothing_to_adapt():
    with pytest.raises(ValueError, match="add_lora"):
        teacher = tiny_teacher()
        for parameter in teacher.model.parameters():
            parameter.requires_grad_(False)
        adapt(teacher, pair_rows(pet_pairs()))


def test_class_weights_give_both_classes_equal_total_weight():
    targets = [1.0, 0.8, 0.0, 0.1, 0.2, 0.0]
    weights = class_weights(targets)
    positive = sum(w for w, t in zip(weights, targets) if t >= 0.5)
    assert positive == pytest.approx(sum(weights) - positive) and sum(weights) == pytest.approx(len(targets))


def test_mined_rows_become_one_positive_and_one_negative_pair_each():
    mined = tiny_mined(4, k=3)
    pairs = pairs_from_mined(mined, seed=0)
    assert pairs["target"] == [1.0, 0.0] * 4
    for row, negative in zip(mined, pairs.select(range(1, 8, 2))):
        assert negative["passage"] in row["negatives"] and negative["query"] == row["query"]
    assert pairs_from_mined(mined, seed=0).to_list() == pairs.to_list()


def test_pairs_with_score_and_label_are_read_by_the_chosen_layout(tmp_path):
    """SICK rows carry a relatedness score and an NLI label: auto reads the score, labelled the label."""
    rows = [{"sentence1": "a", "sentence2": "b", "score": 4.5, "label": "neutral"},
            {"sentence1": "c", "sentence2": "d", "score": 1.0, "label": "entailment"}]
    path = tmp_path / "sick.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    [graded], _ = load_training_pairs([str(path)], "symmetric", None, 0)
    assert graded["target"] == pytest.approx([0.9, 0.2])
    [labelled], _ = load_training_pairs([str(path)], "symmetric", None, 0, layout="labelled")
    assert labelled["target"] == [0.0, 1.0]
    [neutral], _ = load_training_pairs([str(path)], "symmetric", None, 0, layout="labelled",
                                       positive_labels=["neutral"])
    assert neutral["target"] == [1.0, 0.0]


def test_reranking_evaluation_ranks_each_querys_positives_among_its_negatives():
    teacher = tiny_teacher()
    mined = tiny_mined(3, k=3)
    metrics = evaluate_reranking(teacher, mined)
    assert metrics["queries"] == 3 and metrics["pairs"] == 12
    gains = []  # one relevant passage per query: NDCG@10 = 1 / log2(1 + its rank by p(yes))
    for row in mined:
        with torch.no_grad():
            scores = teacher.probability([row["query"]] * 4, [row["positive"], *row["negatives"]], "symmetric")
        rank = 1 + sum(float(score) > float(scores[0]) for score in scores[1:])
        gains.append(1 / math.log2(1 + rank))
    assert metrics["ndcg@10"] == pytest.approx(sum(gains) / len(gains), abs=1e-6)


def test_metrics_on_known_rankings():
    assert average_precision([0.9, 0.8, 0.1], [1, 0, 1]) == pytest.approx((1 + 2 / 3) / 2)
    assert ndcg_at_10([0.9, 0.8, 0.1], [False, True, False]) == pytest.approx(1 / 1.5849625)


def padded_prompt_tokens(config: AdaptConfig, rows: Dataset, folder) -> tuple[int, list[str]]:
    """Token positions (real and padding) over one epoch of the trainer's batches, and the queries seen."""
    teacher = tiny_teacher(seed=1)
    add_lora(teacher, config)
    trainer = TeacherTrainer(teacher, args=training_arguments(config, str(folder), None, use_cpu=True),
                             train_dataset=with_lengths(rows, config))
    total, seen = 0, []
    for batch in trainer.get_train_dataloader():
        total += batch["input_ids"].numel()
        seen += [teacher.tokenizer.decode(ids[mask.bool()]) for ids, mask in zip(batch["input_ids"],
                                                                                   batch["attention_mask"])]
    return total, seen


def test_length_grouped_batches_hold_less_padding_and_still_cover_every_row_once(tmp_path):
    rows = pair_rows(Dataset.from_list(
        [{"query": "the cat " * (1 + (7 * i) % 11), "passage": f"a dog number {i}", "target": float(i % 2),
          "task": "symmetric", "language": "en"} for i in range(64)], features=PAIR_FEATURES))
    lengths = row_lengths(rows)
    assert lengths[0] == len(rows[0]["query"]) + len(rows[0]["passages"][0])
    options = {"batch_size": 8, "seed": 0, "lora_r": 4, "lora_alpha": 8}
    grouped, seen_grouped = padded_prompt_tokens(AdaptConfig(group_by_length=True, **options), rows, tmp_path / "g")
    plain, seen_plain = padded_prompt_tokens(AdaptConfig(group_by_length=False, **options), rows, tmp_path / "p")
    assert grouped < 0.85 * plain
    assert sorted(seen_grouped) == sorted(seen_plain) and len(seen_grouped) == len(rows)


def test_a_training_file_edited_in_place_changes_the_run_settings_so_its_checkpoints_are_not_resumed(tmp_path):
    from teacher.adapt import parse_arguments, run_settings

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"sentence1": "a", "sentence2": "b", "score": 4}\n')
    arguments = ["--teacher", "HuggingFaceTB/SmolLM2-135M-Instruct", "--output", str(tmp_path / "out"),
                 "--train-pairs", str(pairs)]
    before = run_settings(parse_arguments(arguments)[0])
    assert run_settings(parse_arguments(arguments)[0]) == before
    pairs.write_text('{"sentence1": "a", "sentence2": "c", "score": 1}\n')  # same name, other content
    after = run_settings(parse_arguments(arguments)[0])
    assert after != before and after["contents"].keys() == {str(pairs)}  # a Hub id has no content to digest
