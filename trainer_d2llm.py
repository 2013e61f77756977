"""Distillation of an LLM cross-encoder into the D2LLM student (docs/method.md, section 3): ``D2LLMTrainer``, its
training arguments and its LoRA checkpoints. The losses are in ``distil/losses.py``, the gather across processes in
``distil/distributed.py``, the model card in ``distil/model_card.py``, the head warm-up in ``distil/head_warmup.py``.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from common.hardware import DTYPE_CHOICES, fast_bf16
from common.safe_checkpoints import SafeCheckpointMixin
from common.schema import SCORED_BATCH_COLUMNS
from data_collator import (D2LLMDataCollator, FixedBatchSampler, ScoredBatchError, inbatch_scores_present,
                           is_pair_batches, validate_pair_batches, validate_scored_dataset)
from distil.distributed import gather_with_grad
from distil.head_warmup import STATES_CHOICES
from distil.losses import (GOLD_COMPONENT, HARD_WEIGHTINGS, LossWeights, distillation_losses, gold_ranking_loss,
                           teacher_probabilities, teacher_scores, training_diagnostics)
from distil.model_card import render_model_card
from modeling_d2llm import D2LLMModel

TRAINABLE_STATE_FILE = "trainable_state.safetensors"
TRAINING_ARGS_FILE = "training_args.json"


# ====================================================================== checkpoints
def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train (LoRA, PMA, IEM), under the names of the live (peft-wrapped) module tree."""
    return {name: param.detach().contiguous() for name, param in model.named_parameters() if param.requires_grad}


def load_trainable_state(model: nn.Module, checkpoint_dir: str) -> None:
    """Restore ``TRAINABLE_STATE_FILE`` from a checkpoint: exactly the trainable parameters, in their shapes."""
    from safetensors.torch import load_file

    path = os.path.join(checkpoint_dir, TRAINABLE_STATE_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{checkpoint_dir} holds no {TRAINABLE_STATE_FILE}: a LoRA run resumes only from "
                                "checkpoints written by D2LLMTrainer")
    state = load_file(path)
    live = trainable_state_dict(model)
    missing, unexpected = sorted(set(live) - set(state)), sorted(set(state) - set(live))
    reshaped = sorted(name for name in set(live) & set(state) if state[name].shape != live[name].shape)
    if missing or unexpected or reshaped:
        raise ValueError(f"{path} does not match this model's trainable parameters: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}, other shape {reshaped[:3]} (was LoRA configured differently?)")
    model.load_state_dict(state, strict=False)


