"""The BeLLM-style bi-encoder baseline trained by ``train.py --objective bi-encoder``, on either

* the same teacher-scored fixed batches as the D2LLM student (their texts: queries, positives and the same hard
  negatives; the teacher's scores are not used): ``L = ibn_weight * InfoNCE + angle_weight * AnglE +
  cosine_weight * CoSENT`` (``baselines.bi_encoder.bi_encoder_loss_terms``), the in-batch negatives being the
  batch's own positives (per process); or
* pair batches with gold targets (``common.schema.PAIR_BATCH_FEATURES``, ``python -m preprocess.pair_batches``): graded
  pairs ranked by AnglE / CoSENT (``baselines.bi_encoder.pair_loss_terms``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from baselines.bi_encoder import BiEncoder, bi_encoder_loss_terms, pair_loss_terms
from data_collator import check_scored_batch, is_pair_batches, validate_pair_batches, validate_scored_dataset
from trainer_d2llm import TRAINING_ARGS_FILE, D2LLMTrainingArguments, ScoredBatchTrainer


@dataclass
class BiEncoderBatchCollator:
    """One stored batch -> ``input_ids``/``attention_mask [B(2+K), T]`` (queries, positives, then negatives row by
    row, through the encoder's prompt template) and ``batch_shape = [B, K]``."""

    encoder: BiEncoder
    task_names: Sequence[str]

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if len(features) != 1:
            raise ValueError(f"a training step takes exactly one stored fixed batch per device, got {len(features)}")
        row = features[0]
        size, negatives = check_scored_batch(row, 0, self.task_names)
        texts = list(row["queries"]) + list(row["positives"]) + [text for texts in row["negatives"] for text in texts]
        encoded = self.encoder.tokenize(texts)
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
                "batch_shape": torch.tensor([size, negatives])}


@dataclass
class PairBatchCollator:
    """One stored pair batch -> ``input_ids``/``attention_mask [2B, T]`` (first texts, then second texts, through
    the encoder's prompt template), ``batch_shape = [B, 0]`` and ``targets [B]``."""

    encoder: BiEncoder

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if len(features) != 1:
            raise ValueError(f"a training step takes exactly one stored fixed batch per device, got {len(features)}")
        row = features[0]
        encoded = self.encoder.tokenize(list(row["queries"]) + list(row["positives"]))
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
                "batch_shape": torch.tensor([len(row["queries"]), 0]),
                "targets": torch.tensor(row["targets"], dtype=torch.float32)}


class BiEncoderTrainer(ScoredBatchTrainer):
    """Trains a :class:`baselines.bi_encoder.BiEncoder` on scored fixed batches; logs each weighted term and ``total``.

    ``loss_weights``: ``temperature``, ``ibn_weight``, ``angle_weight``, ``cosine_weight`` of
    ``bi_encoder_loss_terms``. The final model is ``BiEncoder.save_pretrained`` (LoRA merged). A run resumes from
    its checkpoints with LoRA only (the trainable state); a fully fine-tuned bi-encoder restarts.
    """

    def __init__(self, model: BiEncoder, args: D2LLMTrainingArguments, train_dataset=None, *,
                 loss_weights: dict[str, float] | None = None, **kwargs: Any) -> None:
        if not isinstance(model, BiEncoder):
            raise TypeError(f"BiEncoderTrainer trains a BiEncoder, got {type(model).__name__}")
        self.loss_weights = dict(loss_weights or {})
        collator: BiEncoderBatchCollator | PairBatchCollator
        if train_dataset is not None and is_pair_batches(train_dataset):
            validate_pair_batches(train_dataset, self.loss_weights.get("ibn_weight", 1.0))
            collator = PairBatchCollator(model)
        else:
            tasks = sorted(set(train_dataset["task"])) if train_dataset is not None and "task" in \
                train_dataset.column_names else []
            if train_dataset is not None:
                validate_scored_dataset(train_dataset, tasks)
            collator = BiEncoderBatchCollator(model, tasks)
        super().__init__(model=model, args=args, train_dataset=train_dataset, data_collator=collator, **kwargs)

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                     num_items_in_batch: torch.Tensor | int | None = None):
        size, negatives = (int(value) for value in inputs["batch_shape"])
        embeddings = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        queries, positives = embeddings[:size].float(), embeddings[size : 2 * size].float()
        if "targets" in inputs:
            parts = pair_loss_terms(queries, positives, inputs["targets"].to(queries.device), **self.loss_weights)
        else:
            hard = embeddings[2 * size :].reshape(size, negatives, -1).float()
            parts = bi_encoder_loss_terms(queries, positives, hard, **self.loss_weights)
        loss = torch.stack(list(parts.values())).sum()
        if model.training:
            self._record(parts, loss)
        return (loss, {"embeddings": embeddings}) if return_outputs else loss

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """The bi-encoder folder (backbone with LoRA merged, tokenizer, ``bi_encoder.json``) and the arguments."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        self.accelerator.unwrap_model(self.model).save_pretrained(output_dir)
        with open(os.path.join(output_dir, TRAINING_ARGS_FILE), "w", encoding="utf-8") as handle:
            handle.write(self.args.to_json_string())

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
        trained = self.accelerator.unwrap_model(model if model is not None else self.model)
        if not trained.has_lora:
            raise ValueError(f"cannot resume from {resume_from_checkpoint}: a bi-encoder run resumes with LoRA only "
                             "(use_lora true); restart without --resume_from_checkpoint")
        super()._load_from_checkpoint(resume_from_checkpoint, model)
