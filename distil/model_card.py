"""The model card (``README.md``) that ``D2LLMTrainer`` writes next to a trained checkpoint."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Protocol

from distil.losses import GOLD_COMPONENT, LOSS_COMPONENTS, LossWeights

if TYPE_CHECKING:
    from modeling_d2llm import D2LLMModel


class CardArguments(Protocol):
    """What the card reads of the training arguments (``trainer_d2llm.D2LLMTrainingArguments`` has it all)."""

    output_dir: str
    loss_weights: LossWeights
    learning_rate: float
    head_learning_rate: float | None
    num_train_epochs: float
    max_steps: int
    seed: int


def render_model_card(model: D2LLMModel, args: CardArguments, log_history: list[dict[str, Any]], *,
                      dataset: str | list[str] | None = None, fixed_batch_shape: tuple[int, int] | None = None,
                      hub_model_id: str | None = None) -> str:
    """Markdown model card: backbone, data, loss weights, training settings and the evaluation results present in
    ``log_history`` (``eval_*`` entries) and the last training losses."""
    backbone = model.backbone_model().config
    datasets_ = [dataset] if isinstance(dataset, str) else list(dataset or [])
    weights = args.loss_weights
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: sentence-similarity",
        "tags: [d2llm, sentence-similarity, feature-extraction, distillation]",
        *([f"base_model: {backbone.name_or_path}"] if backbone.name_or_path else []),
        "---",
        "",
        f"# {hub_model_id or os.path.basename(os.path.abspath(args.output_dir))}",
        "",
        "A D2LLM student (decomposed and distilled LLM for semantic search, Liao et al., ACL 2024): the backbone "
        "encodes queries and passages separately, PMA pools the token states, and the IEM scores a pair per task. "
        "Load with `AutoModel.from_pretrained(path, trust_remote_code=True)`.",
        "",
        "## Model",
        f"- backbone: `{backbone.name_or_path or backbone.model_type}` ({backbone.model_type}, "
        f"{model.config.num_backbone_layers} layers, hidden size {model.config.hidden_size})",
        f"- tasks: {', '.join(model.config.task_names)}; embedding size {model.config.embedding_size}; "
        f"IEM width {model.config.iem_hidden_size}; "
        + (f"PMA {model.config.pma_num_heads} heads, {model.config.pma_num_seeds} seed(s)"
           if model.config.pooling == "pma" else "mean pooling"),
        f"- LoRA merged into the weights: {'yes' if model.has_lora else 'no (full fine-tuning or heads only)'}",
        "",
        "## Training data",
        "- fixed batches (teacher-scored, or pairs with gold targets): "
        + (", ".join(f"`{name}`" for name in datasets_) or "not recorded"),
        *([f"- B = {fixed_batch_shape[0]} queries per batch, K = {fixed_batch_shape[1]} hard negatives per query"]
          if fixed_batch_shape else []),
        "",
        "## Loss (docs/method.md, section 3: L = L_CI + L_RI + L_FI (+ L_KD), means over terms)",
        f"- alpha = {weights.alpha}, beta = {weights.beta}, gamma = {weights.gamma}, eta = {weights.eta}",
        f"- tau_inbatch = {weights.tau_inbatch}, tau_hard = {weights.tau_hard}, c = {weights.scale}, "
        f"tau_T = {weights.teacher_temperature}, hard weighting {weights.hard_weighting}",
        f"- listwise distillation (beyond the paper): kd_weight = {weights.kd_weight}, "
        f"tau_T = {weights.kd_teacher_temperature}, tau_S = {weights.kd_student_temperature}",
        f"- learning rates: backbone {args.learning_rate}, PMA/IEM {args.head_learning_rate or args.learning_rate}; "
        f"epochs {args.num_train_epochs}, max steps {args.max_steps}, seed {args.seed}",
    ]
    train_logs = [entry for entry in log_history if "total" in entry]
    if train_logs:
        last = train_logs[-1]
        names = [name for name in (*LOSS_COMPONENTS, GOLD_COMPONENT, "total") if name in last]
        lines += ["", f"## Last training losses (step {last.get('step')})", "",
                  "| " + " | ".join(names) + " |", "|" + "---|" * len(names),
                  "| " + " | ".join(f"{last[name]:.4f}" for name in names) + " |"]
    evaluations = {key: value for entry in log_history for key, value in entry.items()
                   if key.startswith("eval_") and isinstance(value, (int, float))}
    if evaluations:
        lines += ["", "## Evaluation results", "", "| metric | value |", "|---|---|"]
        lines += [f"| {key} | {value:.4f} |" for key, value in sorted(evaluations.items())]
    return "\n".join(lines) + "\n"
