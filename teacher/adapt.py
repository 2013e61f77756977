"""Teacher adaptation: fine-tune a causal LM as the yes/no cross-encoder (docs/method.md, section 1.1).

A training stage on transformers' ``Trainer`` (``teacher.trainer.TeacherTrainer``): LoRA (default) or full
fine-tuning, one objective per data kind (``teacher.objectives``), dev evaluation every ``--eval-steps`` with the
best checkpoint kept by a dev metric, loss and learning rate logged, and a killed run resumed from its last
checkpoint. Training data:

* pairs files (graded: target = score / max score; labelled: 1 / 0) train with ``--pair-objective``:
  ``pointwise`` (class-balanced soft-label cross-entropy, one pair order), ``graded`` (the same loss unweighted,
  symmetric pairs in both orders) or ``cosent`` (CoSENT over the log-odds, both orders);
* mined examples (query, positive, hard negatives) train with ``--mined-objective``: ``listwise`` (group
  cross-entropy over the positive and ``--negatives`` K hard negatives) or ``pointwise`` (the positive and one
  seeded negative as pairs).

Command line::

    python -m teacher.adapt --teacher MODEL_OR_GGUF --output ADAPTER_DIR
        [--train-pairs FILE ...] [--train-mined DIR ...] [--limit N] [--pair-objective pointwise|graded|cosent]
        [--mined-objective listwise|pointwise] [--negatives 7] [--method lora|full] [--lora-r 16]
        [--dev-pairs FILE] [--dev-mined DIR] [--eval-steps 50] [--epochs 1] [--batch-size 16] [--lr 2e-4]
        [--checkpoint-dir DIR] [--keep-checkpoints] [--bf16] [--activation-checkpointing]
        [--dtype auto|float32|bfloat16]

writes, whole or not at all, the peft adapter (``--method full``: the whole model and tokenizer), the prompts and
token limits it was trained with (``teacher_prompts.json``, ``teacher_settings.json``) and
``adaptation_report.json`` (settings, log history, dev metrics before and after, time and memory). Use it as
``YesNoTeacher.from_pretrained(MODEL, adapter=DIR)`` (full: ``from_pretrained(DIR)``) or ``--adapter`` of the other
commands. A rerun with the same settings skips; with other settings it says so and trains again. Checkpoints
live in ``--checkpoint-dir`` (default ``OUTPUT.checkpoints``) until the output is written; ``--keep-checkpoints``
keeps all of them, after it too (each loads as an adapter).

A training pair with an empty text ends the command with exit status 2 and one line (adaptation takes no empty
text), as does a row that cannot be read or a ``--teacher`` that does not load. The other rows the reader skips (no
gold, identical texts, a repeated pair) are left out: each file's are counted in one line on stderr and recorded
under ``skipped`` (``train`` and ``dev``, by file) in ``adaptation_report.json``. The model trains where it is
loaded (the GPU when there is one; ``adapt`` trains a teacher on the CPU when it is on the CPU).
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, concatenate_datasets, load_from_disk
from transformers import TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from common.cli_errors import ModelError
from common.stages import write_whole
from preprocess.read_report import announce_skips
from preprocess.readers import POSITIVE_LABELS, DataError, check_limit, read_pairs
from teacher.adapt_data import LENGTH_COLUMN, group_rows, pair_rows, pairs_from_mined, row_lengths
from teacher.evaluate import add_dev_arguments, evaluate_teacher, load_dev
from teacher.model import YesNoTeacher, add_teacher_cost_arguments
from teacher.trainer import TeacherTrainer

logger = logging.getLogger(__name__)

REPORT_FILE = "adaptation_report.json"
RUN_SETTINGS_FILE = "adaptation_settings.json"
"""Kept in the checkpoint folder: the settings its checkpoints were trained with."""
PAIR_OBJECTIVES = ("pointwise", "graded", "cosent")
MINED_OBJECTIVES = ("listwise", "pointwise")


@dataclass
class AdaptConfig:
    """Everything that defines an adaptation run besides the model and the data files."""

    epochs: float = 1.0
    max_steps: int = -1
    """Stop after this many steps (-1: run ``epochs``)."""
    batch_size: int = 16
    """Rows per step: a pair row is one prompt, a group row 1 + ``negatives`` prompts."""
    lr: float = 2e-4
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    method: str = "lora"
    """``lora`` (peft adapter) or ``full`` (every weight trains)."""
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    """0 by default: on a CPU the dropout masks cost as much as the LoRA itself (SmolLM2-135M, batch 16: 7.2 s per
    step with 0.05, 4.3 s without, and 1.3 GB less memory; docs/results.md)."""
    target_modules: str | list[str] = "all-linear"
    pair_objective: str = "pointwise"
    mined_objective: str = "listwise"
    negatives: int = 7
    """K, hard negatives per group of the listwise objective."""
    cosent_scale: float = 1.0
    seed: int = 0
    group_by_length: bool = True
    """Rows of similar length (``adapt_data.row_lengths``) share a step, so little of each batch is padding; the
    steps still come in random order."""
    bf16: bool = False
    """bfloat16 autocast for the forward pass (faster on GPUs and on CPUs with AMX; weights stay float32)."""
    activation_checkpointing: bool = False
    """Recompute the backbone's activations in the backward pass: less memory, about a third more compute."""
    logging_steps: int = 1
    eval_steps: int = 50
    """Evaluate on the dev sets and save a checkpoint every this many steps (without dev sets: only save)."""
    eval_batch_size: int = 16
    metric_for_best: str = "auto"
    """The dev metric that picks the kept checkpoint (``eval_pairs_spearman``, ...); auto: the first one logged."""

    def __post_init__(self) -> None:
        for name, value, choices in (("pair_objective", self.pair_objective, PAIR_OBJECTIVES),
                                     ("mined_objective", self.mined_objective, MINED_OBJECTIVES),
                                     ("method", self.method, ("lora", "full"))):
            if value not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {value!r}")


