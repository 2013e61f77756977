"""Quality benchmark: the adapted teacher, the D2LLM student and its ablations, a cosine bi-encoder on the
same backbone and all-MiniLM-L6-v2, on STS-B, NLI and SciFact, from the same training data and hard negatives.

    OMP_NUM_THREADS=2 python benchmarks/bench_quality.py [--data ../shared/data] [--work outputs/bench_quality]
        [--report benchmarks/results/bench_quality] [sizes, see --help]

Stages, each one of the project's own commands or functions, each skipped when its output exists (outputs are
built under a ``.partial`` name and renamed when complete), so a killed run started again resumes:

1. export: the embedded SmolLM2-135M-Instruct GGUF unpacked once (teacher and every LLM backbone);
2. read: seeded samples of STS-B train pairs with score >= ``--sts-threshold`` (symmetric), SICK train entailment
   pairs (symmetric; the NLI evaluation uses SNLI dev, so training and evaluation data are disjoint) and SciFact
   train qrels (asymmetric);
3. mine: K hard negatives per example (BM25 + all-MiniLM-L6-v2);
4. adapt: LoRA yes/no adaptation of the teacher on STS-B train graded pairs and the mined SICK and SciFact examples;
5. score: teacher-scored fixed batches of B queries, all three sets together (one task per batch);
6. train: ONE D2LLM student on all the scored batches (``train.py``, ``configs/main_job.yaml``), the ablations
   (no FI: ``--eta 0``; no RI: ``--beta 0 --gamma 0``; mean pooling instead of PMA: ``--pooling mean``), a
   variant whose PMA starts as the mean (``--pma_init mean``), and a
   cosine bi-encoder (``train.py --objective bi-encoder --angle_weight 0``: mean pooling, InfoNCE over the same
   batches' queries, positives and hard negatives at the students' in-batch temperature; same backbone, LoRA,
   learning rate, schedule and number of steps);
7. evaluate (``evaluate_model.py``'s code path): STS-B test Spearman, SNLI dev average precision of entailment, SciFact
   test NDCG@10 over a corpus slice (every judged document of the sampled queries plus seeded random others; the
   teacher reranks the BM25 top ``--rerank-depth`` of that slice). Each (model, task) result is written to
   ``WORK/results.json`` as soon as it is measured.

Default sizes (seeded; chosen from a measured small run): 48 STS-B + 48 SICK + 36 SciFact training examples, K = 3,
B = 8 (12 symmetric + 4 asymmetric scored batches), one epoch; teacher LoRA on at most 32 rows of each source (10
steps of 16); 300 STS-B test pairs, 300 SNLI dev pairs, 50 SciFact test queries over 250 documents, teacher
reranking depth 20. Measured on the 2-core CPU: export, mining, teacher adaptation and scoring 14 min on a quiet
machine; then, with another developer's jobs on the same cores, about 15 min to train and 8 min to evaluate each
SmolLM2 model, so the whole run takes 1 to 2.5 hours depending on the load. Most of the time goes to long SciFact
passages through the 135M-parameter backbone. These sizes are far too small for a good teacher: with
``--teacher-pairs 2400 --teacher-bf16`` (161 steps of 16, 48 min) it reaches STS-B test Spearman 0.76 (README,
run 3), and then the students need more than one epoch (``--epochs``).

Models are trained and evaluated in child processes (``train.py`` with activation checkpointing, every evaluation
in a spawned process), so this process stays small: two models in memory at once do not fit
next to other work on a 23 GB machine.

At the end: a markdown table (ratio of each student row to the teacher, difference from the bi-encoder in points,
verdicts on the targets: >= 95 % of the teacher and >= +3 points over the bi-encoder, per task), the stage times,
the total wall time and the command, printed and written to ``--report`` ``.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evaluation.loaders import RetrievalData  # noqa: E402

PYTHON = sys.executable
TRAIN_CONFIG = REPO / "configs" / "main_job.yaml"

# task -> (column title, metric key in evaluate_model.py's result)
TASKS: dict[str, tuple[str, str]] = {
    "sts": ("STS-B Spearman", "spearman"),
    "nli": ("NLI AP", "average_precision"),
    "scifact": ("SciFact NDCG@10", "ndcg_at_10"),
}
MODELS: dict[str, str] = {
    "teacher": "adapted teacher (cross-encoder, the ceiling)",
    "d2llm": "D2LLM student (PMA + IEM, CI + RI + FI)",
    "no_fi": "student without FI",
    "no_ri": "student without RI",
    "mean_pool": "student, mean pooling instead of PMA",
    "pma_mean_init": "student, PMA started as the mean (--pma_init mean)",
    "bi_encoder": "bi-encoder, same backbone (mean pooling, cosine, InfoNCE)",
    "minilm": "all-MiniLM-L6-v2 (cosine, off the shelf)",
}
# student rows -> train.py options on top of configs/main_job.yaml
STUDENTS: dict[str, list[str]] = {
    "d2llm": [],
    "no_fi": ["--eta", "0"],
    "no_ri": ["--beta", "0", "--gamma", "0"],
    "mean_pool": ["--pooling", "mean"],
    "pma_mean_init": ["--pma_init", "mean"],
}
# the headline rows first, so that a run cut short has them
RUN_ORDER = ("d2llm", "bi_encoder", "minilm", "teacher", "pma_mean_init", "no_fi", "no_ri", "mean_pool")
RATIO_TARGET = 0.95  # student >= 95 % of the teacher's metric
POINTS_TARGET = 3.0  # student >= bi-encoder + 3 points (metric x 100)
TRAIN_SETS = ("stsb", "sick", "scifact")


# ---------------------------------------------------------------------------------------------- arguments
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--data", default="../shared/data", help="the shared data folder, holding en/... (relative: to the repo)")
    add("--work", default="outputs/bench_quality", help="every stage's output, results.json (relative: to the repo)")
    add("--report", default="benchmarks/results/bench_quality", help="final table: REPORT.json and REPORT.md")
    add("--report-only", action="store_true",
        help="write the report of what WORK holds so far (missing numbers are n/a) and run nothing")
    add("--backbone", help="causal-LM folder for teacher and students (default: export the embedded SmolLM2)")
    group = parser.add_argument_group("training data (seeded samples)")
    group.add_argument("--sts-train", type=int, default=48, help="STS-B train positive pairs")
    group.add_argument("--sts-threshold", type=float, default=4.0, help="STS-B pair is positive when score >= this")
    group.add_argument("--nli-train", type=int, default=48, help="SICK train entailment pairs")
    group.add_argument("--scifact-train", type=int, default=36, help="SciFact train (query, relevant doc) pairs")
    group.add_argument("--negatives", type=int, default=3, help="K hard negatives per query")
    group.add_argument("--batch-size", type=int, default=8, help="B queries per scored batch")
    group.add_argument("--mining-methods", nargs="+", default=["bm25", "dense"], choices=("bm25", "dense"))
    group.add_argument("--max-tokens", type=int, default=128,
                       help="tokens per text for teacher (query and passage), students and bi-encoder")
    group = parser.add_argument_group("teacher adaptation")
    group.add_argument("--teacher-pairs", type=int, default=32,
                       help="STS-B train graded pairs (also caps each mined set) for the teacher's LoRA")
    group.add_argument("--teacher-epochs", type=float, default=1.0)
    group.add_argument("--teacher-lr", type=float, default=5e-4)
    group.add_argument("--teacher-batch-size", type=int, default=16)
    group.add_argument("--teacher-bf16", action="store_true",
                       help="bfloat16 autocast in the adaptation (faster on CPUs with AMX and on GPUs)")
    group = parser.add_argument_group("students and bi-encoder")
    group.add_argument("--epochs", type=float, default=1.0, help="passes over the scored batches (every model)")
    group.add_argument("--bi-pooling", default="mean", choices=("mean", "last"))
    group = parser.add_argument_group("evaluation (seeded samples)")
    group.add_argument("--sts-eval", type=int, default=300, help="STS-B test pairs")
    group.add_argument("--nli-eval", type=int, default=300, help="SNLI dev pairs")
    group.add_argument("--scifact-queries", type=int, default=50, help="SciFact test queries")
    group.add_argument("--scifact-docs", type=int, default=250, help="SciFact corpus slice (judged docs included)")
    group.add_argument("--rerank-depth", type=int, default=20, help="teacher: BM25 documents reranked per query")
    add("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.data = str((REPO / args.data).resolve())
    if args.backbone:
        args.backbone = str((REPO / args.backbone).resolve())
    return args


LATER_SETTINGS = {"teacher_bf16": False}
"""Settings added after work folders had been written, with the value those folders were run with."""


def recorded_settings(data: dict[str, Any]) -> dict[str, Any]:
    """The settings of a ledger's data, completed with ``LATER_SETTINGS`` it predates."""
    return {**LATER_SETTINGS, **data["settings"]}


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """What the results depend on (where they are written to does not count)."""
    return {key: value for key, value in vars(args).items() if key not in ("work", "report", "report_only")}


