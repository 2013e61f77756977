"""The main job: labelled pairs -> adapted teacher -> teacher-scored pairs -> distilled student -> a comparison
table -> search demo, each stage one of the project's own commands, offline on the embedded models.

    python pipeline.py [--workdir outputs/main] [--data data/demo] [--seed 42] [--teacher GGUF_OR_MODEL]
                       [--student GGUF_OR_MODEL] [--teacher-steps 60] [--gold-weight 0] [--teacher-dtype auto]

Data (``--data``): graded pairs ``stsb/train.jsonl`` and ``stsb/test.jsonl`` (or ``en/stsb/...``, the layout of the
public data folder in docs/data_preparation.md) and a BEIR folder ``retrieval/`` (the bundled one where the folder
has none). Default: ``data/demo``, a slice of STS-B (1,500 training and 500 held-out pairs) and a small
retrieval set written for this project. Every row is read and checked before the first stage: a bad one ends the
job with exit status 2 and one line naming the file, row and field.

Stages: the teacher (SmolLM2-135M-Instruct by default) is adapted as a yes/no cross-encoder on the training pairs
(CoSENT over its yes/no log-odds, LoRA, ``--teacher-steps``, each text cut to 48 tokens, which keeps a float32
step under 6 GB and cuts 0.4 % of the demo's sentences); it scores every training pair
(``teacher.label_pairs``: the target ``lambda * gold + (1 - lambda) * p(yes)`` with lambda = ``--gold-weight``);
the D2LLM student's PMA and IEM learn those scores (CoSENT) on the frozen backbone's cached token states (head
warm-up of ``train.py``); two baselines train on the same pairs: the same student left untrained (same seed) and
a mean-pooling bi-encoder of the same backbone (LoRA, gold scores, ``--bi-encoder-steps``); then every model and
all-MiniLM-L6-v2 are evaluated on the held-out pairs and the retrieval set (``evaluation.comparison``), and the
distilled student builds a search index and answers two queries. What this trades for ten minutes on two CPU
cores: the student trains its heads only (no LoRA end to end) on pair batches (no mined hard negatives, so none
of the paper's contrastive and rank terms), the teacher sees a thousand prompts, and the bi-encoder baseline gets a
short LoRA run; ``train.py`` with ``configs/smollm2.yaml`` on teacher-scored batches is the full recipe.

Outputs in ``WORKDIR``: the distilled model ``d2llm-student`` (``AutoModel.from_pretrained(path,
trust_remote_code=True)``), the table ``results.json`` and its picture ``results.png``. A stage whose output exists
and was built with the same settings is skipped, so a stopped run continues where it stopped; each command is
printed before it runs. A stage writes to ``WORKDIR/.partial`` and its output is renamed into place only when it
succeeded, so a stage killed midway is done again, never skipped. Each stage records its settings (its command, and
a digest of the stages it depends on) in ``WORKDIR/NAME.settings.json`` (``common.stages.settings_path``): a rerun
with other settings (``--teacher-steps 100``, another seed, other data) says so in one line and rebuilds the first
stage they change and every stage after it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common.stages import build_once, is_built_with

REPO = Path(__file__).resolve().parent
PYTHON = sys.executable
DEMO = REPO / "data" / "demo"
# ``accelerate launch`` as one process without an accelerate config file; the script and its options follow
ACCELERATE_ONE_PROCESS = [PYTHON, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
                          "--mixed_precision", "no", "--dynamo_backend", "no"]
OUTPUT_MARK = "{output}"  # stands for the stage's output in the command it records


def export_backbone(source: str, target: Path) -> None:
    """Unpack a ``.gguf`` causal LM once into a plain folder: later stages load it in seconds, not ~30 s each."""
    from transformers import AutoModelForCausalLM

    from backbone_d2llm import load_backbone

    model, tokenizer = load_backbone(AutoModelForCausalLM, source)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)


class StageError(RuntimeError):
    """A stage's command that failed with exit ``status``; the command has printed why (one ``error:`` line for bad
    input, status 2)."""

    def __init__(self, stage: str, status: int) -> None:
        super().__init__(f"[{stage}] failed with exit status {status}")
        self.status = status


def run_stage_command(stage: str, arguments: list[str]) -> None:
    """Run one stage's command from the repository root, printing it first; ``StageError`` when it fails."""
    print(f"\n[{stage}] $ {shlex.join(arguments)}", flush=True)
    status = subprocess.run(arguments, cwd=REPO).returncode
    if status:
        raise StageError(stage, status)


@dataclass
class Chain:
    """One run's stages in order: each stage's settings hold a digest of the previous stage's, so a stage rebuilt
    with other settings rebuilds every stage after it. ``log``: the seconds of each stage built."""

    log: list[tuple[str, float]] = field(default_factory=list)
    previous: str = ""
    announced: bool = False


