"""Distil a teacher-scored dataset into a D2LLM student.

    python train.py configs/smollm2.yaml [--option value ...]
    accelerate launch [--config_file configs/accelerate_ddp.yaml] train.py configs/smollm2.yaml
    python train.py --train_dataset DIR --output_dir OUT [--option value ...]

Options come in three groups (``ModelArguments``, ``DataArguments``, ``D2LLMTrainingArguments``); a YAML or JSON
file gives any of them, and command-line options after it override the file. The final model is saved merged
(``AutoModel.from_pretrained(output_dir, trust_remote_code=True)`` loads it without peft), with its tokenizer and
a model card; ``--save_adapter`` also writes the LoRA adapter checkpoint to ``output_dir/adapter``.

``--head_warmup_epochs N`` first trains PMA and IEM alone for N epochs on the frozen backbone (its token states
cached on disk, or recomputed each step with ``--head_warmup_states recompute``), then trains end to end
(``distil/head_warmup.py``).

Pair batches with gold targets (``python -m preprocess.pair_batches``) instead of scored batches train the same
student without a teacher: CoSENT over the IEM scores of each batch's pairs, by target (docs/method.md, (9)).

``--objective bi-encoder`` trains the BeLLM-style baseline instead (``baselines.trainer_bi_encoder``): the same backbone
options (LoRA, ``bidirectional_layers``, ``max_seq_length``), ``--bi_encoder_pooling`` and ``--prompt_template``,
loss ``--ibn_weight * InfoNCE + --angle_weight * AnglE`` at ``--bi_encoder_temperature``, on the same scored
batches' texts; it saves a ``baselines.bi_encoder.BiEncoder`` folder, which ``evaluate_model.py`` reads.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

import yaml
from transformers import HfArgumentParser, set_seed
from transformers.trainer_utils import get_last_checkpoint

from baselines.bi_encoder import BELLM_PROMPT, BiEncoder
from baselines.trainer_bi_encoder import BiEncoderTrainer
from configuration_d2llm import HEAD_SETTING_DEFAULTS, HEAD_SETTINGS
from data_collator import ScoredBatchError
from distil.head_warmup import run_head_warmup
from modeling_d2llm import D2LLMModel
from trainer_d2llm import D2LLMTrainer, D2LLMTrainingArguments

logger = logging.getLogger("d2llm.train")
ADAPTER_SUBDIR = "adapter"
RESUME_LAST = ("last", "latest", "true", "True")
OBJECTIVES = ("d2llm", "bi-encoder")


def _setting(name: str, help_text: str) -> Any:
    """A dataclass field for the ``D2LLMConfig`` setting ``name``, with the config's default."""
    return field(default=HEAD_SETTING_DEFAULTS[name], metadata={"help": help_text})


