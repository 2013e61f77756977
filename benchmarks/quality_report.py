"""The record and the report of ``bench_quality.py``: its rows, ``WORK/results.json`` (the ledger), the per-task
evaluation files, and the table, learning curve and SciFact section written to ``REPORT.md``, ``.json`` and ``.png``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from common.stages import build_once, write_json, write_whole

TASKS: dict[str, tuple[str, str]] = {  # task -> (column title, metric key)
    "sts": ("STS-B Spearman", "spearman"),
    "nli": ("NLI AP", "average_precision"),
    "scifact": ("SciFact NDCG@10", "ndcg_at_10"),
}
POINTS_TARGET = 3.0  # student >= bi-encoder + 3 points (metric x 100)
GAP_TARGET = 0.5  # student closes >= half of the bi-encoder-to-teacher gap


@dataclass(frozen=True)
class Row:
    """One model of the table: ``kind`` is how it is trained (``heads``: PMA + IEM on cached frozen states;
    ``end_to_end``: LoRA + heads; ``bi_encoder``; ``none``: used as it is)."""

    label: str
    kind: str
    options: tuple[str, ...] = ()
    student: bool = False
    warmup: bool = False  # end_to_end only: the heads are first trained alone, as in the heads rows
    data: str = "full"  # the teacher-scored batches, or "stsb_pairs": the graded STS-B train pairs


HEADS_KD = ("--kd_weight", "1", "--kd_teacher_temperature", "1", "--kd_student_temperature", "0.05")
ROWS: dict[str, Row] = {
    "teacher": Row("adapted teacher (cross-encoder, the ceiling)", "none"),
    "heads_spec": Row("student, heads only, SPEC losses", "heads", student=True),
    "heads_kd": Row("student, heads only, SPEC losses + listwise KD", "heads", HEADS_KD, student=True),
    "heads_no_pairwise": Row("student, heads only, without the in-batch pairwise term", "heads", ("--gamma", "0"),
                             student=True),
    "heads_gold": Row("student architecture, heads only, gold labels alone (no teacher)", "heads",
                      ("--hard_weighting", "none", "--beta", "0", "--gamma", "0", "--eta", "0"), student=True),
    "heads_gold_graded": Row("student architecture, heads only, CoSENT on all graded STS-B train pairs (no teacher)",
                             "heads", student=True, data="stsb_pairs"),
    "e2e_warmup": Row("student, head warm-up then end to end (LoRA), SPEC losses", "end_to_end", student=True,
                      warmup=True),
    "e2e_spec": Row("student, end to end (LoRA) from a fresh head, SPEC losses", "end_to_end", student=True),
    "bi_encoder": Row("bi-encoder, same backbone (mean pooling, cosine, InfoNCE, LoRA)", "bi_encoder"),
    "bi_cosent": Row("bi-encoder, same backbone, CoSENT + AnglE on all graded STS-B train pairs (LoRA)",
                     "bi_encoder", ("--ibn_weight", "0", "--angle_weight", "1", "--cosine_weight", "1"),
                     data="stsb_pairs"),
    "minilm": Row("all-MiniLM-L6-v2 (off the shelf)", "none"),
}
CURVE_ROWS = ("heads_spec", "bi_encoder")
SCIFACT_ROWS = ("bm25", "teacher_scifact", "heads_spec", "bi_encoder", "minilm")
SCIFACT_LABELS = {"bm25": "BM25 alone", "teacher_scifact": "teacher adapted on SciFact train, reranking BM25"}


# ---------------------------------------------------------------------------------------------- ledger
@dataclass
class Ledger:
    """``WORK/results.json``: settings, stage seconds, results, the wall time of every invocation; rewritten after
    every change, so a killed run keeps what it finished."""

    path: Path
    data: dict[str, Any]
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def open(cls, work: Path, settings: dict[str, Any], command: str) -> "Ledger":
        path = work / "results.json"
        data = json.loads(path.read_text()) if path.exists() else {
            "settings": settings, "stage_seconds": {}, "results": {}, "invocations": []}
        if data["settings"] != settings:
            raise SystemExit(f"{path} holds a run with other settings {data['settings']}: use another --work")
        data["invocations"].append({"command": command, "seconds": 0.0})
        ledger = cls(path, data)
        ledger.save()
        return ledger

    def save(self) -> None:
        self.data["invocations"][-1]["seconds"] = round(time.perf_counter() - self.started, 1)
        write_json(self.path, self.data)

    def stage(self, name: str, output: Path, build: Callable[[Path], None]) -> Path:
        """``common.stages.build_once`` with the stage's seconds recorded; returns ``output``."""
        print(f"\n[{name}] -> {output}", flush=True)
        seconds = build_once(output, build, {"run": self.data["settings"]})
        if seconds is None:
            print(f"[{name}] done already", flush=True)
        else:
            self.data["stage_seconds"][name] = round(seconds, 1)
            self.save()
            print(f"[{name}] {seconds:.0f} s", flush=True)
        return output

    @property
    def total_seconds(self) -> float:
        return sum(invocation["seconds"] for invocation in self.data["invocations"])