@dataclass
class AdaptResult:
    losses: list[float]
    """The training loss of every logged step (``logging_steps``)."""
    log_history: list[dict[str, float]] = field(default_factory=list)
    best_checkpoint: str | None = None
    best_metric: float | None = None
    steps_run: int = 0
    """Steps this call trained (a resumed run: those after its checkpoint)."""


def add_lora(teacher: YesNoTeacher, config: AdaptConfig) -> None:
    """Wrap the teacher's model in a trainable peft LoRA (all linear layers but the output head by default);
    with ``method="full"`` every weight stays trainable instead."""
    if config.method == "full":
        teacher.model.requires_grad_(True)
        return
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.target_modules, task_type="CAUSAL_LM")
    teacher.model = get_peft_model(teacher.model, lora)


def build_training_rows(pairs: Sequence[Dataset], mined: Sequence[tuple[str, Dataset]], config: AdaptConfig
                        ) -> Dataset:
    """Training rows (``adapt_data.TRAIN_FEATURES``) of ``PAIR_FEATURES`` pair sets and named mined sets.

    ``pointwise`` pairs (and ``pointwise`` mined examples, as one positive and one negative pair each) are
    class-balanced over all of them together; ``graded`` and ``cosent`` pairs are unweighted, symmetric ones in
    both orders; ``listwise`` mined examples become groups of 1 + K.
    """
    pair_sets = list(pairs)
    if config.mined_objective == "pointwise":
        pair_sets += [pairs_from_mined(examples, config.seed) for _, examples in mined]
    parts = []
    if pair_sets:
        joined = concatenate_datasets(pair_sets)
        if config.pair_objective == "pointwise":
            parts.append(pair_rows(joined, weighted=True))
        else:
            symmetric = joined.filter(lambda row: row["task"] == "symmetric")
            others = joined.filter(lambda row: row["task"] != "symmetric")
            parts += [pair_rows(part, weighted=False, both_orders=both)
                      for part, both in ((symmetric, True), (others, False)) if len(part)]
    if config.mined_objective == "listwise":
        parts += [group_rows(examples, config.negatives, name) for name, examples in mined]
    if not parts:
        raise DataError("give training data: --train-pairs and/or --train-mined")
    return concatenate_datasets(parts)


