"""The teacher report: is the adapted cross-encoder worth distilling, and how did it learn?

    OMP_NUM_THREADS=2 python benchmarks/bench_teacher.py --work /tmp/teacher_report --backbone SMOLLM2_FOLDER \\
        --teacher graded=ADAPTER [--teacher NAME=ADAPTER ...] [--curve CHECKPOINTS] --report docs/results/teacher

Rows, each task measured once per model and settings and kept in ``WORK/evaluations`` (a killed run resumes; a
row whose weights changed under the same name is measured again); each row runs in a child process so its memory
is given back:

* every ``--teacher NAME=ADAPTER`` (the ablation: one adapter per recipe, trained on the same data and steps; a
  LoRA adapter on ``--backbone``, or the whole model that ``teacher.adapt --method full`` wrote):
  STS-B test (all 1,379 pairs, Spearman), NLI average precision on the test half of SNLI dev (split by premise
  with ``--seed``) and SciFact NDCG@10 reranking BM25's top ``--rerank-depth`` on a seeded slice
  (``--scifact-queries`` test queries over ``--scifact-docs`` documents, every judged one included);
* all-MiniLM-L6-v2 on the same three, and BM25 alone on SciFact: the baselines, measured in the same run;
* the learning curve: every ``checkpoint-N`` folder under ``--curve`` on ``--curve-tasks``, next to the dev
  metric the Trainer logged at that step (each checkpoint's ``trainer_state.json``).

Students of a teacher are the ``student`` recipe (``python pipeline.py student --teacher T``).

Targets: STS-B >= 0.82 and above MiniLM; NLI AP >= 0.85; SciFact reranking >= BM25 alone. The cost
of each adapter comes from its ``adaptation_report.json``. Writes ``REPORT.md``, ``REPORT.json`` and
``REPORT.png`` (the curve).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.row_evaluation import TASKS, evaluated, teacher_model  # noqa: E402
from common.cli_errors import run_command  # noqa: E402
from common.stages import build_once, write_json, write_whole  # noqa: E402
from preprocess.split_pairs import write_halves  # noqa: E402
from teacher.model import adapter_files  # noqa: E402

TARGETS = {"sts": 0.82, "nli": 0.85}  # and SciFact: reranking >= BM25 alone
class ReportError(ValueError):
    """A --teacher or --curve argument that names nothing usable."""


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
    return parser.parse_args(argv)


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


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    teachers, checkpoints = teacher_rows(args.teacher), curve_checkpoints(args.curve)
    work, report = (REPO / args.work).resolve(), (REPO / args.report).resolve()
    args.data = str((REPO / args.data).resolve())
    snli = work / "snli"
    build_once(snli, lambda out: write_halves(Path(args.data) / "en" / "snli" / "dev.jsonl", args.seed, out),
               {"seed": args.seed})
    from common.embedded_models import minilm_dir

    paths = {"minilm": minilm_dir(), "bm25": ""}
    rows = {name: {"metrics": evaluate(work, name, kind, paths[name], None, tasks, args)}
            for name, (kind, tasks) in BASELINES.items()}
    for name, adapter in teachers.items():
        rows[name] = {"metrics": evaluate(work, f"teacher_{name}", "teacher", *teacher_model(args.backbone, adapter),
                                          tuple(TASKS), args), "cost": adaptation_cost(adapter)}
    curve = [{"step": step, "dev": dev_metrics(folder),
              "test": evaluate(work, curve_row(args.curve, step), "teacher", *teacher_model(args.backbone, folder),
                               args.curve_tasks, args)} for step, folder in checkpoints.items()]
    results = {"command": " ".join(["python", "benchmarks/bench_teacher.py", *(argv or sys.argv[1:])]),
               "rows": rows, "curve": curve,
               "verdicts": {name: verdicts(rows[name]["metrics"], rows["minilm"]["metrics"], rows["bm25"]["metrics"])
                            for name in teachers}}
    report.parent.mkdir(parents=True, exist_ok=True)
    write_json(report.with_suffix(".json"), results)
    write_whole(report.with_suffix(".md"), lambda out: out.write_text(render(results)))
    if curve:
        write_whole(report.with_suffix(".png"), lambda out: plot(results, out))
    print(render(results))


if __name__ == "__main__":
    run_command(main, ReportError)
