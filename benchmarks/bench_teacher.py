"""The teacher report: is the adapted cross-encoder worth distilling, and how did it learn?

    OMP_NUM_THREADS=2 python benchmarks/bench_teacher.py --work /tmp/teacher_report --backbone SMOLLM2_FOLDER \\
        --teacher graded=ADAPTER [--teacher NAME=ADAPTER ...] [--curve CHECKPOINTS] --report docs/results/teacher

Rows, each task measured once per model and settings and kept in ``WORK/evaluations`` (a killed run resumes; a
row whose weights changed under the same name is measured again); each row runs in a child process so its memory
is given back:

* every ``--teacher NAME=ADAPTER`` (the ablation: one adapter per recipe, trained on the same data and steps; a
  LoRA adapter on ``--backbone``, or the whole model that ``teacher.adapt --method full`` wrote):
  STS-B test (all 1,379 pairs, Spearman), NLI average precision on the test half of SNLI dev (split by premise
  with ``--seed``, as ``bench_quality.py`` does) and SciFact NDCG@10 reranking BM25's top ``--rerank-depth`` on
  ``bench_quality.py``'s slice (``--scifact-queries`` test queries over ``--scifact-docs`` documents);
* all-MiniLM-L6-v2 on the same three, and BM25 alone on SciFact: the baselines, measured in the same run;
* the learning curve: every ``checkpoint-N`` folder under ``--curve`` on ``--curve-tasks``, next to the dev
  metric the Trainer logged at that step (each checkpoint's ``trainer_state.json``).

* with ``--gold-weights``: students that combine gold labels with the first teacher's scores (docs/method.md (10)).
  The pairs of ``--student-sources`` (default: all graded STS-B train pairs) are labelled by ``teacher.label_pairs``
  at each lambda (1: the gold labels alone, the teacher not run), and a D2LLM student's PMA + IEM train on each for
  ``--heads-epochs`` on cached token states (``train.py`` with ``configs/main_job.yaml``, as ``bench_quality.py``'s
  heads rows), then, with ``--student-epochs N``, end to end (LoRA) for N epochs; each is evaluated on STS-B and
  NLI. The lambda = 1 row is the gold-label baseline the teacher must beat. With ``--bi-encoder``, the same-backbone
  bi-encoder learns the gold-labelled pairs too (CoSENT on the gold scores, end to end for ``--student-epochs``),
  and each student is judged against it: points over it and the share of the teacher-bi-encoder gap closed.
  Source ``stsb-silver`` adds ``--silver-pairs`` pairs without gold (STS-B train sentences beside their BM25
  neighbours, ``preprocess.silver_pairs``): the teacher alone labels them for the students of lambda < 1; the
  gold-label rows leave them out.

Targets (issue 27): STS-B >= 0.82 and above MiniLM; NLI AP >= 0.85; SciFact reranking >= BM25 alone. The cost
of each adapter comes from its ``adaptation_report.json``. Writes ``REPORT.md``, ``REPORT.json`` and
``REPORT.png`` (the curve).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_quality import PYTHON, sh, teacher_model, train_command, write_snli_halves  # noqa: E402
from benchmarks.row_evaluation import evaluated  # noqa: E402
from benchmarks.quality_report import GAP_TARGET, POINTS_TARGET, TASKS, Row, write_json  # noqa: E402
from benchmarks.quality_report import verdicts as student_verdicts  # noqa: E402
from common.cli_errors import run_command  # noqa: E402
from common.stages import build_once, recorded_settings, write_whole  # noqa: E402
from teacher.model import adapter_files  # noqa: E402

TARGETS = {"sts": 0.82, "nli": 0.85}  # and SciFact: reranking >= BM25 alone
class ReportError(ValueError):
    """A --teacher or --curve argument that names nothing usable."""


STUDENT_SOURCES = ("stsb", "sick", "snli", "stsb-silver")
SILVER = "stsb-silver"
BI_ENCODER_ROW = "bi-encoder, gold labels"
BI_ENCODER_ON_PAIRS = ("--ibn_weight", "0", "--angle_weight", "0", "--cosine_weight", "1")  # graded: CoSENT alone
BASELINES = {"minilm": ("sentence-transformers", ("sts", "nli", "scifact")), "bm25": ("bm25", ("scifact",))}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--data", default="../shared/data", help="the shared data folder, holding en/... (relative: to the repo)")
    add("--work", required=True, help="folder for the SNLI split and every evaluation (resumable)")
    add("--report", required=True, help="REPORT path without extension: REPORT.md, .json and .png are written")
    add("--backbone", required=True, help="the teacher's causal-LM folder")
    add("--teacher", action="append", default=[], metavar="NAME=ADAPTER",
        help="an adapted teacher: LoRA adapter or --method full model folder (repeatable)")
    add("--curve", help="a folder of checkpoint-N adapters (with their prompts and settings files), e.g. the "
                        "--checkpoint-dir of python -m teacher.adapt --keep-checkpoints")
    add("--curve-tasks", nargs="+", default=["sts"], choices=sorted(TASKS))
    add("--seed", type=int, default=0)
    add("--scifact-queries", type=int, default=100)
    add("--scifact-docs", type=int, default=1000)
    add("--rerank-depth", type=int, default=20)
    add("--teacher-passage-tokens", type=int, default=256,
        help="teachers: cut passages to this many tokens (SciFact abstracts are long; STS/NLI sentences are short)")
    add("--gold-weights", type=float, nargs="*", default=[], metavar="LAMBDA",
        help="students on the --student-sources pairs labelled at each lambda by the first --teacher (1: gold alone)")
    add("--heads-epochs", type=float, default=4.0, help="students: epochs of PMA + IEM on cached token states")
    add("--student-epochs", type=float, default=0.0,
        help="students: 0 trains PMA + IEM alone; N > 0 then trains them end to end (LoRA) for N epochs")
    add("--student-sources", nargs="+", default=["stsb"], choices=STUDENT_SOURCES,
        help="students: the pairs they learn from (stsb, sick: the train splits; snli: the SNLI training half; "
             "stsb-silver: unlabelled BM25 neighbours of STS-B train sentences, for the teacher alone)")
    add("--silver-pairs", type=int, default=5000, help="students: how many stsb-silver pairs")
    add("--max-tokens", type=int, default=128, help="students: tokens per text")
    add("--bi-encoder", action="store_true", help="students: also the same-backbone bi-encoder on the gold-labelled "
                                                   "pairs (CoSENT), their baseline; needs --student-epochs")
    args = parser.parse_args(argv)
    if args.bi_encoder and not (args.gold_weights and args.student_epochs):
        parser.error("--bi-encoder trains end to end beside the students: give --gold-weights and --student-epochs")
    if set(args.student_sources) <= {SILVER}:
        parser.error(f"--student-sources {SILVER}: pairs without gold go beside gold pairs (add stsb, sick or snli)")
    return args


def teacher_rows(specs: Sequence[str]) -> dict[str, Path]:
    """``NAME=ADAPTER`` -> {NAME: ADAPTER}; ``ReportError`` on a malformed spec or a folder without a model."""
    rows: dict[str, Path] = {}
    for spec in specs:
        name, _, path = spec.partition("=")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or not path:
            raise ReportError(f"--teacher {spec!r}: expected NAME=ADAPTER_FOLDER (NAME: letters, digits, _ . -)")
        if not (Path(path) / "adapter_config.json").is_file() and not (Path(path) / "config.json").is_file():
            raise ReportError(f"--teacher {spec!r}: {path} holds no adapter_config.json or config.json")
        rows[name] = Path(path)
    return rows


def curve_checkpoints(folder: str | None) -> dict[int, Path]:
    """{step: checkpoint folder} of every ``checkpoint-N`` under ``folder``."""
    if folder is None:
        return {}
    found = {int(path.name.split("-")[1]): path for path in Path(folder).glob("checkpoint-*")
             if re.fullmatch(r"checkpoint-\d+", path.name)}
    if not found:
        raise ReportError(f"--curve {folder}: no checkpoint-N folder in it")
    for path in found.values():
        try:
            adapter_files(path)
        except FileNotFoundError as error:  # checkpoints of teacher.adapt before it wrote them into each one
            raise ReportError(f"--curve {error} (copy it from the run's final adapter)") from None
    return dict(sorted(found.items()))


def curve_row(folder: str, step: int) -> str:
    """The evaluation name of one curve point: the curve folder's name is part of it, so that the curves of two
    runs in one ``--work`` do not read each other's results."""
    return f"checkpoint_{re.sub(r'[^A-Za-z0-9_-]', '_', Path(folder).name)}_{step}"


