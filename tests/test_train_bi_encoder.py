"""train.py --objective bi-encoder: the BeLLM-style baseline on the same scored batches as the D2LLM student."""

from __future__ import annotations

import math

import pytest
import torch
import yaml
from scored_fixture import scored_dataset

import train
from datasets import Dataset
from baselines.bi_encoder import BELLM_PROMPT, BiEncoder, bi_encoder_loss_terms, pair_loss_terms
from baselines.trainer_bi_encoder import BiEncoderTrainer
from evaluation.models import detect_model_type
from preprocess.pair_batches import pair_batches
from trainer_d2llm import D2LLMTrainingArguments


def _config(tmp_path, backbone: str, scored: str, **overrides) -> str:
    values = {"objective": "bi-encoder", "model_name_or_path": backbone, "train_dataset": scored,
              "output_dir": str(tmp_path / "out"), "bidirectional_layers": 1, "lora_r": 4, "lora_alpha": 8,
              "lora_dropout": 0.0, "max_steps": 6, "logging_steps": 1, "save_strategy": "no", "report_to": [],
              "use_cpu": True, "disable_tqdm": True, "learning_rate": 3e-3, **overrides}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(values))
    return str(config)


def test_bi_encoder_objective_trains_and_saves_a_bi_encoder_folder(tmp_path, backbone, scored):
    trainer = train.main([_config(tmp_path, backbone, scored)])
    assert isinstance(trainer, BiEncoderTrainer)
    logged = [entry for entry in trainer.state.log_history if "total" in entry]
    assert len(logged) == 6 and {"info_nce", "angle"} <= set(logged[0])
    assert all(math.isfinite(entry["total"]) for entry in logged)
    out = str(tmp_path / "out")
    assert detect_model_type(out) == "bi-encoder"
    reloaded = BiEncoder.from_pretrained(out, attn_implementation="sdpa")
    assert reloaded.settings.prompt_template == BELLM_PROMPT and reloaded.settings.bidirectional_layers == 1
    trained = trainer.model.eval()
    texts = ["the cat sat on the mat", "a big red apple"]
    torch.testing.assert_close(reloaded.encode(texts), trained.encode(texts), rtol=1e-4, atol=1e-5)


def test_activation_checkpointing_gives_the_same_lora_gradients(tmp_path, backbone):
    dataset = scored_dataset(num_batches=1, tasks=["symmetric"])
    gradients = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        encoder = BiEncoder.from_pretrained(backbone, attn_implementation="sdpa").enable_lora(r=4, lora_dropout=0.0)
        for name, parameter in encoder.named_parameters():
            if "lora_B" in name:  # peft starts B at zero, which would leave A without gradient
                torch.nn.init.normal_(parameter, std=0.1)
        args = D2LLMTrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True,
                                      activation_checkpointing=checkpointing)
        trainer = BiEncoderTrainer(encoder, args, dataset, loss_weights={"temperature": 0.05})
        if checkpointing:
            encoder.activation_checkpointing_enable({"use_reentrant": True})
            assert encoder.backbone.get_base_model().is_activation_checkpointing
        encoder.train()
        trainer.compute_loss(encoder, trainer.data_collator([dataset[0]])).backward()
        gradients.append({name: p.grad.clone() for name, p in encoder.named_parameters() if p.requires_grad})
    assert gradients[0] and all(gradient.abs().sum() > 0 for gradient in gradients[1].values())
    for name, gradient in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], gradient, rtol=1e-4, atol=1e-6)


def test_bi_encoder_objective_trains_with_activation_checkpointing(tmp_path, backbone, scored):
    trainer = train.main([_config(tmp_path, backbone, scored, max_steps=2, activation_checkpointing=True)])
    assert trainer.model.backbone.get_base_model().is_activation_checkpointing
    assert all(math.isfinite(entry["total"]) for entry in trainer.state.log_history if "total" in entry)


