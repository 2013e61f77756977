"""Teacher adaptation: LoRA fine-tuning of a causal LM as the yes/no cross-encoder (docs/method.md, section 1).

Training pairs carry a target probability of "yes": graded pairs give score / max score (soft targets),
labelled pairs 1 / 0, and mined retrieval examples give (query, positive) = 1 and (query, one seeded hard
negative) = 0. The loss is the cross-entropy between ``softmax([l_yes, l_no])`` at the last prompt position
and ``[target, 1 - target]``, with positives (target >= 0.5) and negatives weighted to equal total weight.
The teacher is evaluated on dev data (``teacher_eval``) before and after.

Command line::

    python -m teacher.adapt --teacher MODEL_OR_GGUF --output ADAPTER_DIR
        [--train-pairs FILE ...] [--train-mined DIR ...] [--limit N]
        [--dev-pairs FILE] [--dev-mined DIR] [--epochs 1] [--batch-size 16] [--lr 2e-4] [--lora-r 16]
        [--bf16] [--activation-checkpointing] [--dtype auto|float32|bfloat16] [--prompt-preset spec|short]

writes the peft adapter (``adapter_config.json``, ``adapter_model.safetensors``), the prompts and token limits it
was trained with (``teacher_prompts.json``, ``teacher_settings.json``) and ``adaptation_report.json`` (settings,
losses, dev metrics before/after). Use it as ``YesNoTeacher.from_pretrained(MODEL, adapter=ADAPTER_DIR)`` or
``--adapter`` of the other commands: both read the prompts and token limits back.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from datasets import Dataset, concatenate_datasets, load_from_disk
from tqdm.auto import tqdm

from preprocess.readers import PAIR_FEATURES, POSITIVE_LABELS, read_pairs
from common.stages import write_whole
from teacher.evaluate import add_dev_arguments, evaluate_teacher, load_dev
from teacher.model import PROMPTS_FILE, SETTINGS_FILE, YesNoTeacher, add_teacher_cost_arguments
from teacher.prompts import prompts_to_json

logger = logging.getLogger(__name__)

REPORT_FILE = "adaptation_report.json"


@dataclass
class AdaptConfig:
    epochs: float = 1.0
    batch_size: int = 16
    lr: float = 2e-4
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"
    seed: int = 0
    bf16: bool = False
    """Run the forward pass under bfloat16 autocast (faster on GPUs and on CPUs with AMX; LoRA weights stay
    float32)."""
    activation_checkpointing: bool = False
    """Recompute the backbone's activations in the backward pass: less memory, about a third more compute."""


def pairs_from_mined(mined: Dataset, seed: int = 0) -> Dataset:
    """Balanced pairs of mined examples: (query, positive) target 1 and (query, a seeded negative) target 0."""
    rows = []
    for row in mined:
        negative = random.Random(f"{seed}\x1f{row['query']}\x1f{row['positive']}").choice(row["negatives"])
        common = {"query": row["query"], "task": row["task"], "language": row["language"]}
        rows += [{**common, "passage": row["positive"], "target": 1.0},
                 {**common, "passage": negative, "target": 0.0}]
    return Dataset.from_list(rows, features=PAIR_FEATURES)


def class_weights(targets: Sequence[float]) -> list[float]:
    """Per-pair weights giving positives (target >= 0.5) and negatives equal total weight, mean weight 1."""
    positives = sum(target >= 0.5 for target in targets)
    negatives = len(targets) - positives
    if not positives or not negatives:
        return [1.0] * len(targets)
    return [len(targets) / (2 * (positives if target >= 0.5 else negatives)) for target in targets]