def training_arguments(config: AdaptConfig, output_dir: str, metric: str | None,
                       keep_checkpoints: bool = False, use_cpu: bool = False) -> TrainingArguments:
    """``TrainingArguments`` of ``config``; with a dev ``metric``, evaluate and save every ``eval_steps`` and keep
    the best checkpoint by it; the last two checkpoints (and the best) stay on disk, or all with
    ``keep_checkpoints``. ``use_cpu``: train on the CPU even where a GPU is visible."""
    return TrainingArguments(
        output_dir=output_dir, use_cpu=use_cpu, per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size, num_train_epochs=config.epochs,
        max_steps=config.max_steps, learning_rate=config.lr, warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay, max_grad_norm=1.0, lr_scheduler_type="linear", seed=config.seed,
        data_seed=config.seed, logging_steps=config.logging_steps, save_strategy="steps",
        save_steps=config.eval_steps, save_total_limit=None if keep_checkpoints else 2,
        eval_strategy="steps" if metric else "no",
        eval_steps=config.eval_steps if metric else None, load_best_model_at_end=metric is not None,
        metric_for_best_model=metric, greater_is_better=True, report_to=[], remove_unused_columns=False,
        dataloader_num_workers=0, dataloader_pin_memory=False, activation_checkpointing=config.activation_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False}, disable_tqdm=False,
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        length_column_name=LENGTH_COLUMN)


def with_lengths(train: Dataset, config: AdaptConfig) -> Dataset:
    """``train`` with the ``LENGTH_COLUMN`` the length-grouped sampler reads (as it is without grouping)."""
    return train.add_column(LENGTH_COLUMN, row_lengths(train)) if config.group_by_length else train


def best_metric_name(config: AdaptConfig, dev_pairs: Dataset | None, dev_mined: Dataset | None) -> str | None:
    """``config.metric_for_best``, or the first dev metric (``pairs`` before ``reranking``); None without dev."""
    if dev_pairs is None and dev_mined is None:
        return None
    if config.metric_for_best != "auto":
        return config.metric_for_best
    if dev_pairs is not None:
        return "eval_pairs_average_precision" if set(dev_pairs["target"]) <= {0.0, 1.0} else "eval_pairs_spearman"
    return "eval_reranking_ndcg@10"


def adapt(teacher: YesNoTeacher, train: Dataset, config: AdaptConfig | None = None, *,
          dev_pairs: Dataset | None = None, dev_mined: Dataset | None = None,
          checkpoint_dir: str | Path | None = None, settings: dict[str, Any] | None = None,
          keep_checkpoints: bool = False) -> AdaptResult:
    """Fine-tune the teacher's trainable parameters (after ``add_lora``) on ``train`` rows (``TRAIN_FEATURES``).

    Checkpoints go to ``checkpoint_dir`` (a temporary folder when None, removed after); a run finding checkpoints
    there made with the same ``settings`` resumes from the last one, with other settings it starts over (and says
    so). With dev sets the best checkpoint by the dev metric is loaded at the end. ``keep_checkpoints`` keeps every
    checkpoint (each loads as an adapter: a learning curve); it is not a setting, so a resumed run may change it.
    A teacher on the CPU trains on the CPU (the Trainer would move it to a visible GPU), one on a GPU on the GPU.
    """
    config = config or AdaptConfig()
    if not any(parameter.requires_grad for parameter in teacher.model.parameters()):
        raise ValueError("the teacher has no trainable parameters; call add_lora first")
    temporary = checkpoint_dir is None
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else Path(tempfile.mkdtemp(prefix="teacher-adapt-"))
    resume = _resumable_checkpoint(folder, {**(settings or {}), "config": asdict(config)})
    metric = best_metric_name(config, dev_pairs, dev_mined)
    args = training_arguments(config, str(folder), metric, keep_checkpoints, use_cpu=teacher.device.type == "cpu")
    pair_loss = "cosent" if config.pair_objective == "cosent" else "bce"
    trainer = TeacherTrainer(teacher, args=args, train_dataset=with_lengths(train, config), dev_pairs=dev_pairs,
                             dev_mined=dev_mined, pair_loss=pair_loss, cosent_scale=config.cosent_scale,
                             bf16=config.bf16)
    try:
        trainer.train(resume_from_checkpoint=resume)
    finally:
        if config.activation_checkpointing:
            teacher.model.activation_checkpointing_disable()
        teacher.model.eval()
    history = trainer.state.log_history
    start = int(Path(resume).name.rsplit("-", 1)[1]) if resume else 0
    result = AdaptResult(losses=[entry["loss"] for entry in history if "loss" in entry], log_history=history,
                         best_checkpoint=trainer.state.best_model_checkpoint, best_metric=trainer.state.best_metric,
                         steps_run=trainer.state.global_step - start)
    if temporary:
        shutil.rmtree(folder, ignore_errors=True)
    return result


