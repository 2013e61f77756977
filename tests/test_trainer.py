"""D2LLMTrainer, the collator, the fixed-batch sampler and input validation, on a tiny Llama student."""

from __future__ import annotations

import math

import pytest
import torch

from data_collator import D2LLMDataCollator, FixedBatchSampler, ScoredBatchError, validate_scored_dataset
from scored_fixture import scored_dataset, scored_rows, tiny_student, to_dataset
from tiny import tiny_tokenizer
from distil.losses import (
    DIAGNOSTICS,
    LOSS_COMPONENTS,
    contrastive_imitation_loss,
    feature_imitation_loss,
    listwise_distillation_loss,
    rank_imitation_loss,
    teacher_probabilities,
    teacher_scores,
)
from trainer_d2llm import TRAINABLE_STATE_FILE, D2LLMTrainer, D2LLMTrainingArguments, load_trainable_state

TASKS = ["symmetric", "asymmetric"]


def _args(output_dir, **overrides) -> D2LLMTrainingArguments:
    values = dict(output_dir=str(output_dir), report_to=[], disable_tqdm=True, use_cpu=True, logging_steps=1,
                  save_strategy="no", learning_rate=1e-3, seed=0)
    values.update(overrides)
    return D2LLMTrainingArguments(**values)


def _step_losses(trainer: D2LLMTrainer) -> dict[int, dict[str, float]]:
    return {entry["step"]: entry for entry in trainer.state.log_history if "total" in entry}


# ---------------------------------------------------------------------- collator
def test_collator_encodes_queries_positives_then_negatives_row_by_row_with_instructions():
    row = scored_rows(num_batches=1, batch_size=3, num_negatives=2)[0]
    collator = D2LLMDataCollator(tiny_tokenizer(), TASKS, query_instructions={"symmetric": "query "},
                                 passage_instructions={"symmetric": "passage "})
    batch = collator([row])
    texts = [collator.tokenizer.decode(ids, skip_special_tokens=True) for ids in batch["input_ids"]]
    expected = ([f"query {q}" for q in row["queries"]] + [f"passage {p}" for p in row["positives"]]
                + [f"passage {n}" for negatives in row["negatives"] for n in negatives])
    assert texts == expected
    assert batch["input_ids"].shape[0] == 3 * (2 + 2) and batch["attention_mask"].shape == batch["input_ids"].shape
    assert batch["teacher_hard_logits"].shape == (3, 3, 2)
    assert batch["teacher_inbatch_logits"].shape == (3, 3, 2)
    assert batch["teacher_feature_cosine"].shape == (3, 3, 3)
    assert batch["task_id"].item() == TASKS.index(row["task"])


@pytest.mark.parametrize("side", ["left", "right"])
def test_collator_pads_every_text_on_the_tokenizers_side_and_masks_exactly_the_padding(side):
    row = scored_rows(num_batches=1, batch_size=3, num_negatives=2)[0]
    tokenizer = tiny_tokenizer(padding_side=side)
    collator = D2LLMDataCollator(tokenizer, TASKS, query_instructions={row["task"]: "query about the "})
    batch = collator([row])
    unpadded = [tokenizer(text)["input_ids"] for text in collator.texts(row)]
    width = max(len(ids) for ids in unpadded)
    assert len({len(ids) for ids in unpadded}) > 1  # some texts are padded
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (3 * (2 + 2), width)
    for ids, mask, expected in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist(), unpadded):
        padding = width - len(expected)
        if side == "left":
            assert ids == [tokenizer.pad_token_id] * padding + expected and mask == [0] * padding + [1] * len(expected)
        else:
            assert ids == expected + [tokenizer.pad_token_id] * padding and mask == [1] * len(expected) + [0] * padding


def test_collator_takes_exactly_one_stored_batch():
    rows = scored_rows(num_batches=2)
    with pytest.raises(ValueError, match="per_device_train_batch_size=1"):
        D2LLMDataCollator(tiny_tokenizer(), TASKS)(rows)


# ---------------------------------------------------------------------- bad input
def _set(path, value):
    def mutate(rows):
        row = rows[2]
        target = row
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


