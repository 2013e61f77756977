"""The D2LLM student trained on pair batches with gold targets (no teacher): the CoSENT term against a plain loop,
the trainer's loss against text-level scoring, refusals, and train.py's head warm-up on graded pairs."""

from __future__ import annotations

import json
import math

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from scored_fixture import tiny_student
from test_train_cli import _config

import train
from data_collator import ScoredBatchError
from distil.head_warmup import HEADS_FILE, LOG_FILE, WARMUP_DIR
from distil.losses import GOLD_COMPONENT, LOSS_COMPONENTS, gold_ranking_loss
from distil.model_card import render_model_card
from heads_d2llm import head_state_dict
from preprocess.pair_batches import pair_batches
from trainer_d2llm import D2LLMTrainer, D2LLMTrainingArguments

GRADED = Dataset.from_list([
    {"query": f"the cat sat on the mat {i}", "passage": f"a dog ran to the river {i % 3}", "target": (i % 6) / 5,
     "task": "symmetric", "language": "en"} for i in range(16)])


def _loop_cosent(scores: list[float], targets: list[float], tau: float) -> float:
    """``log(1 + sum over pairs (a, b) with t_a < t_b of exp((z_a - z_b) / tau))``, one pair at a time."""
    total = 1.0
    for a in range(len(scores)):
        for b in range(len(scores)):
            if targets[a] < targets[b]:
                total += math.exp((scores[a] - scores[b]) / tau)
    return math.log(total)


@pytest.mark.parametrize("tau", [1.0, 0.05])
def test_gold_ranking_loss_matches_a_plain_loop(tau):
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(7, generator=generator)
    targets = torch.tensor([0.2, 0.8, 0.8, 0.0, 1.0, 0.4, 0.2])
    expected = _loop_cosent(scores.tolist(), targets.tolist(), tau)
    assert float(gold_ranking_loss(scores, targets, tau=tau)) == pytest.approx(expected, rel=1e-5)
    assert float(gold_ranking_loss(scores, torch.full((7,), 0.6), tau=tau)) == 0.0  # nothing to rank


def test_trainer_loss_on_a_pair_batch_is_cosent_over_the_text_level_pair_scores(tmp_path):
    model = tiny_student(lora=False, query_instructions={"symmetric": "query "}).eval()
    dataset = pair_batches(GRADED, batch_size=8, seed=0)
    args = D2LLMTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], alpha=2.0, tau_hard=0.5)
    trainer = D2LLMTrainer(model=model, args=args, train_dataset=dataset)
    row = dataset[0]
    with torch.no_grad():
        loss = trainer.compute_loss(model, trainer.data_collator([row]))
        queries = model.encode_query(row["queries"], task="symmetric", convert_to_tensor=True)
        passages = model.encode_document(row["positives"], task="symmetric", convert_to_tensor=True)
        scores = model.similarity_pairwise(queries, passages, task="symmetric")
    assert float(loss) == pytest.approx(2.0 * _loop_cosent(scores.tolist(), row["targets"], 0.5), rel=1e-4)


def test_pair_batches_that_rank_nothing_or_name_an_unknown_task_are_refused(tmp_path):
    model = tiny_student(lora=False)
    args = D2LLMTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    positives_only = pair_batches(Dataset.from_list([{**row, "target": 1.0} for row in GRADED]), batch_size=8)
    with pytest.raises(ScoredBatchError, match="'targets' is 1 in every pair batch"):
        D2LLMTrainer(model=model, args=args, train_dataset=positives_only)
    unknown = pair_batches(Dataset.from_list([{**row, "task": "legal"} for row in GRADED]), batch_size=8)
    with pytest.raises(ScoredBatchError, match="pair batch 0: column 'task' is 'legal'"):
        D2LLMTrainer(model=model, args=args, train_dataset=unknown)


def test_train_py_warms_the_heads_up_on_graded_pairs_and_logs_only_the_gold_term(tmp_path, backbone):
    folder = tmp_path / "pairs"
    pair_batches(GRADED, batch_size=4, seed=0).save_to_disk(str(folder))
    config = _config(tmp_path, backbone, str(folder), head_warmup_epochs=2, num_train_epochs=0, max_steps=-1)
    trainer = train.main([config])
    warmup = tmp_path / "out" / WARMUP_DIR
    logged = [entry for entry in json.loads((warmup / LOG_FILE).read_text()) if "total" in entry]
    assert len(logged) == 8  # 4 pair batches x 2 epochs, logging_steps 1
    assert all(entry[GOLD_COMPONENT] == pytest.approx(entry["total"]) for entry in logged)
    assert not any(name in entry for entry in logged for name in LOSS_COMPONENTS)
    heads = load_file(str(warmup / HEADS_FILE))
    fresh = train.build_model(train.parse_arguments([config])[0])
    assert any(not torch.equal(heads[name], value) for name, value in head_state_dict(fresh).items())
    assert trainer.state.global_step == 0  # no end-to-end epoch
    card = render_model_card(trainer.model, trainer.args, logged)
    assert f"| {GOLD_COMPONENT} | total |" in card and "ci_hard" not in card.split("## Last training losses")[1]
