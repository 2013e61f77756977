"""``TeacherTrainer``: transformers' ``Trainer`` adapting the yes/no teacher (``teacher.objectives``).

The trainer's model is the teacher's (a peft LoRA model, or the whole causal LM for full fine-tuning). Each step
scores a ``TeacherCollator`` batch with ``YesNoTeacher.forward`` (answer logits at the last prompt position only)
and takes ``objectives.adaptation_loss``. Evaluation runs ``teacher.evaluate.evaluate_teacher`` on the dev sets
and logs ``eval_pairs_spearman`` / ``eval_pairs_average_precision`` / ``eval_reranking_ndcg@10``, so checkpoints
can be kept by a dev metric (``metric_for_best_model``).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from datasets import Dataset
from torch import nn
from transformers import Trainer
from transformers.trainer_callback import ProgressCallback

from common.safe_checkpoints import SafeCheckpointMixin
from teacher.adapt_data import TeacherCollator
from teacher.evaluate import evaluate_teacher
from teacher.model import YesNoTeacher
from teacher.objectives import adaptation_loss

PROMPT_KEYS = ("input_ids", "attention_mask", "position_ids")
TRAINING_ARGS_FILE = "training_args.json"


def flat_metrics(metrics: dict[str, dict[str, float]], prefix: str = "eval") -> dict[str, float]:
    """``{"pairs": {"spearman": x}}`` -> ``{"eval_pairs_spearman": x}`` (counts such as ``pairs`` dropped)."""
    return {f"{prefix}_{group}_{name}": value for group, values in metrics.items()
            for name, value in values.items() if name not in ("pairs", "queries")}


class TeacherTrainer(SafeCheckpointMixin, Trainer):
    """``Trainer`` over ``TRAIN_FEATURES`` rows; ``pair_loss`` / ``cosent_scale`` as in ``adaptation_loss``;
    ``bf16``: bfloat16 autocast for the forward pass (the weights stay float32). Checkpoints hold no pickle
    (``SafeCheckpointMixin``)."""

    def __init__(self, teacher: YesNoTeacher, *, dev_pairs: Dataset | None = None, dev_mined: Dataset | None = None,
                 pair_loss: str = "bce", cosent_scale: float = 1.0, bf16: bool = False, **kwargs: Any) -> None:
        eval_dataset = dev_pairs if dev_pairs is not None else dev_mined
        super().__init__(model=teacher.model, data_collator=TeacherCollator(teacher), eval_dataset=eval_dataset,
                         **kwargs)
        self.teacher = teacher
        self.dev_pairs, self.dev_mined = dev_pairs, dev_mined
        self.pair_loss, self.cosent_scale, self.autocast_bf16 = pair_loss, cosent_scale, bf16
        self.remove_callback(ProgressCallback)
        self.add_callback(LossInBarCallback())

    def compute_loss(self, model: nn.Module, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> torch.Tensor:
        with torch.autocast(self.teacher.device.type, dtype=torch.bfloat16, enabled=self.autocast_bf16):
            logits, _ = self.teacher.forward({key: inputs[key] for key in PROMPT_KEYS}, inputs["answer_ids"])
        loss = adaptation_loss(logits, inputs["targets"], inputs["weights"], inputs["pair_index"],
                               inputs["group_index"], self.pair_loss, self.cosent_scale)
        return (loss, logits) if return_outputs else loss

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """The adapter (full fine-tuning: the model) as safetensors, the teacher's prompts and token limits (so a
        checkpoint loads as an adapter) and the arguments as JSON, not pickled."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        self.accelerator.unwrap_model(self.model).save_pretrained(output_dir, state_dict=state_dict)
        self.teacher.save_prompts(output_dir)
        with open(os.path.join(output_dir, TRAINING_ARGS_FILE), "w", encoding="utf-8") as handle:
            handle.write(self.args.to_json_string())

    def evaluate(self, eval_dataset: Dataset | None = None, ignore_keys: list[str] | None = None,
                 metric_key_prefix: str = "eval") -> dict[str, float]:
        """The teacher's dev metrics (``evaluate_teacher``), logged and returned with ``metric_key_prefix``."""
        metrics = flat_metrics(evaluate_teacher(self.teacher, self.dev_pairs, self.dev_mined,
                                                self.args.per_device_eval_batch_size), metric_key_prefix)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


class LossInBarCallback(ProgressCallback):
    """The progress bar shows the last loss and learning rate; evaluation results are printed as lines."""

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or self.training_bar is None or not logs:
            return
        if "loss" in logs:
            self.training_bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs.get('learning_rate', 0):.2e}")
        evaluated = {key: f"{value:.4f}" for key, value in logs.items() if key.startswith("eval_")}
        if evaluated:
            self.training_bar.write(f"step {state.global_step}: {evaluated}")