def dev_metrics(checkpoint: Path) -> dict[str, float]:
    """The eval_* values the Trainer logged at the checkpoint's own step."""
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    logged = [entry for entry in state["log_history"] if entry.get("step") == state["global_step"]]
    return {key: value for entry in logged for key, value in entry.items() if key.startswith("eval_")}


def evaluate(work: Path, name: str, kind: str, path: str, adapter: str | None, tasks: Sequence[str],
             args: argparse.Namespace) -> dict[str, float]:
    """{task: metric} of one row (``row_evaluation.evaluated``: measured unless on record for these weights)."""
    return {task: result[TASKS[task][1]]
            for task, result in evaluated(work, name, kind, path, adapter, tasks, args).items()}


def adaptation_cost(adapter: Path) -> dict[str, Any]:
    """Seconds per 1,000 training prompts (dev evaluations included), peak memory, the steps and seconds of the
    adapter's last invocation (a resumed run: after its checkpoint), from its ``adaptation_report.json``."""
    path = adapter / "adaptation_report.json"
    if not path.is_file():
        return {}
    report = json.loads(path.read_text())
    keys = ("seconds_per_1000_prompts", "peak_memory_gb", "steps_run", "train_seconds")
    return {key: report.get(key) for key in keys}


def verdicts(row: dict[str, float], minilm: dict[str, float], bm25: dict[str, float]) -> dict[str, bool]:
    """The issue's teacher targets for one row."""
    return {"sts": row["sts"] >= TARGETS["sts"] and row["sts"] > minilm["sts"],
            "nli": row["nli"] >= TARGETS["nli"],
            "scifact": row["scifact"] >= bm25["scifact"]}