def test_trainer_loss_equals_the_text_level_bi_encoder_loss(tmp_path, backbone):
    dataset = scored_dataset(num_batches=1, tasks=["symmetric"])
    encoder = BiEncoder.from_pretrained(backbone, attn_implementation="sdpa", prompt_template=BELLM_PROMPT).eval()
    args = D2LLMTrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    weights = {"temperature": 0.05, "ibn_weight": 1.0, "angle_weight": 0.5, "cosine_weight": 0.25}
    trainer = BiEncoderTrainer(encoder, args, dataset, loss_weights=weights)
    inputs = trainer.data_collator([dataset[0]])
    row = dataset[0]
    size = len(row["queries"])
    with torch.no_grad():
        loss = trainer.compute_loss(encoder, inputs)
        queries, positives = encoder.embed(row["queries"]), encoder.embed(row["positives"])
        hard = encoder.embed([text for texts in row["negatives"] for text in texts]).view(size, -1, queries.shape[-1])
        expected = sum(bi_encoder_loss_terms(queries, positives, hard, **weights).values())
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


GRADED = Dataset.from_list([
    {"query": f"sentence number {i} about a cat", "passage": f"another sentence {i % 3} about a dog",
     "target": (i % 6) / 5, "task": "symmetric", "language": "en"} for i in range(14)])


def test_pair_batches_hold_b_pairs_of_one_task_drop_the_short_rest_and_are_seeded():
    mixed = Dataset.from_list(list(GRADED) + [{**row, "task": "asymmetric"} for row in list(GRADED)[:5]])
    batches = pair_batches(mixed, batch_size=4, seed=0)
    assert sorted(batches["task"]) == ["asymmetric"] + ["symmetric"] * 3  # 14 // 4 and 5 // 4
    assert all(len(row["queries"]) == len(row["positives"]) == len(row["targets"]) == 4 for row in batches)
    pairs = {(row["query"], row["passage"]): row["target"] for row in mixed}
    assert all(pairs[(q, p)] == pytest.approx(t) for row in batches
               for q, p, t in zip(row["queries"], row["positives"], row["targets"]))
    assert pair_batches(mixed, 4, seed=0)["queries"] == batches["queries"]
    assert pair_batches(mixed, 4, seed=1)["queries"] != batches["queries"]


def test_trainer_on_graded_pair_batches_computes_the_pair_ranking_terms(tmp_path, backbone):
    dataset = pair_batches(GRADED, batch_size=4, seed=0)
    encoder = BiEncoder.from_pretrained(backbone, attn_implementation="sdpa").eval()
    args = D2LLMTrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    weights = {"temperature": 0.05, "ibn_weight": 0.0, "angle_weight": 1.0, "cosine_weight": 1.0}
    trainer = BiEncoderTrainer(encoder, args, dataset, loss_weights=weights)
    row = dataset[0]
    with torch.no_grad():
        loss = trainer.compute_loss(encoder, trainer.data_collator([row]))
        expected = sum(pair_loss_terms(encoder.embed(row["queries"]), encoder.embed(row["positives"]),
                                       torch.tensor(row["targets"]), **weights).values())
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="set --ibn_weight 0"):
        BiEncoderTrainer(encoder, args, dataset, loss_weights={**weights, "ibn_weight": 1.0})


def test_train_py_trains_a_bi_encoder_on_graded_pairs_with_cosent(tmp_path, backbone):
    folder = tmp_path / "pairs"
    pair_batches(GRADED, batch_size=4, seed=0).save_to_disk(str(folder))
    trainer = train.main([_config(tmp_path, backbone, str(folder), max_steps=3, ibn_weight=0.0, angle_weight=0.0,
                                  cosine_weight=1.0)])
    logged = [entry for entry in trainer.state.log_history if "total" in entry]
    assert len(logged) == 3 and set(logged[0]) >= {"cosine"} and "info_nce" not in logged[0]
    assert detect_model_type(str(tmp_path / "out")) == "bi-encoder"


def test_unknown_objective_and_eval_set_with_bi_encoder_are_refused(tmp_path, backbone, scored):
    with pytest.raises(ValueError, match="objective must be one of"):
        train.parse_arguments([_config(tmp_path, backbone, scored, objective="cross-encoder")])
    with pytest.raises(ValueError, match="eval_dataset is not supported"):
        train.main([_config(tmp_path, backbone, scored, eval_dataset=scored)])
    assert not (tmp_path / "out").exists()