def run(stage: str, output: Path, command: Callable[[str], list[str]], chain: Chain) -> None:
    """Run ``command(partial)``, which writes the stage's output to ``partial`` (``common.stages.build_once``:
    renamed to ``output`` when the command succeeded, redone when it was killed), unless ``output`` was built with
    the same settings: ``command(OUTPUT_MARK)`` after the previous stage's settings. The first stage of the run
    found built with other settings is named in one line. The stage's wall time goes to ``chain.log``."""
    settings = {"command": command(OUTPUT_MARK), "after": chain.previous}
    chain.previous = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    if output.exists() and not is_built_with(output, settings) and not chain.announced:
        print(f"[{stage}] {output} was built with other settings: rebuilding it and every stage after it", flush=True)
        chain.announced = True

    seconds = build_once(output, lambda partial: run_stage_command(stage, command(str(partial))), settings)
    if seconds is None:
        print(f"[{stage}] done already: {output}", flush=True)
    else:
        chain.log.append((stage, seconds))


@dataclass(frozen=True)
class MainData:
    """The main job's data: graded training and held-out pairs, and a BEIR folder for retrieval and search."""

    train: str
    test: str
    retrieval: str


def find_data(folder: str) -> MainData:
    """``FOLDER/stsb/{train,test}.jsonl`` (or ``FOLDER/en/stsb/...``, the layout of the shared public data) and
    ``FOLDER/retrieval`` (a BEIR folder; the bundled one where ``FOLDER`` has none). ``DataError`` names what is
    missing."""
    from preprocess.readers import DataError

    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"--data {folder}: no such folder")
    pairs = next((base for base in (root / "stsb", root / "en" / "stsb") if (base / "train.jsonl").is_file()), None)
    if pairs is None:
        raise DataError(f"--data {folder}: no stsb/train.jsonl (nor en/stsb/train.jsonl) of graded pairs")
    if not (pairs / "test.jsonl").is_file():
        raise DataError(f"--data {folder}: {pairs / 'train.jsonl'} has no test.jsonl beside it")
    retrieval = root / "retrieval" if (root / "retrieval").is_dir() else DEMO / "retrieval"
    return MainData(str(pairs / "train.jsonl"), str(pairs / "test.jsonl"), str(retrieval))