def recorded_ledger(work: Path, settings: dict[str, Any]) -> Ledger:
    """The ledger of a run that has scored its batches, read only (``--report-only`` records nothing)."""
    path = work / "results.json"
    if not (path.exists() and (work / "scored").exists()):
        raise SystemExit(f"{work} holds no run that has reached its scored batches: nothing to report")
    data = json.loads(path.read_text())
    if data["settings"] != settings:
        raise SystemExit(f"{path} holds a run with other settings {data['settings']}: give the same options")
    for file in sorted((work / "evaluations").glob("*.json")):  # rows still running have written some tasks
        name, task = file.stem.rsplit(".", 1)
        result = json.loads(file.read_text())
        data["results"].setdefault(name, {})[task] = {key: value for key, value in result.items() if key != "scores"}
    return Ledger(path, data)


def evaluation_file(work: Path, name: str, task: str) -> Path:
    return work / "evaluations" / f"{name}.{task}.json"


# ---------------------------------------------------------------------------------------------- table
def agreement(work: Path, name: str) -> float | None:
    """Spearman between a row's STS-B test scores and the teacher's (how well it imitates the teacher)."""
    from common import metrics

    row, teacher = evaluation_file(work, name, "sts"), evaluation_file(work, "teacher", "sts")
    if not (row.exists() and teacher.exists()):
        return None
    return metrics.spearman(json.loads(row.read_text())["scores"], json.loads(teacher.read_text())["scores"])


def metric(results: dict[str, Any], name: str, task: str) -> float | None:
    return results.get(name, {}).get(task, {}).get(TASKS[task][1])


def verdicts(student: float | None, bi_encoder: float | None, teacher: float | None) -> dict[str, Any]:
    """Points over the bi-encoder, the share of the bi-encoder-to-teacher gap closed and both targets."""
    if None in (student, bi_encoder, teacher):
        return {"points": None, "gap_closed": None, "meets_points": None, "meets_gap": None}
    points = 100 * (student - bi_encoder)
    gap = teacher - bi_encoder
    closed = (student - bi_encoder) / gap if gap > 0 else None
    return {"points": points, "gap_closed": closed, "meets_points": points >= POINTS_TARGET,
            "meets_gap": None if closed is None else closed >= GAP_TARGET}