def _resumable_checkpoint(folder: Path, settings: dict[str, Any]) -> str | None:
    """The last checkpoint in ``folder`` if it was trained with ``settings``; a folder of other settings is
    cleared (with one line saying so). Records ``settings`` in the folder."""
    recorded = folder / RUN_SETTINGS_FILE
    canonical = json.loads(json.dumps(settings))
    if recorded.is_file() and json.loads(recorded.read_text(encoding="utf-8")) != canonical:
        logger.warning("%s holds checkpoints of other settings: starting over", folder)
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    recorded.write_text(json.dumps(canonical, indent=2), encoding="utf-8")
    last = get_last_checkpoint(str(folder))
    if last:
        logger.info("resuming from %s", last)
    return last


def save_adapter(teacher: YesNoTeacher, output: str | Path, report: dict) -> None:
    """The peft adapter (a full model: its weights and tokenizer), the prompts and token limits it was trained
    with, and the report, in ``output``: the folder appears whole or not at all (``common.stages.write_whole``)."""

    def write(folder: Path) -> None:
        teacher.model.save_pretrained(str(folder))
        if not hasattr(teacher.model, "peft_config"):
            teacher.tokenizer.save_pretrained(str(folder))
        teacher.save_prompts(folder)
        (folder / REPORT_FILE).write_text(json.dumps(report, indent=2), encoding="utf-8")

    write_whole(Path(output), write)


def load_training_pairs(pair_files: Sequence[str], task: str, limit: int | None, seed: int, layout: str = "auto",
                        positive_labels: Sequence[str] = POSITIVE_LABELS) -> tuple[list[Dataset], dict[str, dict]]:
    """Pairs files read with ``layout`` (``auto``: graded when rows carry a score, as SICK does next to its label;
    ``labelled``: positive when the label is in ``positive_labels``), and the rows skipped in each,
    ``{file: announce_skips(report)}``. A pair with an empty text is a ``DataError``."""
    sets, skipped = [], {}
    for path in pair_files:
        pairs, report = read_pairs(path, layout=layout, task=task, limit=limit, seed=seed,
                                   positive_labels=positive_labels)
        if report.skipped.get("empty text"):
            raise DataError(f"{report.examples_of_skips['empty text'][0]}: field sentence1 or sentence2 is empty "
                            "(teacher adaptation takes no empty texts)")
        sets.append(pairs)
        skipped[path] = announce_skips(report)
    return sets, skipped


def load_mined(mined_dirs: Sequence[str], limit: int | None, seed: int) -> list[tuple[str, Dataset]]:
    """Mined datasets by folder name, ``limit`` rows of each drawn with ``seed`` (below 1: a ``DataError``)."""
    check_limit(limit)
    sets = []
    for path in mined_dirs:
        if not Path(path).is_dir():
            raise FileNotFoundError(f"{path}: no such mined dataset folder")
        mined = load_from_disk(path)
        if limit is not None and limit < len(mined):
            mined = mined.shuffle(seed=seed).select(range(limit))
        sets.append((path, mined))
    return sets