def render(results: dict[str, Any]) -> str:
    """The report's markdown: the teachers against the baselines, the targets, the learning curve."""
    lines = ["| model | STS-B test Spearman | NLI AP (SNLI test half) | SciFact NDCG@10 | s / 1,000 training prompts "
             "| peak memory (GB) |", "| --- | --- | --- | --- | --- | --- |"]
    for name, row in results["rows"].items():
        cost = row.get("cost", {})
        cells = [f"{row['metrics'][task]:.3f}" if task in row["metrics"] else "" for task in TASKS]
        cells += [f"{cost[key]:.{digits}f}" if cost.get(key) is not None else ""
                  for key, digits in (("seconds_per_1000_prompts", 0), ("peak_memory_gb", 2))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Targets: STS-B >= 0.82 and above MiniLM; NLI AP >= 0.85; SciFact reranking >= BM25 alone.", ""]
    for name, met in results["verdicts"].items():
        lines.append(f"- {name}: " + ", ".join(f"{task} {'met' if ok else 'missed'}" for task, ok in met.items()))
    if results["student_verdicts"]:
        lines += ["", f"Student targets: >= the bi-encoder + {POINTS_TARGET:g} points and >= {GAP_TARGET:.0%} of "
                      "the teacher-bi-encoder gap closed, on each task.", ""]
        lines += [f"- {name}: " + "; ".join(f"{task} {judgement(v)}" for task, v in judged.items())
                  for name, judged in results["student_verdicts"].items()]
    if results["curve"]:
        tasks = [task for task in TASKS if any(task in point["test"] for point in results["curve"])]
        dev = sorted({key for point in results["curve"] for key in point["dev"]})
        lines += ["", "| step | " + " | ".join([*dev, *(f"test {TASKS[t][0]}" for t in tasks)]) + " |",
                  "| --- |" + " --- |" * (len(dev) + len(tasks))]
        for point in results["curve"]:
            cells = [f"{point['dev'][key]:.3f}" if key in point["dev"] else "" for key in dev]
            cells += [f"{point['test'][task]:.3f}" if task in point["test"] else "" for task in tasks]
            lines.append(f"| {point['step']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def judgement(verdict: dict[str, Any]) -> str:
    """One task's student verdict in words: points over the bi-encoder, the share of the gap closed."""
    def met(ok: bool | None) -> str:
        return "met" if ok else "missed"

    gap = ("no gap to close" if verdict["gap_closed"] is None else
           f"gap closed {verdict['gap_closed']:.2f} ({met(verdict['meets_gap'])})")
    return f"{verdict['points']:+.1f} points ({met(verdict['meets_points'])}), {gap}"


def plot(results: dict[str, Any], png: Path) -> None:
    """The learning curve (test metrics against steps) with MiniLM's level drawn across."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for task in TASKS:
        points = [(point["step"], point["test"][task]) for point in results["curve"] if task in point["test"]]
        if points:
            line = axis.plot(*zip(*points), marker="o", label=f"teacher, {TASKS[task][0]}")[0]
            minilm = results["rows"]["minilm"]["metrics"].get(task)
            if minilm is not None:
                axis.axhline(minilm, linestyle="--", color=line.get_color(), label=f"MiniLM, {TASKS[task][0]}")
    axis.set_xlabel("adaptation step")
    axis.set_ylabel("metric")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(png, dpi=120)
    plt.close(figure)


def student_source_files(data: Path, work: Path, sources: Sequence[str]) -> list[str]:
    """The pairs files of the gold ``sources``: STS-B and SICK train, and the SNLI half this report trains on."""
    files = {"stsb": data / "en" / "stsb" / "train.jsonl", "sick": data / "en" / "sick" / "train.jsonl",
             "snli": work / "snli" / "train.jsonl"}
    return [str(files[source]) for source in sources]


def silver_file(data: Path, work: Path, count: int, seed: int) -> str:
    """``count`` STS-B train sentences beside their BM25 neighbours (``preprocess.silver_pairs``, built once)."""
    output, stsb = work / f"silver_stsb_{count}.jsonl", data / "en" / "stsb" / "train.jsonl"
    build_once(output, lambda out: sh([PYTHON, "-m", "preprocess.silver_pairs", str(stsb), "--output", str(out),
                                       "--limit", str(count), "--seed", str(seed)]), {"count": count, "seed": seed})
    return str(output)


def student_rows(work: Path, backbone: str, teacher: str, adapter: Path, args: argparse.Namespace
                 ) -> dict[str, dict[str, Any]]:
    """One D2LLM student per ``--gold-weights`` lambda, on the ``--student-sources`` pairs labelled by the teacher
    row ``teacher`` (``adapter``): PMA + IEM on cached token states, then ``--student-epochs`` end to end. Below
    lambda = 1 the teacher's name is part of every file name, and so are the sources and the end-to-end epochs
    where they differ from the defaults, so that other students in the same ``--work`` are trained anew; a teacher
    whose weights changed under the same name labels its pairs again. The rows on gold labels (lambda = 1, the
    bi-encoder) learn the gold sources alone. Each set of texts has one token-state cache, named for what decides
    it: the sources, the token limit, the seed, the batching and the silver pairs."""
    gold_sources = [source for source in args.student_sources if source != SILVER]
    end_to_end = f"_e2e{args.student_epochs:g}" if args.student_epochs else ""
    epochs = f"end to end {args.student_epochs:g} epoch" + ("s" if args.student_epochs != 1 else "")
    from common.fingerprints import saved_digest

    rows = {}
    model_path, adapter_path = teacher_model(backbone, adapter)

    def labelled(weight: float) -> tuple[str, Path, Path, str]:
        """The row tag, the pairs folder labelled at ``weight`` (built once), its token-state cache and the row
        label's detail."""
        names = args.student_sources if weight < 1 else gold_sources
        variant = "" if names == ["stsb"] else "_" + "-".join(names)
        sources = student_source_files(Path(args.data), work, [name for name in names if name != SILVER])
        silver = ([silver_file(Path(args.data), work, args.silver_pairs, args.seed)] if SILVER in names else [])
        texts = {"seed": args.seed, **({"batches": "one source each"} if len(names) > 1 else {}),  # (mixed before)
                 **({"silver_pairs": args.silver_pairs} if silver else {})}
        digest = hashlib.sha256(json.dumps(texts, sort_keys=True).encode()).hexdigest()[:8]
        tag = (f"gold{weight:g}" if weight == 1 else f"{teacher}_gold{weight:g}") + variant
        build_once(work / f"pairs_{tag}", lambda out: sh([
            PYTHON, "-m", "teacher.label_pairs", *sources, *(["--unlabelled", *silver] if silver else []),
            "--output", str(out), "--teacher", model_path, *(["--adapter", adapter_path] if adapter_path else []),
            "--gold-weight", str(weight), "--seed", str(args.seed), "--dtype", "float32"]),
            {**({"teacher": saved_digest(adapter)} if weight != 1 else {}), **texts})
        detail = ", ".join([*([f"on {'+'.join(names)}"] if variant else []), *([epochs] if end_to_end else [])])
        return tag, work / f"pairs_{tag}", work / f"token_states_{'-'.join(names)}_{args.max_tokens}_{digest}", detail

    def trained(row: Row, pairs: Path, states: Path) -> Path:
        """``row`` trained on ``pairs`` into ``WORK/<row.label>`` (built once per pairs, labels and settings)."""
        model = work / row.label
        build_once(model, lambda out: sh(train_command(
            row, backbone, pairs, states, out,
            argparse.Namespace(max_tokens=args.max_tokens, seed=args.seed, heads_epochs=args.heads_epochs,
                               epochs=args.student_epochs))),
            {"pairs": str(pairs), "labels": recorded_settings(pairs), "heads_epochs": args.heads_epochs,
             **({"epochs": args.student_epochs} if end_to_end else {}),
             **({"options": list(row.options)} if row.options else {})})
        return model

    def named(label: str, detail: str) -> str:
        return f"{label} ({detail})" if detail else label

    for weight in args.gold_weights:
        tag, pairs, states, detail = labelled(weight)
        name = f"student_{tag}{end_to_end}"
        row = Row(name, "end_to_end", student=True, warmup=True) if end_to_end else Row(name, "heads", student=True)
        label = "student, gold labels alone" if weight == 1 else f"student of {teacher}, gold weight {weight:g}"
        rows[named(label, detail)] = {
            "metrics": evaluate(work, name, "d2llm", str(trained(row, pairs, states)), None, ("sts", "nli"), args)}
    if args.bi_encoder:
        tag, pairs, states, detail = labelled(1.0)
        row = Row(f"bi_encoder_{tag}{end_to_end}", "bi_encoder", BI_ENCODER_ON_PAIRS)
        rows[named(BI_ENCODER_ROW, detail)] = {"metrics": evaluate(
            work, row.label, "bi-encoder", str(trained(row, pairs, states)), None, ("sts", "nli"), args)}
    return rows


def judged_students(rows: dict[str, Any], teacher: str) -> dict[str, dict[str, Any]]:
    """{student row: {task: points over the bi-encoder row, share of the gap to ``teacher`` closed, targets}}
    (``quality_report.verdicts``); empty without a bi-encoder row."""
    baseline = next((name for name in rows if name.startswith(BI_ENCODER_ROW)), None)
    if baseline is None:
        return {}
    return {name: {task: student_verdicts(row["metrics"][task], rows[baseline]["metrics"][task],
                                          rows[teacher]["metrics"][task]) for task in ("sts", "nli")}
            for name, row in rows.items() if name.startswith("student")}


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    teachers, checkpoints = teacher_rows(args.teacher), curve_checkpoints(args.curve)
    if args.gold_weights and not teachers:
        raise ReportError("--gold-weights: the students need a --teacher to label their pairs")
    work, report = (REPO / args.work).resolve(), (REPO / args.report).resolve()
    args.data = str((REPO / args.data).resolve())
    snli = work / "snli"
    build_once(snli, lambda out: write_snli_halves(Path(args.data) / "en" / "snli" / "dev.jsonl", args.seed, out),
               {"seed": args.seed})
    from common.embedded_models import minilm_dir

    paths = {"minilm": minilm_dir(), "bm25": ""}
    rows = {name: {"metrics": evaluate(work, name, kind, paths[name], None, tasks, args)}
            for name, (kind, tasks) in BASELINES.items()}
    for name, adapter in teachers.items():
        rows[name] = {"metrics": evaluate(work, f"teacher_{name}", "teacher", *teacher_model(args.backbone, adapter),
                                          tuple(TASKS), args), "cost": adaptation_cost(adapter)}
    if args.gold_weights:
        rows.update(student_rows(work, args.backbone, *next(iter(teachers.items())), args))
    curve = [{"step": step, "dev": dev_metrics(folder),
              "test": evaluate(work, curve_row(args.curve, step), "teacher", *teacher_model(args.backbone, folder),
                               args.curve_tasks, args)} for step, folder in checkpoints.items()]
    results = {"command": " ".join(["python", "benchmarks/bench_teacher.py", *(argv or sys.argv[1:])]),
               "rows": rows, "curve": curve,
               "verdicts": {name: verdicts(rows[name]["metrics"], rows["minilm"]["metrics"], rows["bm25"]["metrics"])
                            for name in teachers},
               "student_verdicts": judged_students(rows, next(iter(teachers), ""))}
    report.parent.mkdir(parents=True, exist_ok=True)
    write_json(report.with_suffix(".json"), results)
    write_whole(report.with_suffix(".md"), lambda out: out.write_text(render(results)))
    if curve:
        write_whole(report.with_suffix(".png"), lambda out: plot(results, out))
    print(render(results))


if __name__ == "__main__":
    run_command(main, ReportError)