BAD_INPUTS = {
    "inconsistent K": (_set(("negatives", 1), ["the cat"]), "'negatives'"),
    "NaN teacher logit": (_set(("teacher_hard_logits", 0, 1, 0), float("nan")), "'teacher_hard_logits'"),
    "infinite teacher logit": (_set(("teacher_inbatch_logits", 3, 0, 1), float("inf")), "'teacher_inbatch_logits'"),
    "ragged teacher logits": (_set(("teacher_hard_logits", 1), [[1.0, 0.0]]), "'teacher_hard_logits'"),
    "wrong cosine shape": (_set(("teacher_feature_cosine", 0), [[1.0]]), "'teacher_feature_cosine'"),
    "a batch mixing tasks": (_set(("task",), "symmetric+asymmetric"), "'task'"),
    "unknown task": (_set(("task",), "clustering"), "'task'"),
    "empty query": (_set(("queries", 0), ""), "'queries'"),
    "blank positive": (_set(("positives", 3), "   "), "'positives'"),
    "empty negative": (_set(("negatives", 0, 2), ""), "'negatives'"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_stored_batch_is_refused_naming_batch_and_column(name):
    mutate, column = BAD_INPUTS[name]
    rows = scored_rows(num_batches=4, batch_size=4, num_negatives=3)
    mutate(rows)
    with pytest.raises(ScoredBatchError) as error:
        validate_scored_dataset(to_dataset(rows), TASKS)
    assert "batch 2 (row 2)" in str(error.value) and column in str(error.value)


def test_missing_teacher_column_is_refused_by_name():
    dataset = scored_dataset(num_batches=2).remove_columns("teacher_inbatch_logits")
    with pytest.raises(ScoredBatchError, match="teacher_inbatch_logits"):
        validate_scored_dataset(dataset, TASKS)


def test_batch_size_disagreeing_with_configuration_is_refused():
    dataset = scored_dataset(num_batches=2, batch_size=4, num_negatives=3)
    assert validate_scored_dataset(dataset, TASKS) == (4, 3)
    with pytest.raises(ScoredBatchError, match=r"batch 0 \(row 0\).*'queries'.*configured fixed batch size is 8"):
        validate_scored_dataset(dataset, TASKS, batch_size=8)
    with pytest.raises(ScoredBatchError, match=r"'negatives'.*configured number is 5"):
        validate_scored_dataset(dataset, TASKS, num_negatives=5)
    uneven = scored_rows(num_batches=2, batch_size=4) + scored_rows(num_batches=1, batch_size=3, seed=1)
    with pytest.raises(ScoredBatchError, match=r"row 2\).*'queries' holds 3 queries"):
        validate_scored_dataset(to_dataset(uneven), TASKS)


def test_trainer_refuses_bad_data_before_writing_anything(tmp_path):
    rows = scored_rows(num_batches=3)
    rows[1]["teacher_hard_logits"][0][0][0] = float("nan")
    output_dir = tmp_path / "never-written"
    with pytest.raises(ScoredBatchError, match=r"batch 1 \(row 1\).*'teacher_hard_logits'"):
        D2LLMTrainer(tiny_student(), _args(output_dir), train_dataset=to_dataset(rows))
    assert not output_dir.exists()


def test_arguments_require_one_stored_batch_per_device_step(tmp_path):
    with pytest.raises(ValueError, match="per_device_train_batch_size=4.*exactly one stored fixed batch"):
        _args(tmp_path, per_device_train_batch_size=4)
    with pytest.raises(ValueError, match="ddp_find_unused_parameters must be False"):
        _args(tmp_path, ddp_find_unused_parameters=True)
    with pytest.raises(ValueError, match="tau_hard must be > 0"):
        _args(tmp_path, tau_hard=0.0)


# ---------------------------------------------------------------------- sampler
def test_sampler_shuffles_whole_batches_per_epoch_reproducibly():
    sampler = FixedBatchSampler(["symmetric"] * 8, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(8)) and list(sampler) == first
    sampler.set_epoch(1)
    assert sorted(list(sampler)) == list(range(8)) and list(sampler) != first


def test_sampler_gives_processes_of_one_step_the_same_task():
    tasks = ["symmetric", "asymmetric", "symmetric", "symmetric", "asymmetric"]
    sampler = FixedBatchSampler(tasks, num_replicas=2, seed=0)
    order = list(sampler)
    assert len(order) == len(sampler) == 6  # symmetric padded from 3 to 4 rows
    steps = [order[start : start + 2] for start in range(0, len(order), 2)]
    assert all(tasks[a] == tasks[b] for a, b in steps)
    assert set(order) == set(range(5))


# ---------------------------------------------------------------------- loss and gradients
def _one_batch(trainer: D2LLMTrainer, row) -> dict[str, torch.Tensor]:
    return trainer._prepare_inputs(trainer.data_collator([row]))


@torch.no_grad()
def _student_logits(model, inputs, size: int = 4, negatives: int = 3, task: str = "symmetric"):
    """``Z_ib [B, B]``, ``Z_h [B, 1+K]`` and the branch vectors ``y_S`` of one collated batch, computed by hand."""
    embeddings = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).embeddings
    q, p = embeddings[:size], embeddings[size : 2 * size]
    n = embeddings[2 * size :].view(size, negatives, -1)
    z_h, y_s = model.score(q[:, None], torch.cat([p[:, None], n], 1), task)
    return model.similarity(q, p, task), z_h, y_s


def _loss_with_hand_logits(tmp_path, **overrides):
    """``compute_loss`` of one fixture batch (B = 4, K = 3) in eval mode, with ``Z_ib``, ``Z_h``, ``y_S`` and the
    inputs to recompute it by hand."""
    model = tiny_student()
    dataset = scored_dataset(num_batches=1, batch_size=4, num_negatives=3)
    trainer = D2LLMTrainer(model, _args(tmp_path, **overrides), train_dataset=dataset)
    inputs = _one_batch(trainer, dataset[0])
    model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(model, inputs)
    return (loss, *_student_logits(model, inputs), inputs)


def test_compute_loss_is_the_sum_of_the_three_spec_losses(tmp_path):
    loss, z_ib, z_h, y_s, inputs = _loss_with_hand_logits(
        tmp_path, alpha=0.5, beta=0.7, gamma=0.3, eta=0.2, tau_inbatch=0.5, tau_hard=0.25, rank_scale=0.5,
        teacher_temperature=2.0)
    with torch.no_grad():
        s_h = teacher_probabilities(inputs["teacher_hard_logits"], 2.0)
        s_ib = teacher_probabilities(inputs["teacher_inbatch_logits"], 2.0)
        expected = (contrastive_imitation_loss(z_ib, z_h, s_h, alpha=0.5, tau_inbatch=0.5, tau_hard=0.25)
                    + rank_imitation_loss(z_h, s_h, z_ib, s_ib, beta=0.7, gamma=0.3, scale=0.5)
                    + feature_imitation_loss(y_s, inputs["teacher_feature_cosine"], eta=0.2))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_gradients_reach_lora_pma_and_the_task_branch_but_no_frozen_weight(tmp_path):
    model = tiny_student()
    dataset = scored_dataset(num_batches=1, tasks=["asymmetric"])
    trainer = D2LLMTrainer(model, _args(tmp_path), train_dataset=dataset)
    model.train()
    trainer.compute_loss(model, _one_batch(trainer, dataset[0])).backward()
    grads = {name: param.grad for name, param in model.named_parameters()}
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    assert all(grads[name] is None for name in grads if name not in trainable)  # frozen backbone weights
    lora_b = [name for name in trainable if "lora_B" in name]
    assert lora_b and all(grads[name].abs().sum() > 0 for name in lora_b)  # lora_A is 0-grad while B = 0
    for name in trainable:
        if name.startswith(("pma.", "iem.first", "iem.output", "iem.branches.asymmetric")):
            assert grads[name] is not None and grads[name].abs().sum() > 0, name
    assert all(grads[name] is None for name in trainable if name.startswith("iem.branches.symmetric"))


def test_heads_and_lora_get_separate_learning_rates(tmp_path):
    model = tiny_student()
    trainer = D2LLMTrainer(model, _args(tmp_path, learning_rate=1e-4, head_learning_rate=3e-3, weight_decay=0.1),
                           train_dataset=scored_dataset(num_batches=1))
    optimizer = trainer.create_optimizer()
    heads = {id(param) for module in (model.pma, model.iem) for param in module.parameters()}
    lora = {id(param) for name, param in model.named_parameters() if "lora_" in name}
    for group in optimizer.param_groups:
        ids = {id(param) for param in group["params"]}
        assert ids <= heads or ids <= lora
        assert group["lr"] == (3e-3 if ids <= heads else 1e-4)
    covered = {id(param) for group in optimizer.param_groups for param in group["params"]}
    assert covered == heads | lora


def test_training_logs_every_loss_component_next_to_the_total(tmp_path):
    trainer = D2LLMTrainer(tiny_student(), _args(tmp_path, max_steps=4, logging_steps=2, gradient_accumulation_steps=2),
                           train_dataset=scored_dataset(num_batches=8, tasks=TASKS))
    trainer.train()
    logged = _step_losses(trainer)
    assert sorted(logged) == [2, 4]
    for entry in logged.values():
        assert set(LOSS_COMPONENTS) | {"total", "loss"} <= set(entry)
        assert sum(entry[name] for name in LOSS_COMPONENTS) == pytest.approx(entry["total"], rel=1e-5)
        assert entry["loss"] == pytest.approx(entry["total"], rel=1e-4)


def test_compute_loss_adds_listwise_distillation_and_log_prior_weighting_when_asked(tmp_path):
    loss, z_ib, z_h, y_s, inputs = _loss_with_hand_logits(
        tmp_path, kd_weight=0.5, kd_teacher_temperature=2.0, kd_student_temperature=0.5, hard_weighting="log_prior",
        teacher_temperature=1.5)
    with torch.no_grad():
        s_h = teacher_probabilities(inputs["teacher_hard_logits"], 1.5)
        s_ib = teacher_probabilities(inputs["teacher_inbatch_logits"], 1.5)
        expected = (contrastive_imitation_loss(z_ib, z_h, s_h, hard_weighting="log_prior")
                    + rank_imitation_loss(z_h, s_h, z_ib, s_ib)
                    + feature_imitation_loss(y_s, inputs["teacher_feature_cosine"])
                    + listwise_distillation_loss(z_h, teacher_scores(inputs["teacher_hard_logits"]), z_ib,
                                                 teacher_scores(inputs["teacher_inbatch_logits"]), kd_weight=0.5,
                                                 tau_teacher=2.0, tau_student=0.5))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_training_logs_the_kd_term_and_the_card_names_its_settings(tmp_path):
    trainer = D2LLMTrainer(tiny_student(), _args(tmp_path, max_steps=2, kd_weight=0.5),
                           train_dataset=scored_dataset(num_batches=2))
    trainer.train()
    for entry in _step_losses(trainer).values():
        assert entry["kd"] > 0
        assert sum(entry[name] for name in LOSS_COMPONENTS) == pytest.approx(entry["total"], rel=1e-5)
    trainer.create_model_card()
    card = (tmp_path / "README.md").read_text()
    assert "kd_weight = 0.5" in card and "hard weighting spec" in card and "| kd |" in card


def test_training_logs_logit_diagnostics_of_the_batch_trained_on(tmp_path):
    dataset = scored_dataset(num_batches=1, batch_size=4, num_negatives=3)
    reference = tiny_student()  # the same initial weights as the trained one (seed 0)
    trainer = D2LLMTrainer(tiny_student(), _args(tmp_path, max_steps=2), train_dataset=dataset)
    z_ib, z_h, _ = _student_logits(reference, _one_batch(trainer, dataset[0]))
    trainer.train()
    logged = _step_losses(trainer)
    first, second = logged[1], logged[2]
    assert set(DIAGNOSTICS) <= set(first) and set(DIAGNOSTICS) <= set(second)
    assert first["logits_hard_mean"] == pytest.approx(z_h.mean().item(), rel=1e-4)
    assert first["logits_hard_std"] == pytest.approx(z_h.std(correction=0).item(), rel=1e-4)
    assert first["logits_inbatch_mean"] == pytest.approx(z_ib.mean().item(), rel=1e-4)
    assert first["logits_inbatch_std"] == pytest.approx(z_ib.std(correction=0).item(), rel=1e-4)
    assert first["logits_hard_mean"] < 0 < first["logits_hard_std"]  # distance start: negative, spread out
    weights = [[s if k == 0 else 1 - s for k, s in enumerate(row)]
               for row in teacher_probabilities(torch.tensor(dataset[0]["teacher_hard_logits"])).tolist()]
    share = sum(row[0] < min(row[1:]) for row in weights) / len(weights)
    assert first["positive_weight_lowest_share"] == pytest.approx(share) == second["positive_weight_lowest_share"]
    assert second["logits_hard_mean"] != first["logits_hard_mean"]  # step 2 reads the updated student


def test_train_py_options_reach_the_loss_weights(tmp_path):
    import train

    _, _, args = train.parse_arguments(["--train_dataset", "x", "--output_dir", str(tmp_path), "--use_cpu", "true",
                                        "--kd_weight", "0.5", "--kd_teacher_temperature", "2",
                                        "--kd_student_temperature", "0.1", "--hard_weighting", "log_prior"])
    weights = args.loss_weights
    assert (weights.kd_weight, weights.kd_teacher_temperature, weights.kd_student_temperature,
            weights.hard_weighting) == (0.5, 2.0, 0.1, "log_prior")
    _, _, defaults = train.parse_arguments(["--train_dataset", "x", "--output_dir", str(tmp_path), "--use_cpu", "true"])
    assert (defaults.loss_weights.kd_weight, defaults.loss_weights.hard_weighting) == (0.0, "spec")
    with pytest.raises(ValueError, match="kd_weight must be >= 0"):
        _args(tmp_path, kd_weight=-1.0)
    with pytest.raises(ValueError, match="kd_student_temperature must be > 0"):
        _args(tmp_path, kd_student_temperature=0.0)
    with pytest.raises(ValueError, match="hard_weighting must be one of"):
        _args(tmp_path, hard_weighting="centred")


# ---------------------------------------------------------------------- checkpoints
def _train_resumable(output_dir, dataset, resume_from=None, perturb=False) -> D2LLMTrainer:
    model = tiny_student(lora_dropout=0.1, iem_dropout=0.1)
    if perturb:  # the checkpoint, not the fresh initialisation, must decide the resumed run
        with torch.no_grad():
            for param in model.parameters():
                if param.requires_grad:
                    param.add_(torch.randn_like(param))
    args = _args(output_dir, max_steps=5, save_strategy="steps", save_steps=2, learning_rate=1e-2)
    trainer = D2LLMTrainer(model, args, train_dataset=dataset)
    trainer.train(resume_from_checkpoint=resume_from)
    return trainer


def test_resumed_run_continues_with_the_same_losses(tmp_path):
    dataset = scored_dataset(num_batches=3, tasks=TASKS)  # 5 steps cross into a second, reshuffled epoch
    full = _step_losses(_train_resumable(tmp_path / "full", dataset))
    checkpoint = tmp_path / "full" / "checkpoint-2"
    assert (checkpoint / TRAINABLE_STATE_FILE).is_file()
    resumed = _step_losses(_train_resumable(tmp_path / "resumed", dataset, resume_from=str(checkpoint), perturb=True))
    assert sorted(resumed) == [1, 2, 3, 4, 5]  # steps 1-2 come from the checkpoint's trainer state
    for step in (3, 4, 5):
        for name in LOSS_COMPONENTS + ("total",):
            assert resumed[step][name] == pytest.approx(full[step][name], rel=1e-5, abs=1e-7), (step, name)


def test_checkpoint_restores_every_trainable_weight_and_refuses_a_mismatch(tmp_path):
    trainer = D2LLMTrainer(tiny_student(seed=1), _args(tmp_path, max_steps=1, save_strategy="steps", save_steps=1,
                                                       learning_rate=1e-2),
                           train_dataset=scored_dataset(num_batches=1))
    trainer.train()
    trained = {name: param.detach().clone() for name, param in trainer.model.named_parameters() if param.requires_grad}
    fresh = tiny_student(seed=1)
    load_trainable_state(fresh, str(tmp_path / "checkpoint-1"))
    for name, param in fresh.named_parameters():
        if param.requires_grad:
            assert torch.equal(param, trained[name]), name
    assert any("lora_B" in name and trained[name].abs().sum() > 0 for name in trained)
    other_rank = tiny_student(lora=False)
    other_rank.enable_lora(r=2, lora_alpha=4)
    with pytest.raises(ValueError, match="does not match this model's trainable parameters"):
        load_trainable_state(other_rank, str(tmp_path / "checkpoint-1"))
    with pytest.raises(FileNotFoundError, match=TRAINABLE_STATE_FILE):
        load_trainable_state(fresh, str(tmp_path))


# ---------------------------------------------------------------------- learning
@torch.no_grad()
def _heldout_pair_accuracy(model, dataset) -> float:
    """Share of held-out (positive, hard negative) pairs the student orders like the teacher's positive."""
    collator = D2LLMDataCollator.from_model(model)
    model.eval()
    correct = total = 0
    for row in dataset:
        batch = collator([row])
        size, negatives = len(row["queries"]), len(row["negatives"][0])
        embeddings = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).embeddings
        queries, positives = embeddings[:size], embeddings[size : 2 * size]
        candidates = torch.cat([positives[:, None], embeddings[2 * size :].view(size, negatives, -1)], 1)
        scores, _ = model.score(queries[:, None], candidates, row["task"])
        correct += int((scores[:, :1] > scores[:, 1:]).sum())
        total += size * negatives
    return correct / total