# ====================================================================== trainer
@dataclass
class D2LLMTrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus the loss weights of docs/method.md section 3, the PMA/IEM learning rate, and the loss
    weights of the bi-encoder baseline (``train.py --objective bi-encoder``).

    One device step trains on one stored fixed batch, so ``per_device_train_batch_size`` is 1 (the batch size is
    the dataset's B); ``learning_rate`` applies to the backbone (its LoRA), ``head_learning_rate`` to PMA and IEM.
    """

    alpha: float = field(default=1.0, metadata={"help": "Weight of the hard-negative contrastive imitation term."})
    beta: float = field(default=1.0, metadata={"help": "Weight of the Pearson rank imitation term."})
    gamma: float = field(default=0.01, metadata={"help": "Weight of the pairwise rank imitation term."})
    eta: float = field(default=0.001, metadata={"help": "Weight of the feature imitation term."})
    tau_inbatch: float = field(default=1.0, metadata={"help": "Temperature of the in-batch contrastive term."})
    tau_hard: float = field(default=1.0, metadata={"help": "Temperature of the hard-negative contrastive term."})
    rank_scale: float = field(default=1.0, metadata={"help": "c, the divisor of the pairwise rank margins."})
    teacher_temperature: float = field(
        default=1.0, metadata={"help": "tau_T of s = softmax([l_yes, l_no] / tau_T)[0]."})
    kd_weight: float = field(default=0.0, metadata={
        "help": "Weight of listwise distillation KL(softmax(t / tau_T) || softmax(Z / tau_S)), t = l_yes - l_no "
                "(beyond the paper; 0: off, the paper's loss)."})
    kd_teacher_temperature: float = field(default=1.0, metadata={"help": "tau_T of the listwise distillation term."})
    kd_student_temperature: float = field(default=1.0, metadata={"help": "tau_S of the listwise distillation term."})
    hard_weighting: str = field(default="spec", metadata={
        "help": "spec (softmax of W * Z_h / tau_hard, as the paper writes it) or log_prior (softmax of "
                "Z_h / tau_hard + log W: unchanged when all of a query's logits move together) or none (softmax of "
                "Z_h / tau_hard: the gold labels alone, no teacher weights)."})
    bi_encoder_temperature: float = field(default=0.05, metadata={
        "help": "objective bi-encoder: temperature of its InfoNCE and AnglE terms."})
    ibn_weight: float = field(default=1.0, metadata={"help": "objective bi-encoder: weight of in-batch InfoNCE."})
    angle_weight: float = field(default=1.0, metadata={"help": "objective bi-encoder: weight of the AnglE term."})
    cosine_weight: float = field(default=0.0, metadata={"help": "objective bi-encoder: weight of the CoSENT term."})
    head_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of PMA and IEM (default: learning_rate)."})
    head_warmup_epochs: float = field(default=0.0, metadata={
        "help": "Epochs of PMA/IEM training on a frozen backbone before end-to-end training (distil/head_warmup.py)."})
    head_warmup_states: str = field(default="cache", metadata={
        "help": "cache: backbone token states cached on disk once (small and mid-size backbones); recompute: the "
                "frozen backbone runs forward every warm-up step, no backward (large backbones)."})
    head_warmup_cache_dir: str | None = field(default=None, metadata={
        "help": "Folder of the token-state cache (default: OUTPUT_DIR/_head_warmup/token_states)."})
    head_warmup_dtype: str = field(default="auto", metadata={
        "help": "Dtype of the caching pass: auto (bfloat16 where the hardware is fast at it), float32, bfloat16."})
    auto_bf16: bool = field(
        default=True,
        metadata={"help": "Train in bf16 when a CUDA device supports it and neither bf16 nor fp16 is set."})
    cpu_bf16: str = field(default="no", metadata={
        "choices": ["no", "auto"],
        "help": "On a CPU (no CUDA device): auto trains in bf16 where the CPU is fast at it (AMX, AVX512-BF16; "
                "common.hardware.fast_bf16), float32 elsewhere; no: float32, results independent of the CPU."})
    per_device_train_batch_size: int = field(
        default=1, metadata={"help": "Stored fixed batches per device and step: must be 1."})
    per_device_eval_batch_size: int = field(
        default=1, metadata={"help": "Stored fixed batches per device in evaluation: must be 1."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: the collator reads the scored-batch columns."})
    ddp_find_unused_parameters: bool | None = field(
        default=False, metadata={"help": "Must stay False: the IEM runs outside the DDP forward."})
    hub_strategy: str = field(default="end", metadata={"help": "When to push to the Hub (default: at the end)."})

    def __post_init__(self) -> None:
        # CUDA only: on a CPU bf16 stays a choice (--bf16 true --use_cpu true), so results do not depend on the CPU
        if self.auto_bf16 and not (self.bf16 or self.fp16) and fast_bf16("cuda"):
            self.bf16 = True
        if self.cpu_bf16 == "auto" and not (self.bf16 or self.fp16 or torch.cuda.is_available()) and fast_bf16("cpu"):
            self.bf16, self.use_cpu = True, True
        if self.activation_checkpointing_kwargs is None and self.gradient_checkpointing_kwargs is None:
            self.activation_checkpointing_kwargs = {"use_reentrant": False}
        super().__post_init__()
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size"):
            if getattr(self, name) != 1:
                raise ValueError(f"{name}={getattr(self, name)}: each device step takes exactly one stored fixed batch "
                                 "(its size B is the dataset's); set it to 1 and scale with processes or "
                                 "gradient_accumulation_steps")
        if self.ddp_find_unused_parameters:
            raise ValueError("ddp_find_unused_parameters must be False: the IEM scores outside the DDP forward")
        if self.head_warmup_states not in STATES_CHOICES:
            raise ValueError(f"head_warmup_states must be one of {STATES_CHOICES}, got {self.head_warmup_states!r}")
        if self.head_warmup_dtype not in DTYPE_CHOICES:
            raise ValueError(f"head_warmup_dtype must be one of {DTYPE_CHOICES}, got {self.head_warmup_dtype!r}")
        for name in ("alpha", "beta", "gamma", "eta", "kd_weight", "ibn_weight", "angle_weight", "cosine_weight",
                     "head_warmup_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("tau_inbatch", "tau_hard", "rank_scale", "teacher_temperature", "kd_teacher_temperature",
                     "kd_student_temperature", "bi_encoder_temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.hard_weighting not in HARD_WEIGHTINGS:
            raise ValueError(f"hard_weighting must be one of {HARD_WEIGHTINGS}, got {self.hard_weighting!r}")

    @property
    def bi_encoder_loss_weights(self) -> dict[str, float]:
        """Keyword arguments of ``baselines.bi_encoder.bi_encoder_loss_terms``."""
        return {"temperature": self.bi_encoder_temperature, "ibn_weight": self.ibn_weight,
                "angle_weight": self.angle_weight, "cosine_weight": self.cosine_weight}

    @property
    def loss_weights(self) -> LossWeights:
        return LossWeights(alpha=self.alpha, beta=self.beta, gamma=self.gamma, eta=self.eta,
                           tau_inbatch=self.tau_inbatch, tau_hard=self.tau_hard, scale=self.rank_scale,
                           teacher_temperature=self.teacher_temperature, kd_weight=self.kd_weight,
                           kd_teacher_temperature=self.kd_teacher_temperature,
                           kd_student_temperature=self.kd_student_temperature, hard_weighting=self.hard_weighting)


class ScoredBatchTrainer(SafeCheckpointMixin, Trainer):
    """What every trainer on teacher-scored fixed batches shares: one stored batch per device step
    (``FixedBatchSampler``, the scored-batch columns kept), the mean of every logged loss term next to the Trainer's
    ``loss`` (``_record``), and LoRA checkpoints that resume from ``TRAINABLE_STATE_FILE`` (the model exposes
    ``has_lora``), with optimizer, scheduler and random states stored without pickle (``SafeCheckpointMixin``)."""

    loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loss_sums: dict[str, torch.Tensor] = defaultdict(float)
        self._loss_steps = 0

    # ------------------------------------------------------------------ data
    def _set_signature_columns_if_needed(self) -> None:
        self._signature_columns = list(SCORED_BATCH_COLUMNS)

    def _get_train_sampler(self, train_dataset=None) -> FixedBatchSampler:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return FixedBatchSampler(list(dataset["task"]), num_replicas=self.args.world_size, seed=seed)

    # ------------------------------------------------------------------ logging
    def _record(self, losses: dict[str, torch.Tensor], total: torch.Tensor) -> None:
        """Add one step's logged terms (loss terms, and any diagnostics among them) and ``total``."""
        for name, value in {**losses, "total": total}.items():
            self._loss_sums[name] = self._loss_sums[name] + value.detach().float()
        self._loss_steps += 1

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the mean of every loss term since the last training log (averaged over processes)."""
        if "loss" in logs and self._loss_steps:
            names = list(self._loss_sums)
            means = torch.stack([self._loss_sums[name] for name in names]) / self._loss_steps
            means = self.accelerator.reduce(means.to(self.args.device), reduction="mean")
            logs.update({name: float(value) for name, value in zip(names, means.tolist())})
            self._loss_sums.clear()
            self._loss_steps = 0
        super().log(logs, start_time)

    # ------------------------------------------------------------------ resuming
    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        trained = self.accelerator.unwrap_model(self.model)
        if trained.has_lora and self.args.should_save:
            from safetensors.torch import save_file

            checkpoint = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            folder = os.path.join(self._get_output_dir(trial=trial), checkpoint)
            save_file(trainable_state_dict(trained), os.path.join(folder, TRAINABLE_STATE_FILE))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        trained = self.accelerator.unwrap_model(model if model is not None else self.model)
        if not trained.has_lora:  # the merged weights are the weights
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        load_trainable_state(trained, resume_from_checkpoint)

    def _load_best_model(self) -> None:
        trained = self.accelerator.unwrap_model(self.model)
        if not trained.has_lora:
            return super()._load_best_model()
        load_trainable_state(trained, self.state.best_model_checkpoint)


class D2LLMTrainer(ScoredBatchTrainer):
    """Distils teacher-scored fixed batches into a ``D2LLMModel`` with ``L = L_CI + L_RI + L_FI (+ L_KD)``.

    Each device step encodes one stored batch's queries, positives and negatives in one forward, scores
    ``Z_ib`` (against the positives of every process, gathered with gradients) and ``Z_h`` with the IEM, and logs
    every weighted term (``ci_inbatch``, ``ci_hard``, ``ri_pearson``, ``ri_pairwise``, ``fi``, ``kd``) and ``total``
    next to the Trainer's ``loss``, and the ``DIAGNOSTICS`` of ``training_diagnostics``. Training data is validated
    before anything is written; ``batch_size`` and ``num_negatives`` are the configured B and K (``None``: taken
    from the first stored batch).
    Pair batches with gold targets (``python -m preprocess.pair_batches``) train the same architecture without a
    teacher: ``L = L_gold`` (docs/method.md, equation (9)), logged as ``gold_ranking``.
    Checkpoints hold the merged model and, with LoRA, ``TRAINABLE_STATE_FILE``, from which training resumes.
    """

    def __init__(self, model: D2LLMModel, args: D2LLMTrainingArguments, train_dataset=None, eval_dataset=None,
                 data_collator=None, *, batch_size: int | None = None, num_negatives: int | None = None,
                 **kwargs: Any) -> None:
        if not isinstance(model, D2LLMModel):
            raise TypeError(f"D2LLMTrainer trains a D2LLMModel, got {type(model).__name__}")
        if not isinstance(args, D2LLMTrainingArguments):
            raise TypeError("D2LLMTrainer needs D2LLMTrainingArguments (loss weights, one stored batch per step)")
        task_names = model.config.task_names
        self.fixed_batch_shape = None
        if train_dataset is not None and is_pair_batches(train_dataset):
            validate_pair_batches(train_dataset, task_names=task_names)
            if all(target == 1.0 for targets in train_dataset["targets"] for target in targets):
                raise ScoredBatchError("column 'targets' is 1 in every pair batch: the gold ranking term has nothing "
                                       "to rank; train on graded or labelled (1 / 0) pairs, or on mined batches "
                                       "with --hard_weighting none")
        elif train_dataset is not None:
            self.fixed_batch_shape = validate_scored_dataset(train_dataset, task_names, batch_size, num_negatives)
            if args.gamma > 0 and not inbatch_scores_present(train_dataset):
                raise ScoredBatchError(
                    f"column 'teacher_inbatch_logits' is empty (the batches were scored with --inbatch-scores none), "
                    f"but the pairwise rank term needs it (gamma = {args.gamma}): train with --gamma 0, or score "
                    "with --inbatch-scores all")
        evaluation_sets = eval_dataset.values() if isinstance(eval_dataset, dict) else [eval_dataset]
        for dataset in evaluation_sets:
            if dataset is not None:
                validate_scored_dataset(dataset, task_names)
        super().__init__(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         data_collator=data_collator or D2LLMDataCollator.from_model(model), **kwargs)
        self._tasks_since_step: set[str] = set()

    # ------------------------------------------------------------------ loss
    def compute_loss(self, model: nn.Module, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                     num_items_in_batch: torch.Tensor | int | None = None):
        """``L = L_CI + L_RI + L_FI (+ L_KD)`` of one stored batch (see ``distillation_losses``), or ``L_gold`` of
        one pair batch; every term is logged."""
        student = self.accelerator.unwrap_model(model)
        self._shard_aware_scoring(student)
        task = student.config.task_names[int(inputs["task_id"])]
        encoder_inputs = {name: inputs[name] for name in ("input_ids", "token_states", "attention_mask")
                          if name in inputs}
        embeddings = model(**encoder_inputs).embeddings
        terms = self._gold_terms if "targets" in inputs else self._distillation_terms
        losses, diagnostics, outputs = terms(model, student, task, embeddings, inputs)
        loss = torch.stack(list(losses.values())).sum()
        if model.training:
            self._record({**losses, **diagnostics}, loss)
            self._tasks_since_step.add(task)
            loss = loss + self._idle_branch_anchor(student, task)
        return (loss, {**outputs, **losses}) if return_outputs else loss

    def _distillation_terms(self, model: nn.Module, student: D2LLMModel, task: str, embeddings: torch.Tensor,
                            inputs: dict[str, torch.Tensor]) -> tuple[dict, dict, dict]:
        """The weighted distillation terms of one scored batch (``embeddings``: queries, positives, negatives),
        the ``training_diagnostics`` and the student's logits."""
        hard_logits = inputs["teacher_hard_logits"]
        size, candidates = hard_logits.shape[:2]
        queries, positives = embeddings[:size], embeddings[size : 2 * size]
        negatives = embeddings[2 * size :].reshape(size, candidates - 1, embeddings.shape[-1])
        all_positives, offset = gather_with_grad(positives) if model.training else (positives, 0)
        student_inbatch = student.similarity(queries, all_positives, task)
        student_hard, branch_features = student.score(queries[:, None, :],
                                                      torch.cat([positives[:, None, :], negatives], dim=1), task)
        weights = self.args.loss_weights
        teacher_hard = teacher_probabilities(hard_logits, weights.teacher_temperature)
        inbatch_logits = inputs["teacher_inbatch_logits"]
        losses = distillation_losses(
            student_inbatch, student_hard, branch_features,
            teacher_probabilities(inbatch_logits, weights.teacher_temperature) if inbatch_logits.numel() else None,
            teacher_hard, inputs["teacher_feature_cosine"], weights, inbatch_offset=offset,
            teacher_hard_scores=teacher_scores(hard_logits), teacher_inbatch_scores=teacher_scores(inbatch_logits))
        diagnostics = training_diagnostics(student_hard, student_inbatch, teacher_hard) if model.training else {}
        return losses, diagnostics, {"student_inbatch": student_inbatch, "student_hard": student_hard}

    def _gold_terms(self, model: nn.Module, student: D2LLMModel, task: str, embeddings: torch.Tensor,
                    inputs: dict[str, torch.Tensor]) -> tuple[dict, dict, dict]:
        """``L_gold`` (docs/method.md, equation (9)) of one pair batch (``embeddings``: its P queries, then its P
        passages), logged as ``gold_ranking``, and the student's pair logits."""
        targets = inputs["targets"]
        size = targets.shape[0]
        pairs, _ = student.score(embeddings[:size], embeddings[size:], task)
        weights = self.args.loss_weights
        losses = {GOLD_COMPONENT: weights.alpha * gold_ranking_loss(pairs, targets, tau=weights.tau_hard)}
        return losses, {}, {"student_pairs": pairs}

    def _shard_aware_scoring(self, student: D2LLMModel) -> None:
        """Under FSDP2 the IEM weights stay sharded outside ``forward``: make ``score`` and ``similarity`` gather
        them like a forward (``register_fsdp_forward_method``; a no-op for a model FSDP does not wrap)."""
        if self.is_fsdp_enabled and not getattr(student, "_d2llm_fsdp_scoring", False):
            from torch.distributed.fsdp import register_fsdp_forward_method

            for method in ("score", "similarity"):
                register_fsdp_forward_method(student, method)
            student._d2llm_fsdp_scoring = True

    def _idle_branch_anchor(self, student: D2LLMModel, task: str) -> torch.Tensor | float:
        """``0 * sum(idle branch weights)`` with several processes: DDP (``find_unused_parameters=False``) needs a
        gradient for every parameter; ``training_step`` drops these zero gradients again before the optimizer."""
        if self.accelerator.num_processes == 1:
            return 0.0
        idle = [param for name, branch in student.iem.branches.items() if name != task
                for param in branch.parameters() if param.requires_grad]
        return sum(param.sum() for param in idle) * 0.0 if idle else 0.0

    def training_step(self, model: nn.Module, inputs: dict[str, torch.Tensor],
                      num_items_in_batch: torch.Tensor | int | None = None) -> torch.Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.accelerator.sync_gradients:  # last micro-batch before the optimizer step
            student = self.accelerator.unwrap_model(model)
            for name, branch in student.iem.branches.items():
                if name not in self._tasks_since_step:  # untrained this step: skipped by the optimizer
                    for param in branch.parameters():
                        param.grad = None
            self._tasks_since_step.clear()
        return loss

    def prediction_step(self, model: nn.Module, inputs: dict[str, torch.Tensor], prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None):
        """Evaluation loss of one stored batch (in-batch negatives from this process only)."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    # ------------------------------------------------------------------ optimizer
    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """AdamW (or ``args.optim``) with the backbone/LoRA at ``learning_rate`` and PMA/IEM at
        ``head_learning_rate``; biases and norms without weight decay."""
        if self.optimizer is not None:
            return self.optimizer
        opt_model = model if model is not None else self.model
        student = self.accelerator.unwrap_model(opt_model)
        heads = {id(param) for module in (student.pma, student.iem) if module is not None
                 for param in module.parameters()}
        decay = set(self.get_decay_parameter_names(opt_model))
        rates = {False: self.args.learning_rate, True: self.args.head_learning_rate or self.args.learning_rate}
        groups = []
        for is_head in (False, True):
            for decays in (True, False):
                params = [param for name, param in opt_model.named_parameters()
                          if param.requires_grad and (id(param) in heads) == is_head and (name in decay) == decays]
                if params:
                    groups.append({"params": params, "lr": rates[is_head],
                                   "weight_decay": self.args.weight_decay if decays else 0.0})
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    # ------------------------------------------------------------------ saving and resuming
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """The merged model (loads with ``AutoModel`` and ``trust_remote_code``), its tokenizer and the arguments
        as JSON."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        student = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        student.save_pretrained(output_dir, state_dict=state_dict)
        with open(os.path.join(output_dir, TRAINING_ARGS_FILE), "w", encoding="utf-8") as handle:
            handle.write(self.args.to_json_string())

    # ------------------------------------------------------------------ model card
    def create_model_card(self, dataset: str | list[str] | None = None, **kwargs: Any) -> None:
        """Write ``README.md`` in ``output_dir`` (see ``render_model_card``); other arguments are ignored."""
        if not self.is_world_process_zero():
            return
        os.makedirs(self.args.output_dir, exist_ok=True)
        card = render_model_card(self.accelerator.unwrap_model(self.model), self.args, self.state.log_history,
                                 dataset=dataset, fixed_batch_shape=self.fixed_batch_shape,
                                 hub_model_id=self.args.hub_model_id)
        with open(os.path.join(self.args.output_dir, "README.md"), "w", encoding="utf-8") as handle:
            handle.write(card)