def build_table(work: Path, results: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per row: STS-B and NLI metrics, agreement with the teacher and (students) the verdicts."""
    table = []
    for name, row in ROWS.items():
        if name not in results:  # a row not run (``--rows``)
            continue
        entry: dict[str, Any] = {"row": name, "label": row.label,
                                 "sts": metric(results, name, "sts"), "nli": metric(results, name, "nli"),
                                 "agreement": None if name == "teacher" else agreement(work, name)}
        if row.student:
            entry["verdicts"] = {task: verdicts(metric(results, name, task), metric(results, "bi_encoder", task),
                                                metric(results, "teacher", task)) for task in ("sts", "nli")}
        table.append(entry)
    return table


def _fmt(value: float | None, pattern: str) -> str:
    return "n/a" if value is None else format(value, pattern)


def _yes(value: bool | None) -> str:
    return "n/a" if value is None else "yes" if value else "no"


def render_table(table: list[dict[str, Any]]) -> str:
    lines = ["| row | STS-B Spearman | NLI AP | agreement with teacher (STS-B) | points over bi-encoder (STS-B / NLI) "
             f"| gap to teacher closed (STS-B / NLI) | >= +{POINTS_TARGET:g} points | >= {GAP_TARGET:.0%} of gap |",
             "| --- | ---: | ---: | ---: | --- | --- | --- | --- |"]
    for entry in table:
        cells = [_fmt(entry["sts"], ".4f"), _fmt(entry["nli"], ".4f"), _fmt(entry["agreement"], ".3f")]
        if "verdicts" in entry:
            v = entry["verdicts"]
            cells += [" / ".join(_fmt(v[t]["points"], "+.1f") for t in ("sts", "nli")),
                      " / ".join(_fmt(v[t]["gap_closed"], ".2f") for t in ("sts", "nli")),
                      " / ".join(_yes(v[t]["meets_points"]) for t in ("sts", "nli")),
                      " / ".join(_yes(v[t]["meets_gap"]) for t in ("sts", "nli"))]
        else:
            cells += ["", "", "", ""]
        lines.append(f"| {entry['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def curve_points(results: dict[str, Any], full: int, sizes: Sequence[int]) -> dict[str, list[tuple[int, dict]]]:
    """Per curve row: ``(queries, {task: metric})`` at each measured size, the full set last."""
    points = {}
    for name in CURVE_ROWS:
        measured = [(size, f"{name}@{size}") for size in sizes] + [(full, name)]
        points[name] = [(size, {task: metric(results, key, task) for task in ("sts", "nli")})
                        for size, key in measured if key in results]
    return points


def render_curve(points: dict[str, list[tuple[int, dict]]], teacher: dict[str, float | None], png: Path) -> str:
    """The learning curve as a markdown table and a PNG (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, task in zip(axes, ("sts", "nli")):
        for name, values in points.items():
            xs = [size for size, value in values if value[task] is not None]
            axis.plot(xs, [value[task] for _, value in values if value[task] is not None], marker="o",
                      label=ROWS[name].label.split(",")[0] + (" (heads)" if name.startswith("heads") else ""))
        if teacher[task] is not None:
            axis.axhline(teacher[task], linestyle="--", color="grey", label="teacher")
        axis.set_xscale("log")
        axis.set_xlabel("training queries")
        axis.set_title(TASKS[task][0] + (" (all test pairs)" if task == "sts" else " (SNLI dev test half)"))
        axis.legend(fontsize=8)
    figure.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=100)
    plt.close(figure)
    lines = ["| row | queries | STS-B Spearman | NLI AP |", "| --- | ---: | ---: | ---: |"]
    for name, values in points.items():
        lines += [f"| {ROWS[name].label} | {size} | {_fmt(value['sts'], '.4f')} | {_fmt(value['nli'], '.4f')} |"
                  for size, value in values]
    return "\n".join(lines)


def render_scifact(results: dict[str, Any], given_teacher: bool = False) -> str:
    """The SciFact table; ``given_teacher``: the reranking teacher is the ``--teacher-adapter``, not adapted here."""
    if all(metric(results, name, "scifact") is None for name in SCIFACT_ROWS):
        return "Not run (`--no-scifact`)."
    labels = {**SCIFACT_LABELS, **({"teacher_scifact": "the teacher (`--teacher-adapter`), reranking BM25"}
                                   if given_teacher else {})}
    lines = ["| row | SciFact NDCG@10 |", "| --- | ---: |"]
    for name in SCIFACT_ROWS:
        label = labels.get(name) or ROWS[name].label
        lines.append(f"| {label} | {_fmt(metric(results, name, 'scifact'), '.4f')} |")
    bm25, teacher = metric(results, "bm25", "scifact"), metric(results, "teacher_scifact", "scifact")
    if None not in (bm25, teacher) and teacher <= bm25:
        lines.append("\nThe teacher does not beat BM25 alone: at this size it cannot teach retrieval.")
    return "\n".join(lines)


def teacher_description(settings: dict[str, Any]) -> str:
    """How the run's teacher was made: adapted by the benchmark, or the ``--teacher-adapter`` it was given (with
    that adapter's training files, from its ``adaptation_report.json``)."""
    adapter = settings.get("teacher_adapter")
    if not adapter:
        return (f"SmolLM2-135M-Instruct, LoRA on {settings['teacher_pairs']} STS-B graded pairs + the mined SICK / "
                f"SNLI examples, {settings['prompt_preset']} prompts")
    report = Path(adapter) / "adaptation_report.json"
    trained = json.loads(report.read_text())["settings"] if report.is_file() else {}
    files = ["/".join(Path(name).parts[-2:]) for name in trained.get("train_pairs", [])]
    files += [Path(name).name + "/" for name in trained.get("train_mined", [])]
    objective = trained.get("config", {})
    made = ("fine-tuned in full" if objective.get("method") == "full" else "with the LoRA adapter")
    return (f"SmolLM2-135M-Instruct {made} {Path(adapter).name} (`--teacher-adapter`; trained on "
            f"{', '.join(files) or 'files not recorded'}, {objective.get('pair_objective', '?')} pairs, "
            f"{objective.get('mined_objective', '?')} mined examples, {trained.get('prompt_preset')} prompts)")


def write_report(work: Path, ledger: Ledger, report: Path, sizes: dict[str, Any]) -> str:
    results, settings = ledger.data["results"], ledger.data["settings"]
    table = build_table(work, results)
    curve = curve_points(results, sizes["queries"], settings["curve"])
    teacher = {task: metric(results, "teacher", task) for task in ("sts", "nli")}
    stages = ledger.data["stage_seconds"]
    total = ledger.total_seconds
    text = "\n".join([
        "# Quality at scale", "", f"Command: `{ledger.data['invocations'][0]['command']}`", "",
        f"Training data: {json.dumps(sizes)}; NLI test: the other half of SNLI dev (split by premise, seed "
        f"{settings['seed']}); teacher: {teacher_description(settings)}; heads-only rows: "
        f"{settings['heads_epochs']:g} epochs on cached frozen states; end-to-end rows and bi-encoder: "
        f"{settings['epochs']:g} epoch(s).", "",
        render_table(table), "",
        f"Points: 100 x (row - bi-encoder); gap closed: (row - bi-encoder) / (teacher - bi-encoder). Targets: "
        f">= +{POINTS_TARGET:g} points and >= {GAP_TARGET:.0%} of the gap, on STS-B and on NLI.", "",
        "## Learning curve", "", render_curve(curve, teacher, report.with_suffix(".png")), "",
        f"![learning curve]({report.with_suffix('.png').name})", "",
        "## SciFact", "", render_scifact(results, bool(settings.get("teacher_adapter"))), "",
        "Stage times (s): " + ", ".join(f"{name} {seconds:.0f}" for name, seconds in stages.items()), "",
        f"Total wall time: {total:.0f} s ({total / 60:.1f} min) over {len(ledger.data['invocations'])} "
        "invocation(s).",
    ])
    print("\n" + text, flush=True)
    report.parent.mkdir(parents=True, exist_ok=True)
    write_whole(report.with_suffix(".md"), lambda out: out.write_text(text + "\n"))
    write_json(report.with_suffix(".json"), {"settings": settings, "sizes": sizes, "table": table, "curve": curve,
                                             "results": results, "stage_seconds": stages,
                                             "invocations": ledger.data["invocations"]})
    return text