def test_on_a_synthetic_task_the_loss_falls_and_heldout_ranking_improves(tmp_path):
    # from the small random IEM, so that the ranking starts near chance and must be learned (the default
    # distance init already ranks this task at ~0.9)
    model = tiny_student(lora=True, iem_hidden_size=128, iem_init="normal")
    train = scored_dataset(num_batches=96, batch_size=4, num_negatives=3, seed=0)
    heldout = scored_dataset(num_batches=8, batch_size=4, num_negatives=3, seed=123)
    before = _heldout_pair_accuracy(model, heldout)
    # contrastive temperatures 0.05: with the default 1.0 the tiny IEM's logits (~1e-3 at init) learn too slowly here
    args = _args(tmp_path, num_train_epochs=2, logging_steps=24, learning_rate=5e-4, head_learning_rate=5e-4,
                 tau_inbatch=0.05, tau_hard=0.05)
    trainer = D2LLMTrainer(model, args, train_dataset=train)
    trainer.train()
    totals = [entry["total"] for _, entry in sorted(_step_losses(trainer).items())]
    after = _heldout_pair_accuracy(model, heldout)
    assert all(math.isfinite(total) for total in totals)
    assert totals[-1] < totals[0] - 0.5, totals
    assert after > before + 0.2, (before, after)


