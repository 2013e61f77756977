"""Quality at scale: does the distilled student beat a same-data bi-encoder and approach its teacher?

    OMP_NUM_THREADS=2 python benchmarks/bench_quality.py --work /tmp/bench_quality [--report docs/results/paper]

Every stage is one of the project's own commands (or, for evaluation, ``evaluate_model``'s code in a child process)
and is built with ``common.stages.build_once``: its output appears in one rename when it is complete, so a killed run
started again resumes from its finished stages and recomputes nothing. An evaluation is kept with the digest of the
weights and the settings it was measured with, and measured again when they change. ``WORK/results.json`` records
the settings, each stage's seconds and each (row, task) result as soon as it is known. ``--report-only`` rewrites
the report from what WORK holds.

Data (seeded with ``--seed``):

* training queries: STS-B train pairs with score >= 4, SICK train entailment pairs and the entailment pairs of one
  half of SNLI dev (split by premise); ``--per-source`` of each, K = ``--negatives`` mined hard negatives
  (BM25 + all-MiniLM-L6-v2), cut into teacher-scored batches of B = ``--batch-size`` queries;
* NLI test: every pair of the other half of SNLI dev (average precision of entailment);
* STS-B test: all 1,379 pairs (Spearman), plus the student-teacher agreement (Spearman between a row's scores and
  the teacher's on those pairs);
* SciFact: ``--scifact-queries`` test queries over a corpus slice (every judged document plus seeded others).

Stages: export SmolLM2 -> split SNLI dev -> read and mine each source -> adapt the teacher (LoRA, short prompts,
STS-B graded pairs + the mined SICK / SNLI examples) -> score (in-batch scores included) -> learning-curve subsets
-> train and evaluate every row -> SciFact: BM25 alone, a teacher adapted on SciFact train, the main rows.

Rows (``ROWS``): the teacher; D2LLM students trained on the heads alone (PMA + IEM on the frozen backbone, its token
states cached once: ``--heads-epochs`` epochs), with SPEC's losses, with listwise KD, without the in-batch pairwise
term and on the gold labels alone (no teacher: InfoNCE over the same queries and negatives, and CoSENT on all 5,749
graded STS-B train pairs in pair batches of 32); D2LLM students trained end to end with LoRA for ``--epochs`` (SPEC
losses, with and without the head warm-up first); the same-backbone bi-encoder (mean pooling, cosine, InfoNCE over
the same queries, positives and hard negatives, LoRA, ``--epochs``), and the same bi-encoder trained with CoSENT +
AnglE on all 5,749 graded STS-B train pairs (pair batches of 32, no teacher); all-MiniLM-L6-v2. The learning curve
repeats the SPEC heads student and the bi-encoder on the first ``--curve`` queries.

``--teacher-adapter DIR`` scores with a teacher made by ``python -m teacher.adapt`` (a LoRA adapter on ``--backbone``
or, from ``--method full``, a whole model; it also reranks SciFact) instead of adapting a teacher here; ``--rows``
trains and evaluates only the rows named; ``--no-scifact`` skips the SciFact rows.

At the end: the table (metrics, student - bi-encoder in points, the share of the bi-encoder-to-teacher gap closed,
the verdicts on both targets), the learning curve as a PNG, the stage times and the total wall time, written to
``REPORT.md``, ``REPORT.json`` and ``REPORT.png``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.quality_report import (CURVE_ROWS, ROWS, Ledger, Row, recorded_ledger, write_report)
from benchmarks.quality_report import verdicts  # noqa: E402, F401  (re-exported: the script's tested surface)
from benchmarks.row_evaluation import evaluated  # noqa: E402
from preprocess.split_pairs import write_halves  # noqa: E402

PYTHON = sys.executable
TRAIN_CONFIG = REPO / "configs" / "main_job.yaml"
from common.recipes import ACCELERATE_ONE_PROCESS  # noqa: E402
SOURCES = ("stsb", "sick", "snli")
# the headline rows first, so that a run cut short has them
RUN_ORDER = ("teacher", "minilm", "heads_spec", "bi_encoder", "heads_kd", "heads_no_pairwise", "heads_gold",
             "e2e_warmup", "bi_cosent")
LAST_ROWS = ("e2e_spec", "heads_gold_graded")  # e2e_spec: the control for e2e_warmup, the costliest row


# ---------------------------------------------------------------------------------------------- arguments
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--data", default="../shared/data", help="the shared data folder, holding en/... (relative: to the repo)")
    add("--work", default="outputs/bench_quality", help="every stage's output and results.json")
    add("--report", default="docs/results/paper", help="REPORT.md, REPORT.json and REPORT.png")
    add("--report-only", action="store_true", help="write the report of what WORK holds and run nothing")
    add("--backbone", help="causal-LM folder for teacher and students (default: export the embedded SmolLM2)")
    add("--seed", type=int, default=0)
    group = parser.add_argument_group("training data")
    group.add_argument("--per-source", type=int, default=700, help="training queries drawn from each source")
    group.add_argument("--negatives", type=int, default=3, help="K mined hard negatives per query")
    group.add_argument("--batch-size", type=int, default=8, help="B queries per teacher-scored batch")
    group.add_argument("--max-tokens", type=int, default=128, help="tokens per text, teacher and students")
    group.add_argument("--curve", type=int, nargs="*", default=[256, 1024], help="learning-curve sizes (queries)")
    group = parser.add_argument_group("teacher")
    group.add_argument("--teacher-pairs", type=int, default=1200, help="STS-B train graded pairs for its LoRA")
    group.add_argument("--teacher-epochs", type=float, default=1.0)
    group.add_argument("--teacher-lr", type=float, default=5e-4)
    group.add_argument("--prompt-preset", default="short", choices=("short", "spec"))
    group.add_argument("--teacher-adapter", help="an adapted teacher (a folder of python -m teacher.adapt) to score "
                                                 "with, instead of adapting one here (--teacher-* then unused)")
    group = parser.add_argument_group("students and bi-encoder")
    group.add_argument("--heads-epochs", type=float, default=4.0, help="epochs of the heads-only rows and warm-up")
    group.add_argument("--epochs", type=float, default=1.0, help="end-to-end epochs (LoRA rows, bi-encoder)")
    group.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS), metavar="ROW",
                       help=f"the rows to train and evaluate (default: all of {', '.join(ROWS)})")
    group = parser.add_argument_group("SciFact")
    group.add_argument("--scifact-train", type=int, default=809, help="SciFact train queries for the teacher (all 809)")
    group.add_argument("--scifact-queries", type=int, default=100, help="SciFact test queries")
    group.add_argument("--scifact-docs", type=int, default=1000, help="corpus slice (judged documents included)")
    group.add_argument("--teacher-passage-tokens", type=int, default=None,
                       help="teacher evaluation: cut passages to this many tokens (default: the adapter's)")
    group.add_argument("--rerank-depth", type=int, default=20, help="teacher: BM25 documents reranked per query")
    group.add_argument("--no-scifact", dest="scifact", action="store_false", help="skip the SciFact rows")
    args = parser.parse_args(argv)
    args.data = str((REPO / args.data).resolve())
    for name in ("backbone", "teacher_adapter"):
        if getattr(args, name):
            setattr(args, name, str((REPO / getattr(args, name)).resolve()))
    return args


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """What the results depend on (where they are written to does not count)."""
    return {key: value for key, value in vars(args).items() if key not in ("work", "report", "report_only")}


# ---------------------------------------------------------------------------------------------- bookkeeping
def sh(command: Sequence[str]) -> None:
    """Run one of the project's commands from the repository root, printing it first; a failed stage ends the
    benchmark with one line (the stage's own message is printed above it), its output left unbuilt."""
    print(f"$ {shlex.join(command)}", flush=True)
    status = subprocess.run(list(command), cwd=REPO).returncode
    if status:
        raise SystemExit(f"error: a stage failed with exit status {status} (its message is above): "
                         f"{shlex.join(command)}")


# ---------------------------------------------------------------------------------------------- data
def read_arguments(args: argparse.Namespace, snli: Path) -> dict[str, list[str]]:
    """``preprocess.readers`` arguments of each training source."""
    en = Path(args.data) / "en"
    common = ["--limit", str(args.per_source), "--seed", str(args.seed)]
    return {
        "stsb": [str(en / "stsb" / "train.jsonl"), "--layout", "graded", "--threshold", "4", *common],
        "sick": [str(en / "sick" / "train.jsonl"), "--layout", "labelled", "--positive-labels", "entailment",
                 *common],
        "snli": [str(snli / "train.jsonl"), "--layout", "labelled", "--positive-labels", "entailment", *common],
    }


def read_and_mine(ledger: Ledger, work: Path, name: str, source: list[str], args: argparse.Namespace) -> Path:
    read = ledger.stage(f"read {name}", work / "read" / name, lambda out: sh(
        [PYTHON, "-m", "preprocess.readers", *source, "--output", str(out)]))
    return ledger.stage(f"mine {name}", work / "mined" / name, lambda out: sh([
        PYTHON, "-m", "preprocess.mining", "--input", str(read), "--output", str(out), "--k", str(args.negatives),
        "--methods", "bm25", "dense", "--dense-max-tokens", str(args.max_tokens), "--seed", str(args.seed)]))


def adapt_command(backbone: str, out: Path, pairs: list[str], mined: list[Path], limit: int | None,
                  args: argparse.Namespace) -> list[str]:
    """``teacher.adapt``: LoRA yes/no adaptation on graded pairs and mined examples."""
    return [PYTHON, "-m", "teacher.adapt", "--teacher", backbone, "--output", str(out),
            *(["--train-pairs", *pairs] if pairs else []), "--train-mined", *map(str, mined),
            *(["--limit", str(limit)] if limit else []), "--epochs", str(args.teacher_epochs),
            "--batch-size", "16", "--lr", str(args.teacher_lr), "--seed", str(args.seed),
            "--max-query-tokens", str(args.max_tokens), "--max-passage-tokens", str(args.max_tokens),
            "--prompt-preset", args.prompt_preset, "--dtype", "auto"]


def teacher_model(backbone: str, folder: Path) -> tuple[str, str | None]:
    """(model, adapter) that load an adapted teacher's folder: a LoRA adapter on ``backbone``, or a whole model
    (``teacher.adapt --method full``) on its own."""
    if (Path(folder) / "adapter_config.json").is_file():
        return backbone, str(folder)
    return str(folder), None


def score_command(backbone: str, adapter: Path, mined: list[Path], out: Path, shards: Path,
                  args: argparse.Namespace) -> list[str]:
    """``teacher.score``: teacher-scored fixed batches, in-batch scores included (the pairwise term needs them)."""
    teacher, adapter_path = teacher_model(backbone, adapter)
    return [PYTHON, "-m", "teacher.score", "--input", *map(str, mined), "--output", str(out),
            "--work-dir", str(shards), "--teacher", teacher, *(["--adapter", adapter_path] if adapter_path else []),
            "--batch-size", str(args.batch_size), "--drop-last", "--shard-batches", "8", "--teacher-batch-size", "32",
            "--inbatch-scores", "all", "--dtype", "auto", "--seed", str(args.seed)]


def write_subset(scored: Path, queries: int, seed: int, out: Path) -> None:
    """The first ``queries // B`` stored batches of a seeded shuffle of ``scored`` (a learning-curve point)."""
    from datasets import load_from_disk

    batches = load_from_disk(str(scored))
    count = queries // len(batches[0]["queries"])
    if count > len(batches):
        raise SystemExit(f"--curve {queries}: {scored} holds only {len(batches)} batches")
    batches.shuffle(seed=seed).select(range(count)).flatten_indices().save_to_disk(str(out))


# ---------------------------------------------------------------------------------------------- training
def train_command(row: Row, backbone: str, scored: Path, cache: Path, out: Path, args: argparse.Namespace
                  ) -> list[str]:
    """``train.py`` (one process under accelerate) for a trained row, on top of ``configs/main_job.yaml``."""
    common = ["--model_name_or_path", backbone, "--train_dataset", str(scored), "--output_dir", str(out),
              "--max_seq_length", str(args.max_tokens), "--seed", str(args.seed), "--disable_tqdm", "true"]
    heads = ["--head_warmup_epochs", str(args.heads_epochs), "--head_warmup_cache_dir", str(cache)]
    end_to_end = ["--num_train_epochs", str(args.epochs), "--cpu_bf16", "auto"]
    kind = {
        "heads": [*heads, "--num_train_epochs", "0"],
        "end_to_end": end_to_end,
        "bi_encoder": [*end_to_end, "--objective", "bi-encoder", "--bi_encoder_pooling", "mean",
                       "--prompt_template", "", "--bi_encoder_temperature", "0.05", "--ibn_weight", "1",
                       "--angle_weight", "0"],
    }[row.kind]
    return [*ACCELERATE_ONE_PROCESS, "train.py", str(TRAIN_CONFIG), *common, *kind, *(heads if row.warmup else []),
            *row.options]


# ---------------------------------------------------------------------------------------------- evaluation
def evaluate_row(ledger: Ledger, work: Path, name: str, kind: str, path: str, tasks: Sequence[str],
                 args: argparse.Namespace, adapter: str | None = None) -> None:
    """Every task of a row (``evaluated``); results go to the ledger."""
    for task, result in evaluated(work, name, kind, path, adapter, tasks, args).items():
        ledger.data["results"].setdefault(name, {})[task] = {
            k: v for k, v in result.items() if k not in ("scores", "identity")}
        ledger.data["stage_seconds"][f"evaluate {name} {task}"] = result["seconds"]
    ledger.save()


# ---------------------------------------------------------------------------------------------- main
def invocation_command(argv: Sequence[str]) -> str:
    threads = os.environ.get("OMP_NUM_THREADS")
    return (f"OMP_NUM_THREADS={threads} " if threads else "") + shlex.join(
        ["python", os.path.relpath(__file__, REPO), *argv])


def training_sizes(scored: Path) -> dict[str, Any]:
    """Queries, batches, B and K of the scored training set, as it is on disk."""
    from datasets import load_from_disk

    batches = load_from_disk(str(scored))
    size = len(batches[0]["queries"])
    return {"queries": size * len(batches), "batches": len(batches), "batch_size": size,
            "negatives": len(batches[0]["negatives"][0])}


def chosen(names: Sequence[str], args: argparse.Namespace) -> list[str]:
    """``names`` that ``--rows`` asks for, in their order."""
    return [name for name in names if name in args.rows]


def run_rows(ledger: Ledger, work: Path, backbone: str, adapter: Path, scored: dict[str, Path],
             args: argparse.Namespace) -> None:
    """Train (where the row is trained) and evaluate every row of ``args.rows``, their curve points, the SciFact
    rows (unless ``--no-scifact``), then ``LAST_ROWS``."""
    from common.embedded_models import minilm_dir

    teacher, teacher_adapter = teacher_model(backbone, adapter)

    def model(name: str, row: Row, data: str) -> str:
        if row.kind == "none":
            return {"teacher": teacher, "minilm": minilm_dir()}[name]
        return str(ledger.stage(f"train {name}", work / "models" / name, lambda out: sh(train_command(
            row, backbone, scored[data], work / "cache" / data, out, args))))

    def kind(name: str) -> str:
        """The ``evaluation.models.load_scorer`` kind of a row."""
        fixed = {"teacher": "teacher", "minilm": "sentence-transformers"}
        return fixed.get(name) or ("bi-encoder" if ROWS[name].kind == "bi_encoder" else "d2llm")

    def row(name: str, data: str | None = None, suffix: str = "") -> None:
        """Train (on ``data``, by default the row's own) and evaluate one row."""
        path = model(name + suffix, ROWS[name], data or ROWS[name].data)
        evaluate_row(ledger, work, name + suffix, kind(name), path, ("sts", "nli"), args,
                     adapter=teacher_adapter if name == "teacher" else None)

    for name in chosen(RUN_ORDER, args):
        row(name)
    for size in args.curve:
        for name in chosen(CURVE_ROWS, args):
            row(name, f"q{size}", f"@{size}")
    if args.scifact:
        run_scifact(ledger, work, backbone, args)
    for name in chosen(LAST_ROWS, args):
        row(name)


def run_scifact(ledger: Ledger, work: Path, backbone: str, args: argparse.Namespace) -> None:
    """BM25 alone, a teacher reranking BM25 (adapted here on SciFact train, or ``--teacher-adapter``) and the main
    rows of ``args.rows``, on the SciFact slice."""
    from common.embedded_models import minilm_dir

    evaluate_row(ledger, work, "bm25", "bm25", "", ("scifact",), args)
    if args.teacher_adapter:
        adapter = Path(args.teacher_adapter)
    else:
        source = [str(Path(args.data) / "en" / "scifact"), "--layout", "beir", "--split", "train",
                  "--limit", str(args.scifact_train), "--seed", str(args.seed)]
        mined = read_and_mine(ledger, work, "scifact", source, argparse.Namespace(**{**vars(args), "negatives": 1}))
        adapter = ledger.stage("adapt teacher_scifact", work / "teacher_scifact", lambda out: sh(
            adapt_command(backbone, out, [], [mined], None, args)))
    teacher, teacher_adapter = teacher_model(backbone, adapter)
    evaluate_row(ledger, work, "teacher_scifact", "teacher", teacher, ("scifact",), args, adapter=teacher_adapter)
    paths = {"heads_spec": ("d2llm", work / "models" / "heads_spec"),
             "bi_encoder": ("bi-encoder", work / "models" / "bi_encoder"),
             "minilm": ("sentence-transformers", minilm_dir())}
    for name in chosen(list(paths), args):
        kind, path = paths[name]
        evaluate_row(ledger, work, name, kind, str(path), ("scifact",), args)


def export(out: Path) -> None:
    from common.embedded_models import smollm2_gguf
    from teacher.export_backbone import export_backbone

    export_backbone(smollm2_gguf(), out)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    work = (REPO / args.work).resolve()
    report = (REPO / args.report).resolve()
    if args.report_only:
        write_report(work, recorded_ledger(work, settings_of(args)), report, training_sizes(work / "scored"))
        return
    work.mkdir(parents=True, exist_ok=True)
    ledger = Ledger.open(work, settings_of(args), invocation_command(argv))
    backbone = args.backbone or str(ledger.stage("export", work / "smollm2", export))
    en = Path(args.data) / "en"
    snli = ledger.stage("split snli", work / "snli", lambda out: write_halves(
        en / "snli" / "dev.jsonl", args.seed, out))
    mined = {name: read_and_mine(ledger, work, name, source, args)
             for name, source in read_arguments(args, snli).items()}
    adapter = Path(args.teacher_adapter) if args.teacher_adapter else ledger.stage(
        "adapt teacher", work / "teacher", lambda out: sh(adapt_command(  # STS-B: graded pairs
            backbone, out, [str(en / "stsb" / "train.jsonl")], [mined["sick"], mined["snli"]], args.teacher_pairs,
            args)))
    scored = {"full": ledger.stage("score", work / "scored", lambda out: sh(score_command(
        backbone, adapter, list(mined.values()), out, work / "scored.shards", args)))}
    scored["stsb_pairs"] = ledger.stage("pairs stsb", work / "stsb_pairs", lambda out: sh([
        PYTHON, "-m", "preprocess.pair_batches", str(en / "stsb" / "train.jsonl"), "--output", str(out),
        "--batch-size", "32", "--seed", str(args.seed)]))
    for size in args.curve:
        scored[f"q{size}"] = ledger.stage(f"subset {size}", work / f"scored_q{size}", lambda out, size=size:
                                          write_subset(scored["full"], size, args.seed, out))
    run_rows(ledger, work, backbone, adapter, scored, args)
    write_report(work, ledger, report, training_sizes(scored["full"]))


if __name__ == "__main__":
    main()