def peak_memory_gb() -> float:
    """This process's peak resident memory so far, in GB (Linux ``ru_maxrss`` is in KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def parse_arguments(argv: Sequence[str] | None) -> tuple[argparse.Namespace, AdaptConfig]:
    defaults = AdaptConfig()
    parser = argparse.ArgumentParser(description="Adapt a causal LM as the yes/no teacher (LoRA or full). A training "
                                     "pair with an empty text is refused (exit status 2); the other rows the reader "
                                     "skips are counted in one line on stderr and under 'skipped' in "
                                     f"{REPORT_FILE}.")
    parser.add_argument("--teacher", required=True, help="causal LM: hub id, folder or .gguf file")
    parser.add_argument("--output", required=True, help="folder for the adapter (or full model) and report")
    parser.add_argument("--checkpoint-dir", help="where checkpoints live until the output is written "
                                                 "(default OUTPUT.checkpoints); a killed run resumes from there")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep every checkpoint, and the folder after the run (each loads as an adapter: the "
                             "learning curve of benchmarks/bench_teacher.py --curve)")
    parser.add_argument("--train-pairs", nargs="*", default=[], help="graded or labelled pairs files")
    parser.add_argument("--train-task", default="symmetric", help="task of the training pairs files")
    parser.add_argument("--train-layout", default="auto", choices=("auto", "graded", "labelled"),
                        help="how to read the pairs files (auto: graded when rows have a score)")
    parser.add_argument("--positive-labels", nargs="+", default=list(POSITIVE_LABELS),
                        help="labelled layout: labels whose target is 1")
    parser.add_argument("--train-mined", nargs="*", default=[], help="mined datasets (retrieval positives)")
    parser.add_argument("--limit", type=int, help="use this many rows of each training source, drawn with --seed")
    parser.add_argument("--pair-objective", choices=PAIR_OBJECTIVES, default=defaults.pair_objective)
    parser.add_argument("--mined-objective", choices=MINED_OBJECTIVES, default=defaults.mined_objective)
    parser.add_argument("--negatives", type=int, default=defaults.negatives, help="K of the listwise groups")
    parser.add_argument("--cosent-scale", type=float, default=defaults.cosent_scale)
    parser.add_argument("--method", choices=("lora", "full"), default=defaults.method)
    parser.add_argument("--epochs", type=float, default=defaults.epochs)
    parser.add_argument("--max-steps", type=int, default=defaults.max_steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--warmup-ratio", type=float, default=defaults.warmup_ratio)
    parser.add_argument("--lora-r", type=int, default=defaults.lora_r)
    parser.add_argument("--lora-alpha", type=int, default=defaults.lora_alpha)
    parser.add_argument("--lora-dropout", type=float, default=defaults.lora_dropout)
    parser.add_argument("--target-modules", nargs="+", default=[defaults.target_modules],
                        help="LoRA target modules (all-linear: every linear layer but the output head)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--eval-steps", type=int, default=defaults.eval_steps)
    parser.add_argument("--metric-for-best", default=defaults.metric_for_best)
    parser.add_argument("--max-query-tokens", type=int, default=128)
    parser.add_argument("--max-passage-tokens", type=int, default=384)
    parser.add_argument("--eval-batch-size", type=int, default=defaults.eval_batch_size)
    parser.add_argument("--bf16", action="store_true",
                        help="bfloat16 autocast for the training forward pass (also implied by --dtype bfloat16, and "
                             "by --dtype auto where the hardware is fast at bf16)")
    parser.add_argument("--activation-checkpointing", action="store_true",
                        help="recompute activations in the backward pass (less memory, slower)")
    parser.add_argument("--no-group-by-length", dest="group_by_length", action="store_false",
                        help="batches in plain random order (default: rows of similar length share a step)")
    add_dev_arguments(parser)
    add_teacher_cost_arguments(parser)
    args = parser.parse_args(argv)
    targets = args.target_modules[0] if args.target_modules == ["all-linear"] else args.target_modules
    config = AdaptConfig(epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size, lr=args.lr,
                         warmup_ratio=args.warmup_ratio, method=args.method, lora_r=args.lora_r,
                         lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, target_modules=targets,
                         pair_objective=args.pair_objective, mined_objective=args.mined_objective,
                         negatives=args.negatives, cosent_scale=args.cosent_scale, seed=args.seed,
                         group_by_length=args.group_by_length,
                         activation_checkpointing=args.activation_checkpointing, eval_steps=args.eval_steps,
                         eval_batch_size=args.eval_batch_size, metric_for_best=args.metric_for_best)
    return args, config


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """What the output depends on besides ``AdaptConfig``: the model, the data and how it is read, the prompts. A
    model or data file on disk stands as the digest of its content (``contents``), so one edited in place under the
    same name is another input: its checkpoints are not resumed."""
    from common.fingerprints import saved_digest

    keys = ("teacher", "train_pairs", "train_task", "train_layout", "positive_labels", "train_mined", "limit",
            "max_query_tokens", "max_passage_tokens", "dev_pairs", "dev_limit", "dev_mined", "dev_queries",
            "dev_task", "dtype", "prompt_preset", "bf16")
    settings = {key: getattr(args, key) for key in keys}
    paths = [args.teacher, *args.train_pairs, *args.train_mined, args.dev_pairs, args.dev_mined]
    settings["contents"] = {path: saved_digest(path) for path in paths if path and Path(path).exists()}
    return settings


def main(argv: Sequence[str] | None = None) -> None:
    args, config = parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    output = Path(args.output)
    settings = run_settings(args)
    expected = json.loads(json.dumps({**settings, "config": asdict(config)}))
    done = output / REPORT_FILE
    if done.is_file() and json.loads(done.read_text(encoding="utf-8")).get("settings") == expected:
        logger.info("%s is adapted with these settings already: skipped", output)
        return
    torch.manual_seed(args.seed)
    train_pairs, train_skipped = load_training_pairs(args.train_pairs, args.train_task, args.limit, args.seed,
                                                     args.train_layout, args.positive_labels)
    train = build_training_rows(train_pairs, load_mined(args.train_mined, args.limit, args.seed), config)
    dev_pairs, dev_mined, dev_skipped = load_dev(args)
    if done.is_file():
        logger.info("%s was adapted with other settings: adapting again", output)
    teacher = YesNoTeacher.from_pretrained(args.teacher, max_query_tokens=args.max_query_tokens,
                                           max_passage_tokens=args.max_passage_tokens, dtype=args.dtype,
                                           prompt_preset=args.prompt_preset or "spec")
    config.bf16 = args.bf16 or teacher.compute.dtype == "bfloat16"
    before = evaluate_teacher(teacher, dev_pairs, dev_mined, args.eval_batch_size)
    logger.info("before: %s", before)
    add_lora(teacher, config)
    started = time.perf_counter()
    checkpoints = args.checkpoint_dir or f"{output}.checkpoints"
    result = adapt(teacher, train, config, dev_pairs=dev_pairs, dev_mined=dev_mined, checkpoint_dir=checkpoints,
                   settings=settings, keep_checkpoints=args.keep_checkpoints)
    train_seconds = time.perf_counter() - started
    after = evaluate_teacher(teacher, dev_pairs, dev_mined, args.eval_batch_size)
    prompts = sum(len(row) for row in train["passages"])
    seen = result.steps_run * config.batch_size * prompts / max(1, len(train))  # prompts this process trained on
    logger.info("after: %s; %d rows (%d prompts), %d steps in %.0fs", after, len(train), prompts,
                len(result.losses), train_seconds)
    save_adapter(teacher, output, {
        "settings": expected, "train_size": len(train), "train_prompts": prompts,
        "compute": teacher.compute.to_dict(), "losses": result.losses, "log_history": result.log_history,
        "best_checkpoint": result.best_checkpoint, "best_metric": result.best_metric,
        "dev_before": before, "dev_after": after,
        "train_seconds": train_seconds, "steps_run": result.steps_run,
        "seconds_per_1000_prompts": 1000 * train_seconds / max(1.0, seen),
        "peak_memory_gb": peak_memory_gb(), "skipped": {"train": train_skipped, "dev": dev_skipped},
        "command": sys.argv})
    if not args.keep_checkpoints:
        shutil.rmtree(checkpoints, ignore_errors=True)
    logger.info("adapter -> %s", output)


if __name__ == "__main__":
    from common.cli_errors import run_command

    run_command(main, DataError, ModelError, FileNotFoundError)