# ---------------------------------------------------------------------------------------------- bookkeeping
@dataclass
class Ledger:
    """``WORK/results.json``: settings, stage seconds, per-(model, task) results, wall time of every invocation.

    Rewritten after every change, so a killed run keeps what it finished and a resumed run reports it all.
    """

    path: Path
    data: dict[str, Any]
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def open(cls, work: Path, settings: dict[str, Any], command: str) -> "Ledger":
        path = work / "results.json"
        data = json.loads(path.read_text()) if path.exists() else {
            "settings": settings, "stage_seconds": {}, "results": {}, "invocations": []}
        data["settings"] = recorded_settings(data)
        if data["settings"] != settings:
            raise SystemExit(f"{path} holds a run with other settings {data['settings']}: use another --work")
        data["invocations"].append({"command": command, "seconds": 0.0})
        ledger = cls(path, data)
        ledger.save()
        return ledger

    def save(self) -> None:
        self.data["invocations"][-1]["seconds"] = round(time.perf_counter() - self.started, 1)
        write_json(self.path, self.data)

    def stage_done(self, stage: str, seconds: float) -> None:
        self.data["stage_seconds"][stage] = round(seconds, 1)
        self.save()

    @property
    def results(self) -> dict[str, dict[str, dict[str, Any]]]:
        return self.data["results"]

    def add_result(self, model: str, task: str, result: dict[str, Any]) -> None:
        self.results.setdefault(model, {})[task] = result
        self.save()

    @property
    def total_seconds(self) -> float:
        return sum(invocation["seconds"] for invocation in self.data["invocations"])


