"""LLM-QL pre-training (``baselines/llmql.py``): maximise log P(query | document), Attention Stop + Input Corruption.

    python -m baselines.pretrain_ql --model_name_or_path MODEL_OR.gguf --train_data PAIRS --output_dir DIR \\
        [--corruption 0.6] [--max_document_length 200] [--max_query_length 64] [--lora_r 0] [TrainingArguments...]
    accelerate launch -m baselines.pretrain_ql ...        (the same arguments, on several processes)

``PAIRS``: a JSONL file or a ``datasets`` folder of (query, positive) rows (``common.schema.EXAMPLE_FEATURES``). ``DIR``
receives the causal LM (LoRA merged in) and its tokenizer: ``D2LLMModel.from_backbone(DIR)`` and
``BiEncoder.from_pretrained(DIR)`` start from it. Trainer checkpoints go to ``DIR`` too, so
``--resume_from_checkpoint DIR/checkpoint-N`` resumes; they hold no pickle (``QLTrainer``). The data are read
before the model loads; bad input (a missing or unreadable ``PAIRS``, a model that does not load, a bad option
value) ends the command with exit status 2 and one line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

from transformers import AutoModelForCausalLM, HfArgumentParser, Trainer, TrainingArguments

from backbone_d2llm import load_backbone
from baselines.llmql import QLCollator, load_pairs
from common.cli_errors import ModelError, loading_model
from common.safe_checkpoints import SafeCheckpointMixin
from preprocess.readers import DataError, check_limit

TRAINING_ARGS_FILE = "training_args.json"


@dataclass
class QLArguments:
    model_name_or_path: str = field(metadata={"help": "causal LM: folder, hub id or .gguf file"})
    train_data: str = field(metadata={"help": "JSONL file or datasets folder of (query, positive) rows"})
    gguf_file: str | None = field(default=None, metadata={"help": "GGUF file inside model_name_or_path"})
    max_document_length: int = field(default=200, metadata={"help": "document tokens kept before the final one"})
    max_query_length: int = field(default=64, metadata={"help": "query tokens kept before its EOS"})
    corruption: float = field(default=0.6, metadata={"help": "fraction of document tokens masked (Input Corruption)"})
    attn_implementation: str = field(default="sdpa", metadata={"help": "sdpa or eager (4D masks: no flash)"})
    lora_r: int = field(default=0, metadata={"help": "LoRA rank; 0 trains every weight, as LLM-QL does"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha"})
    max_examples: int | None = field(default=None, metadata={"help": "train on the first N rows only"})

    def __post_init__(self) -> None:
        if self.attn_implementation not in ("sdpa", "eager"):
            raise DataError(f"--attn_implementation must be sdpa or eager, got {self.attn_implementation!r}")
        check_limit(self.max_examples, "--max_examples")


class QLTrainer(SafeCheckpointMixin, Trainer):
    """``Trainer`` whose checkpoints hold no pickle: optimizer, scheduler, scaler and random states as safetensors
    and JSON (``SafeCheckpointMixin``), the model as safetensors and the arguments as JSON."""

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        self.accelerator.unwrap_model(self.model).save_pretrained(output_dir, state_dict=state_dict)
        with open(os.path.join(output_dir, TRAINING_ARGS_FILE), "w", encoding="utf-8") as handle:
            handle.write(self.args.to_json_string())


def main(argv: Sequence[str] | None = None) -> Trainer:
    """Parse ``argv`` (default: the command line), train, save the backbone; returns the trainer (log history)."""
    ql, training = HfArgumentParser((QLArguments, TrainingArguments)).parse_args_into_dataclasses(args=argv)
    training.remove_unused_columns = False  # the collator reads the text columns
    data = load_pairs(ql.train_data)
    if ql.max_examples is not None:
        data = data.select(range(min(ql.max_examples, len(data))))
    with loading_model(ql.model_name_or_path, "a causal LM (a model folder, .gguf file or hub id)"):
        model, tokenizer = load_backbone(AutoModelForCausalLM, ql.model_name_or_path, gguf_file=ql.gguf_file,
                                         attn_implementation=ql.attn_implementation)
    if ql.lora_r:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=ql.lora_r, lora_alpha=ql.lora_alpha, target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
    collator = QLCollator(tokenizer, ql.max_document_length, ql.max_query_length, ql.corruption,
                          mask_dtype=model.dtype if ql.attn_implementation == "eager" else None, seed=training.seed)
    trainer = QLTrainer(model=model, args=training, train_dataset=data, data_collator=collator)
    trainer.train(resume_from_checkpoint=training.resume_from_checkpoint)
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        trained = trainer.accelerator.unwrap_model(trainer.model)
        if ql.lora_r:
            trained = trained.merge_and_unload()
        trained.save_pretrained(training.output_dir)
        tokenizer.save_pretrained(training.output_dir)
    return trainer


if __name__ == "__main__":
    from common.cli_errors import run_command

    run_command(main, DataError, ModelError)