def add_lora(teacher: YesNoTeacher, config: AdaptConfig) -> None:
    """Wrap the teacher's model in a trainable peft LoRA (all linear layers but the output head by default)."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.target_modules, task_type="CAUSAL_LM")
    teacher.model = get_peft_model(teacher.model, lora)


def adapt(teacher: YesNoTeacher, train: Dataset, config: AdaptConfig | None = None) -> list[float]:
    """Fine-tune the teacher's trainable parameters (after ``add_lora``) on ``train`` (``PAIR_FEATURES``).

    Returns the loss of every step. Pairs are shuffled with ``config.seed``; each pair is encoded with the
    prompt of its own task and language.
    """
    config = config or AdaptConfig()
    sequences, answers = _encode(teacher, train)
    targets = torch.tensor(train["target"], dtype=torch.float32)
    weights = torch.tensor(class_weights(train["target"]), dtype=torch.float32)
    generator = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = math.ceil(len(sequences) / config.batch_size)
    total_steps = max(1, round(config.epochs * steps_per_epoch))
    order = torch.cat([torch.randperm(len(sequences), generator=generator)
                       for _ in range(math.ceil(config.epochs))]).tolist()
    parameters = [p for p in teacher.model.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError("the teacher has no trainable parameters; call add_lora first")
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    warmup = max(1, round(config.warmup_ratio * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (total_steps - step) / (total_steps - warmup + 1))))
    if config.activation_checkpointing:
        teacher.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    teacher.model.train()
    losses = []
    progress = tqdm(range(total_steps), desc="adapting teacher", unit="step", dynamic_ncols=True)
    for step in progress:
        indices = order[step * config.batch_size:(step + 1) * config.batch_size]
        with torch.autocast(teacher.device.type, dtype=torch.bfloat16, enabled=config.bf16):
            logits, _ = teacher.forward(teacher.collate([sequences[i] for i in indices]),
                                        torch.tensor([answers[i] for i in indices]))
        log_probabilities = torch.log_softmax(logits.float(), dim=-1)
        target = targets[indices].to(logits.device)
        per_pair = -(target * log_probabilities[:, 0] + (1 - target) * log_probabilities[:, 1])
        loss = (per_pair * weights[indices].to(logits.device)).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        progress.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.4f}")
    if config.activation_checkpointing:
        teacher.model.activation_checkpointing_disable()
    teacher.model.eval()
    return losses


def _encode(teacher: YesNoTeacher, pairs: Dataset) -> tuple[list[list[int]], list[tuple[int, int]]]:
    """Prompt token ids and (yes, no) answer ids of every pair, encoded per (task, language) group."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for index, key in enumerate(zip(pairs["task"], pairs["language"])):
        groups[key].append(index)
    queries, passages = pairs["query"], pairs["passage"]
    sequences: list[list[int]] = [[] for _ in range(len(pairs))]
    answers: list[tuple[int, int]] = [(0, 0)] * len(pairs)
    for (task, language), indices in groups.items():
        encoded = teacher.encode_pairs([queries[i] for i in indices], [passages[i] for i in indices], task, language)
        for index, ids in zip(indices, encoded):
            sequences[index], answers[index] = ids, teacher.answer_ids(task, language)
    return sequences, answers


def save_adapter(teacher: YesNoTeacher, output: str | Path, report: dict) -> None:
    """The peft adapter, the prompts and token limits it was trained with, and the report, in ``output``: the
    folder appears whole or not at all (``stages.write_whole``), replacing an older one."""

    def write(folder: Path) -> None:
        teacher.model.save_pretrained(str(folder))
        (folder / PROMPTS_FILE).write_text(prompts_to_json(teacher.prompts), encoding="utf-8")
        (folder / SETTINGS_FILE).write_text(json.dumps(teacher.settings(), indent=2), encoding="utf-8")
        (folder / REPORT_FILE).write_text(json.dumps(report, indent=2), encoding="utf-8")

    write_whole(Path(output), write)


def load_training_pairs(pair_files: Sequence[str], mined_dirs: Sequence[str], task: str, limit: int | None,
                        seed: int, layout: str = "auto", positive_labels: Sequence[str] = POSITIVE_LABELS
                        ) -> Dataset:
    """Pairs files read with ``layout`` (``auto``: graded when rows carry a score, as SICK does next to its
    label; ``labelled`` reads the label, positive when in ``positive_labels``) and mined examples."""
    parts = [read_pairs(path, layout=layout, task=task, limit=limit, seed=seed, positive_labels=positive_labels)[0]
             for path in pair_files]
    for path in mined_dirs:
        mined = load_from_disk(path)
        if limit is not None and limit < len(mined):
            mined = mined.shuffle(seed=seed).select(range(limit))
        parts.append(pairs_from_mined(mined, seed))
    if not parts:
        raise ValueError("give training data: --train-pairs and/or --train-mined")
    return concatenate_datasets(parts)