def write_json(path: Path, data: Any) -> None:
    """Write JSON through a temporary file renamed into place (a file that exists is complete)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    partial.replace(path)


def sh(command: Sequence[str]) -> None:
    """Run one of the project's commands from the repository root, printing it first."""
    print(f"$ {shlex.join(command)}", flush=True)
    subprocess.run(list(command), cwd=REPO, check=True)


class ChildFailed(RuntimeError):
    """A child process (``isolated``) ended with a non-zero exit code."""


def isolated(function: Callable[..., None], *arguments: Any) -> None:
    """Run ``function(*arguments)`` in a fresh (spawned) process: the memory of a model is given back when it ends,
    so this long-lived process stays small."""
    child = multiprocessing.get_context("spawn").Process(target=function, args=arguments)
    child.start()
    child.join()
    if child.exitcode != 0:
        raise ChildFailed(f"{function.__name__} failed (exit code {child.exitcode})")


def stage(ledger: Ledger, name: str, output: Path, build: Callable[[Path], None]) -> Path:
    """Build ``output`` unless it exists: ``build`` writes a ``.partial`` sibling, renamed when it returns."""
    if output.exists():
        print(f"[{name}] done already: {output}", flush=True)
        return output
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    print(f"\n[{name}] -> {output}", flush=True)
    start = time.perf_counter()
    build(partial)
    partial.rename(output)
    ledger.stage_done(name, time.perf_counter() - start)
    print(f"[{name}] {time.perf_counter() - start:.0f} s", flush=True)
    return output


# ---------------------------------------------------------------------------------------------- data and teacher
def export_stage(ledger: Ledger, work: Path) -> Path:
    """The embedded SmolLM2 as a causal-LM folder (``pipeline.export_backbone``)."""
    from embedded_models import smollm2_gguf
    from pipeline import export_backbone

    return stage(ledger, "export", work / "smollm2", lambda out: export_backbone(smollm2_gguf(), out))