@dataclass
class ModelArguments:
    """The student: backbone, PMA/IEM heads and LoRA."""

    objective: str = field(default="d2llm", metadata={
        "help": "d2llm (the student, distilled with the three losses) or bi-encoder (the BeLLM-style baseline: "
                "pooled backbone, cosine, InfoNCE + AnglE on the same batches' texts)."})
    bi_encoder_pooling: str = field(default="mean", metadata={"help": "objective bi-encoder: mean or last."})
    prompt_template: str | None = field(default=BELLM_PROMPT, metadata={
        "help": "objective bi-encoder: text with a {text} slot around every input (default: BeLLM's); '' for none."})
    model_name_or_path: str | None = field(default=None, metadata={
        "help": "Backbone (hub id, folder or .gguf file) or a merged D2LLM checkpoint to continue training; "
                "default: the embedded SmolLM2-135M-Instruct GGUF."})
    dtype: str | None = field(default=None, metadata={"help": "Weights dtype when loading (float32, bfloat16, ...)."})
    attn_implementation: str | None = field(default=None, metadata={
        "help": "sdpa, eager or flash_attention_2 (default: flash-attention 2 on a GPU where installed, else sdpa)."})
    # D2LLMConfig's settings (HEAD_SETTINGS), with its defaults; head_settings() hands them over by name
    pooling: str = _setting("pooling", "pma (D2LLM's pooling by multi-head attention) or mean (masked mean of the "
                                       "token states: ablation).")
    pma_num_heads: int = _setting("pma_num_heads", "PMA attention heads (must divide the hidden size).")
    pma_num_seeds: int = _setting("pma_num_seeds", "PMA seed vectors k.")
    pma_layer_norm: bool = _setting("pma_layer_norm", "LN0/LN1 in the PMA block.")
    pma_init: str = _setting("pma_init", "normal (small random weights) or mean (a fresh PMA starts as the "
                                         "layer-normed masked mean).")
    iem_hidden_size: int = _setting("iem_hidden_size", "IEM width h.")
    iem_dropout: float = _setting("iem_dropout", "Dropout inside the IEM while training.")
    iem_init: str = _setting("iem_init", "distance (a fresh IEM already scores by embedding distance) or normal "
                                         "(small random weights).")
    initializer_range: float = _setting("initializer_range", "Std of the normal init of PMA and IEM weights.")
    task_names: list[str] = field(default_factory=lambda: list(HEAD_SETTING_DEFAULTS["task_names"]),
                                  metadata={"help": "One IEM branch per task."})
    pooling_layer: int = _setting("pooling_layer", "Hidden-state layer PMA reads (-1: the last).")
    normalize_embeddings: bool = _setting("normalize_embeddings", "L2-normalise pooled embeddings.")
    max_seq_length: int = _setting("max_seq_length", "Token limit per text.")
    bidirectional_layers: int = _setting("bidirectional_layers", "BeLLM: last k layers attend bidirectionally.")
    query_instructions: dict[str, str] | str | None = _setting(
        "query_instructions", "Per-task text prepended to queries: a mapping, or JSON on the command line.")
    passage_instructions: dict[str, str] | str | None = _setting(
        "passage_instructions", "Per-task text prepended to passages: a mapping, or JSON on the command line.")
    use_lora: bool = field(default=True, metadata={"help": "Train a LoRA adapter instead of the whole backbone."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: str = field(default="all-linear", metadata={
        "help": "'all-linear' (every linear layer of the backbone, whatever the architecture) or comma-separated "
                "module names, e.g. q_proj,k_proj,v_proj,o_proj (Llama/Qwen) or query,key,value (BERT)."})
    save_adapter: bool = field(default=False, metadata={
        "help": "Also save the unmerged LoRA adapter checkpoint in output_dir/adapter."})

    def head_settings(self) -> dict[str, Any]:
        """Every ``D2LLMConfig`` setting (``HEAD_SETTINGS``) by name, the instructions parsed from JSON."""
        settings = {name: getattr(self, name) for name in HEAD_SETTINGS}
        for name in ("query_instructions", "passage_instructions"):
            settings[name] = _mapping(settings[name], name)
        return settings

    def lora_targets(self) -> str | list[str]:
        names = [name.strip() for name in self.lora_target_modules.split(",") if name.strip()]
        return "all-linear" if names == ["all-linear"] else names


@dataclass
class DataArguments:
    """Teacher-scored fixed batches (``common.schema.SCORED_BATCH_FEATURES``)."""

    train_dataset: str | None = field(default=None, metadata={
        "help": "Teacher-scored batches: a folder written by Dataset.save_to_disk (or a hub dataset id)."})
    eval_dataset: str | None = field(default=None, metadata={"help": "Held-out teacher-scored batches (eval loss)."})
    train_split: str = field(default="train", metadata={"help": "Split to read when the dataset has splits."})
    eval_split: str = field(default="validation", metadata={"help": "Split to read when the eval set has splits."})
    batch_size: int | None = field(default=None, metadata={
        "help": "Expected queries per stored batch B (default: the first batch's; all must agree)."})
    num_negatives: int | None = field(default=None, metadata={
        "help": "Expected hard negatives per query K (default: the first batch's; all must agree)."})


PARSER_CLASSES = (ModelArguments, DataArguments, D2LLMTrainingArguments)


def _mapping(value: dict[str, str] | str | None, name: str) -> dict[str, str]:
    if value is None or isinstance(value, dict):
        return dict(value or {})
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as error:
        raise ValueError(f"{name} must be a JSON object mapping task names to text, got {value!r}") from error
    if not isinstance(parsed, dict):
        raise ValueError(f"{name} must be a JSON object mapping task names to text, got {value!r}")
    return parsed


def parse_arguments(argv: Sequence[str] | None = None
                    ) -> tuple[ModelArguments, DataArguments, D2LLMTrainingArguments]:
    """``[config.yaml|config.json] [--option value ...]``: the file's values, overridden by the options."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(PARSER_CLASSES)
    if argv and argv[0].endswith((".yaml", ".yml", ".json")):
        with open(argv[0], encoding="utf-8") as handle:
            values = (json.load(handle) if argv[0].endswith(".json") else yaml.safe_load(handle)) or {}
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{argv[0]}: unknown option(s) {unknown}")
        parser.set_defaults(**values)
        argv = argv[1:]
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    if model_args.objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {model_args.objective!r}")
    if not data_args.train_dataset:
        raise ValueError("train_dataset is required (a teacher-scored dataset folder)")
    return model_args, data_args, training_args


def load_scored(path: str, split: str):
    """A teacher-scored dataset from a ``save_to_disk`` folder (a ``DatasetDict`` gives ``split``) or the hub."""
    import datasets

    if os.path.isdir(path):
        loaded = datasets.load_from_disk(path)
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise FileNotFoundError(f"{path} has splits {list(loaded)}, not {split!r}")
            loaded = loaded[split]
        return loaded
    try:
        return datasets.load_dataset(path, split=split)
    except Exception as error:  # offline, unknown id, ...: say what was tried
        raise FileNotFoundError(f"{path} is not a save_to_disk folder, and loading it as a hub dataset failed: "
                                f"{error}") from error


def build_model(args: ModelArguments) -> D2LLMModel | BiEncoder:
    """Backbone + fresh heads (or a merged D2LLM checkpoint), or the bi-encoder baseline; then LoRA when asked."""
    source = args.model_name_or_path
    if source is None:
        from common import embedded_models

        source = embedded_models.smollm2_gguf()
    if args.objective == "bi-encoder":
        model = BiEncoder.from_pretrained(source, dtype=args.dtype, attn_implementation=args.attn_implementation,
                                          pooling=args.bi_encoder_pooling,
                                          prompt_template=args.prompt_template or None,
                                          max_seq_length=args.max_seq_length,
                                          bidirectional_layers=args.bidirectional_layers)
    elif _is_d2llm_checkpoint(source):
        model = D2LLMModel.from_pretrained(source, dtype=args.dtype)
        if model.has_lora:
            raise ValueError(f"{source} is an adapter checkpoint: continue from a merged checkpoint instead")
    else:
        model = D2LLMModel.from_backbone(source, dtype=args.dtype, attn_implementation=args.attn_implementation,
                                         **args.head_settings())
    if args.use_lora:
        model.enable_lora(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                          target_modules=args.lora_targets())
    return model


def _is_d2llm_checkpoint(path: str) -> bool:
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        return False
    with open(config_file, encoding="utf-8") as handle:
        return json.load(handle).get("model_type") == "d2llm"


def resolve_checkpoint(value: str | bool | None, output_dir: str) -> str | None:
    """``last`` (or ``true``): the newest ``checkpoint-*`` in ``output_dir``; a path: itself; None: no resuming."""
    if value in (None, False, "", "false", "False"):
        return None
    if value is True or value in RESUME_LAST:
        last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if last is None:
            raise ValueError(f"resume_from_checkpoint={value!r} but {output_dir} holds no checkpoint-* folder")
        return last
    if not os.path.isdir(value):
        raise ValueError(f"resume_from_checkpoint: {value} is not a folder")
    return value


def run(model_args: ModelArguments, data_args: DataArguments, training_args: D2LLMTrainingArguments
        ) -> D2LLMTrainer | BiEncoderTrainer:
    """Train, then save the merged model (+ adapter on request) and the model card, and push when asked.

    Every input is checked before anything is written to ``output_dir``.
    """
    if training_args.should_log:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    resume = resolve_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    train_dataset = load_scored(data_args.train_dataset, data_args.train_split)
    eval_dataset = load_scored(data_args.eval_dataset, data_args.eval_split) if data_args.eval_dataset else None
    set_seed(training_args.seed)
    model = build_model(model_args)
    if training_args.head_warmup_epochs > 0:
        if model_args.objective != "d2llm":
            raise ValueError("head_warmup_epochs trains the PMA/IEM heads of the D2LLM student (objective d2llm)")
        run_head_warmup(model, train_dataset, training_args, D2LLMTrainer, batch_size=data_args.batch_size,
                        num_negatives=data_args.num_negatives)
    if model_args.objective == "bi-encoder":
        if eval_dataset is not None:
            raise ValueError("eval_dataset is not supported with objective bi-encoder: evaluate the saved model "
                             "with evaluate_model.py")
        trainer = BiEncoderTrainer(model, training_args, train_dataset,
                                   loss_weights=training_args.bi_encoder_loss_weights)
    else:
        trainer = D2LLMTrainer(model=model, args=training_args, train_dataset=train_dataset,
                               eval_dataset=eval_dataset, batch_size=data_args.batch_size,
                               num_negatives=data_args.num_negatives)
    trainable = sum(param.numel() for param in model.parameters() if param.requires_grad)
    logger.info("%s: %d stored batches, %d trainable parameters", model_args.objective, len(train_dataset), trainable)
    trainer.train(resume_from_checkpoint=resume)
    if model_args.save_adapter and model.has_lora and training_args.should_save:
        model.save_pretrained(os.path.join(training_args.output_dir, ADAPTER_SUBDIR), merge_lora=False)
    datasets_used = [data_args.train_dataset] + ([data_args.eval_dataset] if data_args.eval_dataset else [])
    if eval_dataset is not None:
        trainer.evaluate()
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset=datasets_used)  # saves the model and the card, then uploads output_dir
    else:
        trainer.save_model()
        if isinstance(trainer, D2LLMTrainer):
            trainer.create_model_card(dataset=datasets_used)
    return trainer


def main(argv: Sequence[str] | None = None) -> D2LLMTrainer | BiEncoderTrainer:
    model_args, data_args, training_args = parse_arguments(argv)
    try:
        return run(model_args, data_args, training_args)
    except ScoredBatchError as error:  # name the file: the message names the batch, row and column
        raise ScoredBatchError(f"{data_args.train_dataset}: {error}") from None


if __name__ == "__main__":
    from common.cli_errors import run_command
    from distil.token_state_cache import CacheMismatchError
    from modeling_d2llm import CheckpointError

    run_command(main, ScoredBatchError, CacheMismatchError, CheckpointError, FileNotFoundError)