def main(argv: Sequence[str] | None = None) -> None:
    defaults = AdaptConfig()
    parser = argparse.ArgumentParser(description="LoRA-adapt a causal LM as the yes/no teacher.")
    parser.add_argument("--teacher", required=True, help="causal LM: hub id, folder or .gguf file")
    parser.add_argument("--output", required=True, help="folder for the LoRA adapter and report")
    parser.add_argument("--train-pairs", nargs="*", default=[], help="graded or labelled pairs files")
    parser.add_argument("--train-task", default="symmetric", help="task of the training pairs files")
    parser.add_argument("--train-layout", default="auto", choices=("auto", "graded", "labelled"),
                        help="how to read the pairs files (auto: graded when rows have a score)")
    parser.add_argument("--positive-labels", nargs="+", default=list(POSITIVE_LABELS),
                        help="labelled layout: labels whose target is 1")
    parser.add_argument("--train-mined", nargs="*", default=[], help="mined datasets (retrieval positives)")
    parser.add_argument("--limit", type=int, help="use this many rows of each training source, drawn with --seed")
    parser.add_argument("--epochs", type=float, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--lora-r", type=int, default=defaults.lora_r)
    parser.add_argument("--lora-alpha", type=int, default=defaults.lora_alpha)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--max-query-tokens", type=int, default=128)
    parser.add_argument("--max-passage-tokens", type=int, default=384)
    parser.add_argument("--eval-batch-size", type=int, default=16)
    parser.add_argument("--bf16", action="store_true",
                        help="bfloat16 autocast for the training forward pass (also implied by --dtype bfloat16, and "
                             "by --dtype auto where the hardware is fast at bf16)")
    parser.add_argument("--activation-checkpointing", action="store_true",
                        help="recompute activations in the backward pass (less memory, slower)")
    add_dev_arguments(parser)
    add_teacher_cost_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(args.seed)
    train = load_training_pairs(args.train_pairs, args.train_mined, args.train_task, args.limit, args.seed,
                                args.train_layout, args.positive_labels)
    dev_pairs, dev_mined = load_dev(args)
    teacher = YesNoTeacher.from_pretrained(args.teacher, max_query_tokens=args.max_query_tokens,
                                           max_passage_tokens=args.max_passage_tokens, dtype=args.dtype,
                                           prompt_preset=args.prompt_preset or "spec")
    config = AdaptConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lora_r=args.lora_r,
                         lora_alpha=args.lora_alpha, seed=args.seed,
                         bf16=args.bf16 or teacher.compute.dtype == "bfloat16",
                         activation_checkpointing=args.activation_checkpointing)
    started = time.perf_counter()
    before = evaluate_teacher(teacher, dev_pairs, dev_mined, args.eval_batch_size)
    logger.info("before: %s (%.0fs)", before, time.perf_counter() - started)
    add_lora(teacher, config)
    started = time.perf_counter()
    losses = adapt(teacher, train, config)
    train_seconds = time.perf_counter() - started
    after = evaluate_teacher(teacher, dev_pairs, dev_mined, args.eval_batch_size)
    logger.info("after: %s; %d pairs, %d steps in %.0fs (%.1f s/step)", after, len(train), len(losses),
                train_seconds, train_seconds / max(1, len(losses)))
    save_adapter(teacher, args.output, {
        "teacher": args.teacher, "train_pairs": args.train_pairs, "train_mined": args.train_mined,
        "train_size": len(train), "config": asdict(config), "compute": teacher.compute.to_dict(),
        "losses": losses, "train_seconds": train_seconds,
        "dev_before": before, "dev_after": after})
    logger.info("adapter -> %s", args.output)


if __name__ == "__main__":
    from common.cli_errors import run_command
    from preprocess.readers import DataError

    run_command(main, DataError, FileNotFoundError)