def read_sources(args: argparse.Namespace) -> dict[str, list[str]]:
    """``preprocess.readers`` arguments of each training set."""
    en = Path(args.data) / "en"
    seed = ["--seed", str(args.seed)]
    return {
        "stsb": [str(en / "stsb" / "train.jsonl"), "--layout", "graded", "--threshold", str(args.sts_threshold),
                 "--limit", str(args.sts_train), *seed],
        "sick": [str(en / "sick" / "train.jsonl"), "--layout", "labelled", "--positive-labels", "entailment",
                 "--limit", str(args.nli_train), *seed],
        "scifact": [str(en / "scifact"), "--layout", "beir", "--split", "train", "--limit", str(args.scifact_train),
                    *seed],
    }


def prepare_data(ledger: Ledger, work: Path, args: argparse.Namespace) -> dict[str, Path]:
    """Read and mine each training set; returns the mined folders."""
    mined = {}
    for name, source in read_sources(args).items():
        read = stage(ledger, f"read {name}", work / "read" / name,
                     lambda out, source=source: sh([PYTHON, "-m", "preprocess.readers", *source, "--output", str(out)]))
        mined[name] = stage(ledger, f"mine {name}", work / "mined" / name, lambda out, read=read: sh([
            PYTHON, "-m", "preprocess.mining", "--input", str(read), "--output", str(out),
            "--k", str(args.negatives), "--methods", *args.mining_methods,
            "--dense-max-tokens", str(args.max_tokens), "--seed", str(args.seed)]))
    return mined


def adapt_stage(ledger: Ledger, work: Path, backbone: str, mined: dict[str, Path], args: argparse.Namespace) -> Path:
    """LoRA adaptation of the teacher: STS-B graded pairs (soft targets), mined SICK and SciFact examples."""
    tokens = ["--max-query-tokens", str(args.max_tokens), "--max-passage-tokens", str(args.max_tokens)]
    precision = ["--bf16"] if args.teacher_bf16 else []
    return stage(ledger, "adapt teacher", work / "teacher_lora", lambda out: sh([
        PYTHON, "-m", "preprocess.adapt_teacher", "--teacher", backbone, "--output", str(out),
        "--train-pairs", str(Path(args.data) / "en" / "stsb" / "train.jsonl"),
        "--train-mined", str(mined["sick"]), str(mined["scifact"]), "--limit", str(args.teacher_pairs),
        "--epochs", str(args.teacher_epochs), "--batch-size", str(args.teacher_batch_size),
        "--lr", str(args.teacher_lr), "--seed", str(args.seed), *tokens, *precision]))


def score_stage(ledger: Ledger, work: Path, backbone: str, adapter: Path, mined: dict[str, Path],
                args: argparse.Namespace) -> Path:
    """Teacher-scored fixed batches of all training sets (shards in ``WORK/scored.shards`` survive a kill)."""
    return stage(ledger, "score", work / "scored", lambda out: sh([
        PYTHON, "-m", "preprocess.score", "--input", *(str(mined[name]) for name in TRAIN_SETS),
        "--output", str(out), "--work-dir", str(work / "scored.shards"), "--teacher", backbone,
        "--adapter", str(adapter), "--batch-size", str(args.batch_size), "--drop-last", "--shard-batches", "2",
        "--teacher-batch-size", "16", "--max-query-tokens", str(args.max_tokens),
        "--max-passage-tokens", str(args.max_tokens), "--seed", str(args.seed)]))


# ---------------------------------------------------------------------------------------------- models
def train_command(name: str, backbone: str, scored: Path, out: Path, args: argparse.Namespace) -> list[str]:
    """``train.py`` under ``accelerate launch`` (one process) for a student row or the bi-encoder row."""
    from pipeline import ACCELERATE_ONE_PROCESS

    return [*ACCELERATE_ONE_PROCESS, "train.py", str(TRAIN_CONFIG),
            "--model_name_or_path", backbone, "--train_dataset", str(scored), "--output_dir", str(out),
            "--num_train_epochs", str(args.epochs), "--max_seq_length", str(args.max_tokens),
            "--seed", str(args.seed), "--activation_checkpointing", "true", *row_options(args)[name]]