def test_activation_checkpointing_is_non_reentrant_and_leaves_the_losses_unchanged(tmp_path):
    dataset = scored_dataset(num_batches=2)
    losses = {}
    for checkpointing in (False, True):
        trainer = D2LLMTrainer(tiny_student(), _args(tmp_path / str(checkpointing), max_steps=2,
                                                     activation_checkpointing=checkpointing), train_dataset=dataset)
        trainer.train()
        losses[checkpointing] = [entry["total"] for _, entry in sorted(_step_losses(trainer).items())]
    assert trainer.args.activation_checkpointing_kwargs == {"use_reentrant": False}
    layers = trainer.model.backbone_model().layers
    assert trainer.model.is_activation_checkpointing and all(layer.gradient_checkpointing for layer in layers)
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)


def test_a_mean_pooling_student_trains_its_iem_at_the_head_learning_rate(tmp_path):
    model = tiny_student(pooling="mean")
    trainer = D2LLMTrainer(model, _args(tmp_path, max_steps=1, head_learning_rate=1e-2),
                           train_dataset=scored_dataset(num_batches=1))
    before = model.iem.first.weight.detach().clone()
    trainer.train()
    rates = {group["initial_lr"] for group in trainer.optimizer.param_groups}
    assert model.pma is None and 1e-2 in rates
    assert not torch.equal(before, model.iem.first.weight)