def check_data(data: MainData) -> None:
    """Read every input once before any stage runs: a bad row is a ``DataError`` naming file, row and field; a
    pair the reader would skip (an empty text, a missing score) is refused rather than dropped."""
    from evaluation.loaders import load_retrieval
    from preprocess.readers import DataError, read_pairs

    for source in (data.train, data.test):
        pairs, report = read_pairs(source, layout="graded")
        if report.skipped:
            reason, count = next(iter(report.skipped.items()))
            raise DataError(f"{report.examples_of_skips[reason][0]}: {reason} ({count} such rows in {source}); "
                            "the main job takes every row or none")
    load_retrieval(data.retrieval, "test")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--workdir", default="outputs/main")
    add("--data", default=str(DEMO), help="folder with stsb/{train,test}.jsonl (or en/stsb/...) and retrieval/")
    add("--teacher", default=None, help="teacher causal LM (default: the embedded SmolLM2)")
    add("--student", default=None, help="student backbone (default: the teacher's backbone)")
    add("--seed", type=int, default=42, help="seed of the student heads (fresh and distilled alike)")
    add("--teacher-steps", type=int, default=80, help="teacher adaptation steps of --teacher-batch-size prompts")
    add("--teacher-batch-size", type=int, default=16)
    add("--teacher-lr", type=float, default=1e-3)
    add("--teacher-dtype", default="auto", choices=("auto", "float32", "bfloat16"),
        help="teacher adaptation, scoring and evaluation; auto: bf16 where the CPU is fast at it")
    add("--gold-weight", type=float, default=0.0,
        help="student targets: lambda * gold + (1 - lambda) * teacher (0: the teacher alone)")
    add("--heads-epochs", type=float, default=16.0, help="epochs of PMA + IEM on cached token states")
    add("--bi-encoder-steps", type=int, default=20, help="LoRA steps of the bi-encoder baseline (batch 16 pairs)")
    add("--train-config", default=str(REPO / "configs" / "main_job.yaml"))
    args = parser.parse_args()

    data = find_data(args.data)
    check_data(data)
    work = (REPO / args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    chain = Chain()
    start = time.perf_counter()

    teacher = args.teacher
    if teacher is None:
        from common.embedded_models import smollm2_gguf

        teacher = str(work / "smollm2")
        run("export", work / "smollm2", lambda out: [PYTHON, "-c", "import sys, pipeline; "
                                                    "pipeline.export_backbone(sys.argv[1], sys.argv[2])",
                                                    smollm2_gguf(), out], chain)
    student = args.student or teacher
    after_export = chain.previous
    adapter, labelled, gold = work / "teacher_lora", work / "scored", work / "gold_pairs"
    fresh, model, bi_encoder = work / "student-untrained", work / "d2llm-student", work / "bi-encoder"
    seed = str(args.seed)
    run("adapt teacher", adapter, lambda out: [
        PYTHON, "-m", "teacher.adapt", "--teacher", teacher, "--output", out, "--train-pairs", data.train,
        "--pair-objective", "cosent", "--max-steps", str(args.teacher_steps), "--batch-size",
        str(args.teacher_batch_size), "--lr", str(args.teacher_lr), "--max-query-tokens", "48",
        "--max-passage-tokens", "48", "--prompt-preset", "short", "--dtype", args.teacher_dtype,
        "--checkpoint-dir", str(work / "teacher_checkpoints")], chain)
    run("score", labelled, lambda out: [
        PYTHON, "-m", "teacher.label_pairs", data.train, "--teacher", teacher, "--adapter", str(adapter),
        "--gold-weight", str(args.gold_weight), "--dtype", args.teacher_dtype, "--seed", seed, "--output", out],
        chain)
    student_options = [*ACCELERATE_ONE_PROCESS, "train.py", args.train_config, "--model_name_or_path", student,
                       "--seed", seed, "--use_lora", "false", "--num_train_epochs", "0"]
    run("distil", model, lambda out: [
        *student_options, "--train_dataset", str(labelled), "--output_dir", out, "--head_warmup_epochs",
        str(args.heads_epochs)], chain)  # the token-state cache lives in the stage's output, rebuilt with it
    after_distil, chain.previous = chain.previous, after_export  # the baselines do not depend on the teacher
    run("gold pairs", gold, lambda out: [PYTHON, "-m", "preprocess.pair_batches", data.train, "--output", out,
                                         "--batch-size", "16", "--seed", seed], chain)
    run("untrained student", fresh, lambda out: [  # train.py needs a dataset to check; it trains on none of it
        *student_options, "--train_dataset", str(gold), "--output_dir", out], chain)
    run("bi-encoder", bi_encoder, lambda out: [
        *ACCELERATE_ONE_PROCESS, "train.py", args.train_config, "--model_name_or_path", student, "--seed", seed,
        "--train_dataset", str(gold), "--output_dir", out, "--objective", "bi-encoder", "--bi_encoder_pooling",
        "mean", "--prompt_template", "", "--ibn_weight", "0", "--angle_weight", "1", "--max_steps",
        str(args.bi_encoder_steps)], chain)
    from common.embedded_models import minilm_dir

    rows = [("teacher (cross-encoder)", "teacher", teacher), ("student before distillation", "d2llm", str(fresh)),
            ("student, distilled", "d2llm", str(model)), ("bi-encoder, same backbone", "bi-encoder", str(bi_encoder)),
            ("all-MiniLM-L6-v2", "sentence-transformers", minilm_dir())]
    chain.previous = after_distil + chain.previous  # the table depends on every model
    run("evaluate", work / "results.json", lambda out: [
        PYTHON, "-m", "evaluation.comparison", *(part for row in rows for part in ("--row", *row)), "--sts",
        data.test, "--beir", data.retrieval, "--teacher-adapter", str(adapter), "--teacher-dtype",
        args.teacher_dtype, "--curve", str(model / "_head_warmup" / "log_history.json"), "--plot",
        str(work / "results.png"), "--output", out], chain)
    index = work / "index"
    corpus = os.path.join(data.retrieval, "corpus.jsonl")
    run("index", index, lambda out: [PYTHON, "search.py", "build", "--model", str(model), "--corpus", corpus,
                                     "--index", out], chain)
    run_stage_command("search demo", [
        PYTHON, "search.py", "query", "--model", str(model), "--index", str(index), "--top-k", "3", "--corpus", corpus,
        "--query", "Which mountain is the highest?", "--query", "How do vaccines work?"])
    print_summary(work / "results.json")
    print("\nstage times (s): " + ", ".join(f"{stage} {seconds:.0f}" for stage, seconds in chain.log))
    print(f"total {time.perf_counter() - start:.0f} s; model: {model}; table: {work / 'results.json'}, "
          f"{work / 'results.png'}")


def print_summary(results_file: Path) -> None:
    """The comparison table and the distillation gain: the distilled student against its untrained start."""
    from evaluation.comparison import render

    rows = json.loads(results_file.read_text(encoding="utf-8"))["rows"]
    print("\n" + render(rows))
    spearman = {row["name"]: row["metrics"]["spearman"] for row in rows}
    gain = 100 * (spearman["student, distilled"] - spearman["student before distillation"])
    print(f"distillation gain: {gain:+.1f} Spearman points over the same student untrained (same seed)")


def run_main() -> None:
    """``main`` as a command: bad ``--data`` or a missing prerequisite (the embedded model not installed) ends it
    with one ``error:`` line and status 2; a failed stage with that stage's status, the stage's own message being
    the one line."""
    from common.cli_errors import run_command
    from preprocess.readers import DataError

    try:
        run_command(main, FileNotFoundError, DataError)
    except StageError as error:
        print(error, file=sys.stderr)
        sys.exit(error.status)


if __name__ == "__main__":
    run_main()