def row_options(args: argparse.Namespace) -> dict[str, list[str]]:
    """train.py options of each trained row on top of configs/main_job.yaml: the students', and the cosine
    bi-encoder's (InfoNCE over in-batch positives and the same hard negatives, at the student's in-batch
    temperature, no prompt, no AnglE; LoRA, learning rate, schedule and steps as the students)."""
    import yaml

    tau = str(yaml.safe_load(TRAIN_CONFIG.read_text())["tau_inbatch"])
    return {**STUDENTS, "bi_encoder": [
        "--objective", "bi-encoder", "--bi_encoder_pooling", args.bi_pooling, "--prompt_template", "",
        "--bi_encoder_temperature", tau, "--ibn_weight", "1", "--angle_weight", "0"]}


def train_row(ledger: Ledger, work: Path, name: str, backbone: str, scored: Path, args: argparse.Namespace) -> Path:
    """Train one row's model (a student or the bi-encoder) unless it is there already."""
    return stage(ledger, f"train {name}", work / "models" / name,
                 lambda out: sh(train_command(name, backbone, scored, out, args)))


def model_path(ledger: Ledger, work: Path, name: str, backbone: str, scored: Path, args: argparse.Namespace) -> str:
    """The model of a row, trained first when it is one of ours."""
    if name in STUDENTS or name == "bi_encoder":
        return str(train_row(ledger, work, name, backbone, scored, args))
    if name == "minilm":
        from embedded_models import minilm_dir

        return minilm_dir()
    return backbone


def load_row_scorer(name: str, path: str, adapter: Path, args: argparse.Namespace):
    """An ``evaluation.scorers`` scorer for a row; the teacher reads texts cut as in its adaptation and scoring."""
    from evaluation.models import load_scorer

    if name == "teacher":
        return load_scorer(path, "teacher", teacher_adapter=str(adapter), rerank_depth=args.rerank_depth,
                           batch_size=16, max_query_tokens=args.max_tokens, max_passage_tokens=args.max_tokens)
    kind = {"minilm": "sentence-transformers", "bi_encoder": "bi-encoder"}.get(name, "d2llm")
    return load_scorer(path, kind)


# ---------------------------------------------------------------------------------------------- evaluation
def slice_retrieval(data: RetrievalData, queries: int, documents: int, seed: int) -> RetrievalData:
    """``queries`` judged queries drawn with ``seed``, over a corpus of every document judged for them plus seeded
    random others, ``documents`` in all (more when the judged ones alone are more)."""
    rng = random.Random(seed)
    query_ids = sorted(rng.sample(sorted(data.queries), min(queries, len(data.queries))))
    judged = sorted({doc for query in query_ids for doc in data.qrels[query]})
    others = sorted(set(data.corpus) - set(judged))
    extra = rng.sample(others, max(0, min(len(others), documents - len(judged))))
    keep = set(judged) | set(extra)
    corpus = {doc: text for doc, text in data.corpus.items() if doc in keep}
    return RetrievalData(corpus, {q: data.queries[q] for q in query_ids}, {q: data.qrels[q] for q in query_ids},
                         f"{data.source} ({len(query_ids)} of {len(data.queries)} queries, {len(corpus)} of "
                         f"{len(data.corpus)} documents: all judged ones + seeded random others, seed {seed})")


def evaluation_jobs(args: argparse.Namespace) -> dict[str, tuple[Callable, Any]]:
    """``evaluate_model.py`` jobs of the three tasks on seeded samples (read and checked before any model is loaded)."""
    import evaluate_model
    from evaluation.loaders import load_graded_pairs, load_labelled_pairs, load_retrieval

    en = Path(args.data) / "en"
    return {
        "sts": (evaluate_model.evaluate_sts, evaluate_model.subsample_pairs(
            load_graded_pairs(str(en / "stsb" / "test.jsonl")), args.sts_eval, args.seed)),
        "nli": (evaluate_model.evaluate_pair_classification, evaluate_model.subsample_pairs(
            load_labelled_pairs(str(en / "snli" / "dev.jsonl")), args.nli_eval, args.seed)),
        "scifact": (evaluate_model.evaluate_retrieval, slice_retrieval(
            load_retrieval(str(en / "scifact"), "test"), args.scifact_queries, args.scifact_docs, args.seed)),
    }


