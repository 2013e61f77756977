"""Several models on the same held-out sets: one table, one JSON file and one picture (the main job's report).

    python -m evaluation.comparison --row NAME KIND PATH [--row ...] --sts FILE [--beir DIR] --output RESULTS.json
        [--teacher-adapter DIR] [--teacher-dtype float32] [--curve LOG_HISTORY.json] [--plot RESULTS.png]

Each ``--row`` is evaluated in turn, in this process, through ``evaluation.tasks`` (as ``evaluate_model.py``):
Spearman of the symmetric score on the graded pairs ``--sts``, and NDCG@10 on the BEIR folder ``--beir`` (test split; a
cross-encoder reranks BM25's top ``--rerank-depth``). ``KIND`` is a ``evaluation.models.MODEL_TYPES`` name
(``d2llm``, ``bi-encoder``, ``sentence-transformers``, ``teacher``). Each row's cost is the wall time of its STS
job per 1,000 texts it encoded (a cross-encoder encodes no text alone: per 1,000 pairs, both orders scored).
``--curve`` is a Trainer ``log_history`` JSON (the distilled student's) drawn beside the bars. Data and the curve
are read before any model loads; bad input (a missing or unreadable file, a model that does not load) exits 2 with
one line. The JSON and the PNG are written whole or not at all.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from common.cli_errors import report_bad_input
from common.metrics import MetricError
from common.stages import write_whole
from evaluation import tasks
from evaluation.loaders import DataError
from evaluation.models import MODEL_TYPES, ModelError, load_scorer


def encode_cost(kind: str, first: Sequence[str], second: Sequence[str], seconds: float) -> dict[str, Any]:
    """Seconds per 1,000 texts encoded (the distinct texts of the pairs) or, for a cross-encoder, per 1,000 pairs."""
    if kind == "teacher":
        return {"seconds_per_1000": 1000 * seconds / len(first), "unit": "pairs"}
    return {"seconds_per_1000": 1000 * seconds / len(set(first) | set(second)), "unit": "texts"}


def evaluate_rows(rows: Sequence[tuple[str, str, str]], jobs: Sequence[tasks.Job], *,
                  teacher_adapter: str | None = None, teacher_dtype: str | None = None, rerank_depth: int = 10
                  ) -> list[dict[str, Any]]:
    """``[{name, kind, path, metrics: {spearman, ndcg_at_10}, cost}]``, one model loaded at a time."""
    results = []
    for name, kind, path in rows:
        scorer = load_scorer(path, kind, teacher_adapter=teacher_adapter if kind == "teacher" else None,
                             rerank_depth=rerank_depth, teacher_dtype=teacher_dtype if kind == "teacher" else None)
        measured = tasks.run(scorer, jobs)
        metrics, cost = {}, None
        for (_, data), result in zip(jobs, measured):
            if result["task"] == "sts":
                metrics["spearman"] = result["spearman"]
                cost = encode_cost(kind, data.first, data.second, result["seconds"])
            elif result["task"] == "retrieval":
                metrics["ndcg_at_10"] = result["ndcg_at_10"]
        results.append({"name": name, "kind": kind, "path": path, "metrics": metrics, "cost": cost,
                        "details": measured})
        print(f"[compare] {name}: " + ", ".join(f"{key} {value:.4f}" for key, value in metrics.items()), flush=True)
        del scorer
        gc.collect()
    return results


def render(rows: Sequence[dict[str, Any]]) -> str:
    """The markdown table: one line per model, metrics then cost."""
    lines = ["| model | STS-B Spearman (held-out pairs) | retrieval NDCG@10 | cost: s per 1,000 texts encoded |",
             "| --- | ---: | ---: | ---: |"]
    for row in rows:
        metrics, cost = row["metrics"], row["cost"]
        cells = [f"{metrics[key]:.3f}" if key in metrics else "" for key in ("spearman", "ndcg_at_10")]
        cells.append("" if cost is None else
                     f"{cost['seconds_per_1000']:.1f}" + (" per 1,000 pairs" if cost["unit"] == "pairs" else ""))
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def loss_curve(log_history: Path) -> list[tuple[int, float]]:
    """``(step, loss)`` of every logged training step of a Trainer ``log_history`` JSON (a list of objects); a
    missing or unreadable file, or another layout, is a ``DataError`` naming it."""
    try:
        entries = json.loads(log_history.read_text(encoding="utf-8"))
    except OSError as error:
        raise DataError(f"{log_history}: cannot read the curve ({error.strerror})") from None
    except UnicodeDecodeError:
        raise DataError(f"{log_history}: not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{log_history}: not valid JSON ({error.msg}, line {error.lineno})") from None
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise DataError(f"{log_history}: expected a Trainer log_history, a JSON list of objects")
    curve = []
    for index, entry in enumerate(entries):
        if "loss" in entry and "step" in entry:
            try:
                curve.append((int(entry["step"]), float(entry["loss"])))
            except (TypeError, ValueError):
                raise DataError(f"{log_history}[{index}]: step and loss must be numbers, got {entry['step']!r} "
                                f"and {entry['loss']!r}") from None
    return curve


def plot(rows: Sequence[dict[str, Any]], curve: list[tuple[int, float]], png: Path) -> None:
    """Left: each model's held-out Spearman as a bar; right: the distilled student's training loss by step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2 if curve else 1, figsize=(11 if curve else 6, 4), squeeze=False)
    bars = axes[0][0]
    names = [row["name"] for row in rows]
    values = [row["metrics"].get("spearman", 0.0) for row in rows]
    bars.barh(names, values, color="tab:blue")
    for position, value in enumerate(values):
        bars.text(value, position, f" {value:.3f}", va="center", fontsize=8)
    bars.invert_yaxis()
    bars.set_xlim(0, 1)
    bars.set_xlabel("STS-B Spearman, held-out pairs")
    if curve:
        axes[0][1].plot(*zip(*curve), color="tab:orange")
        axes[0][1].set_xlabel("distillation step")
        axes[0][1].set_ylabel("training loss")
        axes[0][1].set_title("distilled student", fontsize=9)
    figure.tight_layout()
    figure.savefig(png, dpi=120)
    plt.close(figure)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--row", nargs=3, action="append", required=True, metavar=("NAME", "KIND", "PATH"))
    parser.add_argument("--sts", required=True, help="graded pairs (JSONL or hub id)")
    parser.add_argument("--beir", help="BEIR folder, test split")
    parser.add_argument("--split", default="test")
    parser.add_argument("--teacher-adapter", help="the LoRA adapter of the teacher rows")
    parser.add_argument("--teacher-dtype", default=None, choices=("auto", "float32", "bfloat16"))
    parser.add_argument("--rerank-depth", type=int, default=10, help="cross-encoders rerank BM25's top N")
    parser.add_argument("--curve", help="log_history.json of the distilled student's training")
    parser.add_argument("--output", required=True, help="results JSON")
    parser.add_argument("--plot", help="PNG of the table (and the curve)")
    args = parser.parse_args(argv)
    for name, kind, _ in args.row:
        if kind not in MODEL_TYPES:
            parser.error(f"--row {name}: kind {kind!r} is not one of {MODEL_TYPES}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        jobs = tasks.load_jobs(sts=[args.sts], beir=[args.beir] if args.beir else [], split=args.split)
        curve = loss_curve(Path(args.curve)) if args.curve else []
        rows = evaluate_rows(args.row, jobs, teacher_adapter=args.teacher_adapter, teacher_dtype=args.teacher_dtype,
                             rerank_depth=args.rerank_depth)
    except (DataError, ModelError, MetricError) as error:
        return report_bad_input(error)
    report = {"command": " ".join(["python -m evaluation.comparison", *(argv if argv is not None else sys.argv[1:])]),
              "rows": rows, "curve": [{"step": step, "loss": loss} for step, loss in curve]}
    output = Path(args.output)
    write_whole(output, lambda out: out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8"))
    if args.plot:
        write_whole(Path(args.plot), lambda out: plot(rows, curve, out))
    print(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