def evaluation_file(work: Path, model: str, task: str) -> Path:
    return work / "evaluations" / f"{model}.{task}.json"


def evaluate_tasks(work: Path, name: str, path: str, adapter: Path, tasks: list[str], args: argparse.Namespace
                   ) -> None:
    """(Child process.) Evaluate one row on ``tasks``; each result is written to its file as soon as it is known."""
    import evaluate_model

    jobs = evaluation_jobs(args)
    scorer = load_row_scorer(name, path, adapter, args)
    for task in tasks:
        print(f"\n[evaluate {name} / {task}] {jobs[task][1].source}", flush=True)
        result = evaluate_model.run(scorer, [jobs[task]])[0]
        write_json(evaluation_file(work, name, task), result)
        print(f"[evaluate {name} / {task}] {TASKS[task][1]} {result[TASKS[task][1]]:.4f} ({result['seconds']:.0f} s)",
              flush=True)


def unrecorded_results(work: Path, results: dict[str, dict[str, Any]], models: Sequence[str]
                       ) -> list[tuple[str, str, dict[str, Any]]]:
    """``(model, task, result)`` of the evaluation files in ``WORK/evaluations`` that ``results`` lacks."""
    return [(model, task, json.loads(evaluation_file(work, model, task).read_text()))
            for model in models for task in TASKS
            if task not in results.get(model, {}) and evaluation_file(work, model, task).exists()]


def evaluate_row(ledger: Ledger, work: Path, name: str, path: str, adapter: Path, args: argparse.Namespace) -> None:
    """Every task of a row not measured yet, in a child process; what it measured goes to the ledger even when
    it fails half-way."""
    pending = [task for task in TASKS if task not in ledger.results.get(name, {})
               and not evaluation_file(work, name, task).exists()]
    try:
        if pending:
            isolated(evaluate_tasks, work, name, path, adapter, pending, args)
        else:
            print(f"[evaluate {name}] done already", flush=True)
    finally:
        for _, task, result in unrecorded_results(work, ledger.results, [name]):
            ledger.add_result(name, task, result)
            ledger.stage_done(f"evaluate {name} {task}", result["seconds"])


# ---------------------------------------------------------------------------------------------- table
def ratio(value: float | None, reference: float | None) -> float | None:
    """``value / reference``; None when either is missing or the reference is not positive."""
    if value is None or reference is None or reference <= 0:
        return None
    return value / reference


def points(value: float | None, reference: float | None) -> float | None:
    """Difference in points (metric x 100)."""
    return None if value is None or reference is None else 100 * (value - reference)


def build_table(results: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per model: its metric per task and, for students, the ratio to the teacher, the difference from the
    bi-encoder in points and the verdicts on both targets (None where a number is missing)."""
    metric = {model: {task: results.get(model, {}).get(task, {}).get(key) for task, (_, key) in TASKS.items()}
              for model in MODELS}
    rows = []
    for model, label in MODELS.items():
        row: dict[str, Any] = {"model": model, "label": label, "metrics": metric[model]}
        if model in STUDENTS:
            row["ratio_to_teacher"] = {task: ratio(metric[model][task], metric["teacher"][task]) for task in TASKS}
            row["points_over_bi_encoder"] = {task: points(metric[model][task], metric["bi_encoder"][task])
                                             for task in TASKS}
            row["meets_teacher_target"] = {task: None if value is None else value >= RATIO_TARGET
                                           for task, value in row["ratio_to_teacher"].items()}
            row["meets_bi_encoder_target"] = {task: None if value is None else value >= POINTS_TARGET
                                              for task, value in row["points_over_bi_encoder"].items()}
        rows.append(row)
    return rows


def _fmt(value: float | None, pattern: str) -> str:
    return "n/a" if value is None else format(value, pattern)


def _verdict(value: bool | None) -> str:
    return "n/a" if value is None else "yes" if value else "no"


def render_table(rows: list[dict[str, Any]]) -> str:
    """The markdown table: metrics, then (students) ratio to the teacher, points over the bi-encoder, verdicts."""
    titles = [title for title, _ in TASKS.values()]
    lines = ["| model | " + " | ".join(titles) + " | ratio to teacher (STS-B / NLI / SciFact) | points over "
             f"bi-encoder | targets met: >= {RATIO_TARGET:.0%} of teacher; >= +{POINTS_TARGET:g} points |",
             "| --- | " + " | ".join("---:" for _ in titles) + " | --- | --- | --- |"]
    for row in rows:
        cells = [_fmt(row["metrics"][task], ".4f") for task in TASKS]
        extra = ["", "", ""]
        if "ratio_to_teacher" in row:
            extra = [" / ".join(_fmt(row["ratio_to_teacher"][task], ".2f") for task in TASKS),
                     " / ".join(_fmt(row["points_over_bi_encoder"][task], "+.1f") for task in TASKS),
                     "; ".join(f"{TASKS[task][0].split()[0]} {_verdict(row['meets_teacher_target'][task])}/"
                               f"{_verdict(row['meets_bi_encoder_target'][task])}" for task in TASKS)]
        lines.append(f"| {row['label']} | " + " | ".join(cells + extra) + " |")
    return "\n".join(lines)


def headline(rows: list[dict[str, Any]]) -> str:
    """One sentence on the D2LLM student's targets, from the table's numbers."""
    student = next(row for row in rows if row["model"] == "d2llm")
    teacher_ok, bi_ok = student["meets_teacher_target"].values(), student["meets_bi_encoder_target"].values()
    if None in teacher_ok or None in bi_ok:
        return "Targets: not all numbers are measured yet."
    return (f"Targets for the D2LLM student: >= {RATIO_TARGET:.0%} of the teacher on every task: "
            f"{'met' if all(teacher_ok) else 'NOT met'}; >= +{POINTS_TARGET:g} points over the bi-encoder on every "
            f"task: {'met' if all(bi_ok) else 'NOT met'}.")


# ---------------------------------------------------------------------------------------------- report
def training_sizes(mined: dict[str, Path], scored: Path) -> dict[str, Any]:
    """Examples per training set and scored batches per task, as they are on disk."""
    from collections import Counter

    from datasets import load_from_disk

    batches = load_from_disk(str(scored))
    return {"examples": {name: len(load_from_disk(str(path))) for name, path in mined.items()},
            "scored_batches": dict(Counter(batches["task"])),
            "batch_size": len(batches[0]["queries"]), "negatives": len(batches[0]["negatives"][0])}


def evaluation_sizes(jobs: dict[str, tuple[Callable, Any]]) -> dict[str, str]:
    return {task: data.source for task, (_, data) in jobs.items()}


def describe_sizes(sizes: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    """Markdown bullets of the data actually used (from disk and from the evaluation jobs)."""
    training = sizes["training"]
    batches = " + ".join(f"{count} {task}" for task, count in sorted(training["scored_batches"].items()))
    return [
        "- training examples (seeded): " + ", ".join(f"{name} {count}" for name, count in training["examples"].items())
        + f"; {batches} teacher-scored batches (B = {training['batch_size']}, K = {training['negatives']}), "
        f"{settings['epochs']:g} epoch(s) for every student and the bi-encoder; texts cut to "
        f"{settings['max_tokens']} tokens",
        f"- teacher LoRA: STS-B train graded pairs and the mined SICK / SciFact examples, at most "
        f"{settings['teacher_pairs']} rows of each source, {settings['teacher_epochs']:g} epoch(s)"
        + (", bfloat16 autocast" if settings.get("teacher_bf16") else ""),
        *(f"- {TASKS[task][0]}: {source}" for task, source in sizes["evaluation"].items()),
    ]


def write_report(ledger: Ledger, report: Path, sizes: dict[str, Any], command: str) -> str:
    """Print the table, the sizes, the stage times and the wall time; write REPORT.json and REPORT.md."""
    rows = build_table(ledger.results)
    stages = ledger.data["stage_seconds"]
    total = ledger.total_seconds
    text = "\n".join([
        f"# Quality benchmark\n\nCommand: `{command}`\n",
        render_table(rows), "", headline(rows), "",
        "Ratio: student / teacher; points: 100 x (student - bi-encoder); the teacher reranks the BM25 top "
        f"{ledger.data['settings']['rerank_depth']} of the SciFact slice (the others rank the whole slice).", "",
        "Data:", *describe_sizes(sizes, ledger.data["settings"]), "",
        "Stage times (s): " + ", ".join(f"{name} {seconds:.0f}" for name, seconds in stages.items()), "",
        f"Total wall time: {total:.0f} s ({total / 60:.1f} min) over {len(ledger.data['invocations'])} invocation(s).",
        *(f"\nFAILED row {name}: {error}" for name, error in ledger.data.get("failures", {}).items()),
    ])
    print("\n" + text, flush=True)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.with_suffix(".md").write_text(text + "\n")
    report.with_suffix(".json").write_text(json.dumps({
        "command": command, "settings": ledger.data["settings"], "sizes": sizes, "table": rows,
        "results": ledger.results, "stage_seconds": stages, "total_seconds": round(total, 1),
        "invocations": ledger.data["invocations"], "failures": ledger.data.get("failures", {})},
        indent=2, ensure_ascii=False) + "\n")
    return text


def invocation_command(argv: Sequence[str]) -> str:
    threads = os.environ.get("OMP_NUM_THREADS")
    prefix = f"OMP_NUM_THREADS={threads} " if threads else ""
    return prefix + shlex.join(["python", os.path.relpath(__file__, REPO), *argv])


# ---------------------------------------------------------------------------------------------- main
def run_row(ledger: Ledger, work: Path, name: str, backbone: str, adapter: Path, scored: Path,
            args: argparse.Namespace) -> None:
    """Train (when it is ours) and evaluate one row. A failure is recorded and the other rows go on; running the
    same command again retries it."""
    failures = ledger.data.setdefault("failures", {})
    try:
        path = model_path(ledger, work, name, backbone, scored, args)
        evaluate_row(ledger, work, name, path, adapter, args)
    except (subprocess.CalledProcessError, ChildFailed) as error:
        failures[name] = str(error)
        ledger.save()
        print(f"\n[{name}] FAILED: {error}\nThe other rows go on; run the same command again to retry it.",
              flush=True)
        return
    if failures.pop(name, None) is not None:
        ledger.save()


def write_partial_report(work: Path, report: Path, args: argparse.Namespace) -> None:
    """The report of a run that has scored its batches, from ``WORK/results.json`` and the evaluation files
    written since (nothing is run and the ledger is not changed); it names the command of the run's last
    invocation."""
    path = work / "results.json"
    if not (path.exists() and (work / "scored").exists()):
        raise SystemExit(f"{work} holds no run that has reached its scored batches: nothing to report")
    data = json.loads(path.read_text())
    if recorded_settings(data) != settings_of(args):
        raise SystemExit(f"{path} holds a run with other settings {data['settings']}: give the same size options")
    for model, task, result in unrecorded_results(work, data["results"], list(MODELS)):
        data["results"].setdefault(model, {})[task] = result
    mined = {name: work / "mined" / name for name in TRAIN_SETS}
    sizes = {"training": training_sizes(mined, work / "scored"), "evaluation": evaluation_sizes(evaluation_jobs(args))}
    write_report(Ledger(path, data), report, sizes, data["invocations"][-1]["command"])


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    work = (REPO / args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    command = invocation_command(argv)
    if args.report_only:
        write_partial_report(work, (REPO / args.report).resolve(), args)
        return
    ledger = Ledger.open(work, settings_of(args), command)
    jobs = evaluation_jobs(args)
    print("evaluation data: " + json.dumps(evaluation_sizes(jobs), indent=2), flush=True)
    backbone = args.backbone or str(export_stage(ledger, work))
    mined = prepare_data(ledger, work, args)
    adapter = adapt_stage(ledger, work, backbone, mined, args)
    scored = score_stage(ledger, work, backbone, adapter, mined, args)
    sizes = {"training": training_sizes(mined, scored), "evaluation": evaluation_sizes(jobs)}
    print("training data: " + json.dumps(sizes["training"]), flush=True)
    for name in RUN_ORDER:
        run_row(ledger, work, name, backbone, adapter, scored, args)
    ledger.save()
    write_report(ledger, (REPO / args.report).resolve(), sizes, command)


if __name__ == "__main__":
    main()
