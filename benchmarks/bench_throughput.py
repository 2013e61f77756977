"""Throughput of the two costly stages, teacher scoring and student training, as ratios measured in one run.

Data: the STS-B / SICK / SNLI training mix (STS-B train pairs with score >= 4, SICK train and SNLI dev entailment
pairs), K = 3 BM25 negatives (``preprocess.mining``), fixed batches of B = 8. Teacher and student backbone: the
embedded SmolLM2-135M-Instruct (``--adapter``: a LoRA teacher adapter to score with).

Teacher rows, on the same ``--batches`` fixed batches (teacher-scored training queries per minute):
  (a) today's default: float32, in-batch pairs scored, the paper's prompt;
  (b) the dtype the hardware calls for (``--dtype auto``; on a CPU without fast bf16 this is (a));
  (c) (b) plus ``--inbatch-scores none``;
  (d) (c) plus the short prompt preset.
  Agreement: Spearman of ``l_yes - l_no`` between (b)'s dtype and float32 on ``--agreement-pairs`` STS-B test pairs.
Student rows (training queries per minute, median step time after the first step):
  (e) an end-to-end LoRA step (``configs/main_job.yaml``), float32;  (f) the same under bf16 autocast;
  (g) a head warm-up epoch on cached token states, after the caching, timed on its own.
Warm-up at scale: ``--warmup-queries`` teacher-scored queries (scored as (d)), cached and warmed up for one epoch in
a child process, whose peak memory is reported (targets: caching <= 15 min, epoch <= 5 min, peak <= 8 GB).
Short prompt quality (``--adapt-pairs N``, 0 to skip): two teachers LoRA-adapted on the same N STS-B train pairs,
one epoch, one with each prompt; STS-B test Spearman of each.

Every stage's result is kept in ``WORK/results/NAME.json`` with the settings it was measured with in
``NAME.json.settings.json`` (``stages.build_once``): a killed run resumes with the stages not yet measured, and a
rerun measures again, saying so in one line, every result whose settings (or whose inputs' settings) changed.

    python benchmarks/bench_throughput.py [--work outputs/bench_throughput] [--report docs/throughput.md]
        [--batches 32] [--adapter LORA] [--adapt-pairs 1200] [--warmup-queries 2000] [--threads 2] [--lock FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from datasets import concatenate_datasets, load_from_disk
from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train  # noqa: E402
from common.fingerprints import saved_digest  # noqa: E402
from common.hardware import cpu_capability, resolve_dtype  # noqa: E402
from common.stages import build_once, is_built_with, write_whole  # noqa: E402
from distil.head_warmup import cached_collator  # noqa: E402
from preprocess.mining import MiningConfig, mine  # noqa: E402
from preprocess.readers import read_examples, read_pairs  # noqa: E402
from teacher.model import YesNoTeacher  # noqa: E402
from teacher.score import ScoringConfig, score_dataset  # noqa: E402
from trainer_d2llm import D2LLMTrainer  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "en"
B, K = 8, 3


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._start)


LOCK: list[str] = []  # --lock FILE: held (flock) while a stage is measured


def measured(work: Path, name: str, measure: Callable[[], dict], settings: dict[str, Any]) -> dict:
    """``measure()``'s result, kept in ``WORK/results/NAME.json`` with the ``settings`` it was measured with: a
    result of the same settings is never measured again, one of other settings is measured again (said in one
    line)."""
    import fcntl

    path = work / "results" / f"{name}.json"
    if path.exists() and not is_built_with(path, settings):
        print(f"[{name}] measured with other settings: measuring again", flush=True)

    def build(partial: Path) -> None:
        print(f"[{name}] measuring", flush=True)
        with open(LOCK[0] if LOCK else os.devnull, "a") as lock:
            if LOCK:
                fcntl.flock(lock, fcntl.LOCK_EX)
            result = measure()
        partial.write_text(json.dumps(result, indent=2))
        print(f"[{name}] {result}", flush=True)

    build_once(path, build, settings)
    return json.loads(path.read_text())


def mined_mix(work: Path) -> Path:
    """BM25-mined training mix, saved once."""
    output = work / "mined"
    sources = [(DATA / "stsb" / "train.jsonl", {"layout": "graded", "threshold": 4.0}),
               (DATA / "sick" / "train.jsonl", {"layout": "labelled", "positive_labels": ["entailment"]}),
               (DATA / "snli" / "dev.jsonl", {"layout": "labelled", "positive_labels": ["entailment"]})]

    def build(partial: Path) -> None:
        parts = []
        for path, options in sources:
            read = read_examples(str(path), task="symmetric", language="en", **options)
            parts.append(mine(read.examples, read.corpus, MiningConfig(k=K, methods=("bm25",)))[0])
        concatenate_datasets(parts).shuffle(seed=0).save_to_disk(str(partial))

    build_once(output, build, {"k": K, "sources": {str(path): saved_digest(path) for path, _ in sources}})
    return output


def teacher_row(work: Path, name: str, rows, teacher: YesNoTeacher, inbatch: str) -> dict:
    """Score ``rows`` in fixed batches of B; queries per minute of the scoring itself (model already loaded). An
    older scoring of ``name`` (finished or not) is removed first: it would be reused, and its time not measured."""
    output = work / f"scored_{name}"
    for stale in (output, output.with_name(f"{output.name}.work")):
        shutil.rmtree(stale, ignore_errors=True)
    start = time.perf_counter()
    scored = score_dataset(rows, teacher, output, ScoringConfig(batch_size=B, drop_last=True, inbatch_scores=inbatch))
    seconds = time.perf_counter() - start
    queries = sum(len(queries) for queries in scored["queries"])
    return {"batches": len(scored), "queries": queries, "seconds": seconds, "queries_per_min": 60 * queries / seconds,
            "dtype": teacher.compute.dtype, "scored": str(output)}


def load_teacher(work: Path, adapter: str | None, dtype: str, preset: str | None = None) -> YesNoTeacher:
    return YesNoTeacher.from_pretrained(str(work / "smollm2"), adapter=adapter, dtype=dtype, prompt_preset=preset,
                                        max_query_tokens=128, max_passage_tokens=128)


def agreement(work: Path, adapter: str | None, dtype: str, pairs: int) -> dict:
    """Spearman of the yes-no margins in ``dtype`` against float32, on the first ``pairs`` STS-B test pairs."""
    from scipy.stats import spearmanr

    test = read_pairs(str(DATA / "stsb" / "test.jsonl"), layout="graded")[0].select(range(pairs))
    margins = {}
    for name in ("float32", dtype):
        teacher = load_teacher(work, adapter, name)
        logits = teacher.score(test["query"], test["passage"], "symmetric")
        margins[name] = (logits[:, 0] - logits[:, 1]).tolist()
    reference = torch.tensor(margins["float32"])
    return {"pairs": pairs, "dtype": dtype, "adapter": adapter,
            "spearman": float(spearmanr(margins["float32"], margins[dtype])[0]),
            "margin_std": float(reference.std()),
            "max_abs_error": float((torch.tensor(margins[dtype]) - reference).abs().max())}


def student_steps(work: Path, scored: str, steps: int, bf16: bool) -> dict:
    """Median seconds of an end-to-end LoRA step of ``configs/main_job.yaml`` (first step left out)."""
    model_args, data_args, args = train.parse_arguments([
        str(ROOT / "configs" / "main_job.yaml"), "--model_name_or_path", str(work / "smollm2"), "--train_dataset",
        scored, "--output_dir", str(work / "student_steps"), "--max_steps", str(steps + 1), "--use_cpu", "true",
        "--bf16", str(bf16).lower(), "--disable_tqdm", "true"])
    timer = StepTimer()
    trainer = D2LLMTrainer(model=train.build_model(model_args), args=args, train_dataset=load_from_disk(scored),
                           callbacks=[timer])
    trainer.train()
    median = statistics.median(timer.seconds[1:])
    return {"steps": len(timer.seconds) - 1, "median_step_s": median, "queries_per_min": 60 * B / median,
            "bf16": bf16}


def warmup_epoch(work: Path, scored: str, cache_dir: Path) -> dict:
    """Caching time (of a fresh cache: an older ``cache_dir`` is removed), then one warm-up epoch over every stored
    batch on the cached states; peak memory."""
    shutil.rmtree(cache_dir, ignore_errors=True)
    model_args, _, args = train.parse_arguments([
        str(ROOT / "configs" / "main_job.yaml"), "--model_name_or_path", str(work / "smollm2"), "--train_dataset",
        scored, "--output_dir", str(cache_dir.parent / "warmup_out"), "--num_train_epochs", "1", "--use_cpu", "true",
        "--disable_tqdm", "true", "--gamma", "0"])
    model = train.build_model(model_args)
    for param in model.backbone.parameters():
        param.requires_grad_(False)
    dataset = load_from_disk(scored)
    start = time.perf_counter()
    collator = cached_collator(model, dataset, cache_dir)
    caching = time.perf_counter() - start
    timer = StepTimer()
    trainer = D2LLMTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator, callbacks=[timer])
    start = time.perf_counter()
    trainer.train()
    epoch = time.perf_counter() - start
    queries = B * len(dataset)
    return {"queries": queries, "texts": len(collator.cache), "caching_s": caching, "epoch_s": epoch,
            "queries_per_min": 60 * queries / epoch, "cache_dtype": resolve_dtype("auto").dtype,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def adapted_quality(work: Path, preset: str, pairs: int, lr: float) -> dict:
    """LoRA-adapt the teacher with ``preset`` on ``pairs`` STS-B train pairs (one epoch, batch 16, learning rate
    ``lr``), then Spearman on all STS-B test pairs."""
    adapter = work / f"adapter_{preset}_{pairs}_{lr:g}"
    build_once(adapter, lambda out: subprocess.run([
        sys.executable, "-m", "teacher.adapt", "--teacher", str(work / "smollm2"), "--output", str(out),
        "--train-pairs", str(DATA / "stsb" / "train.jsonl"), "--limit", str(pairs), "--lr", str(lr),
        "--prompt-preset", preset, "--max-query-tokens", "128", "--max-passage-tokens", "128"], cwd=ROOT, check=True),
        {"backbone": saved_digest(work / "smollm2"), "pairs": saved_digest(DATA / "stsb" / "train.jsonl")})
    report = json.loads((adapter / "adaptation_report.json").read_text())
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "teacher.evaluate", "--teacher", str(work / "smollm2"),
                             "--adapter", str(adapter), "--dev-pairs", str(DATA / "stsb" / "test.jsonl"),
                             "--batch-size", "32"], cwd=ROOT, check=True, capture_output=True, text=True)
    metrics = json.loads(result.stdout)
    return {"preset": preset, "pairs": pairs, "lr": lr, "steps": len(report["losses"]), "adapter": str(adapter),
            "adapt_s": report["train_seconds"], "dtype": report["compute"]["dtype"],
            "stsb_test_spearman": metrics["pairs"]["spearman"], "eval_s": time.perf_counter() - start}


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    a, b, c, d = (results[f"teacher_{row}"] for row in "abcd")
    e, f, g, big = results["student_e"], results["student_f"], results["warmup_g"], results["warmup_scale"]
    rows = [("(a) float32, in-batch pairs, paper prompt (today's default)", a),
            (f"(b) {b['dtype']} (the hardware's dtype)", b), ("(c) (b) + `--inbatch-scores none`", c),
            ("(d) (c) + `--prompt-preset short`", d)]
    command = " ".join(["python benchmarks/bench_throughput.py", *sys.argv[1:]])
    lines = ["# Throughput: teacher scoring and student training", "",
             f"Measured in one run of `{command}` ({time.strftime('%Y-%m-%d')}); every ratio is against a row of the "
             "same run. Rows are explained in the benchmark's docstring.", "",
             f"CPU capability: {results['machine']['cpu_capability']}, {args.threads} threads; "
             f"`--dtype auto` chose {b['dtype']}.", "",
             "| teacher scoring | batches | seconds | training queries / min | ratio to (a) |",
             "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {label} | {row['batches']} | {row['seconds']:.0f} | {row['queries_per_min']:.1f} | "
              f"{row['queries_per_min'] / a['queries_per_min']:.2f} |" for label, row in rows]
    lines += ["", f"Agreement of {b['dtype']} with float32 on the first STS-B test pairs (Spearman of the margins "
              "l_yes - l_no; the spread of the float32 margins and the largest difference):", "",
              "| teacher | pairs | Spearman | std of margins | max abs difference |",
              "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {row['adapter'] or 'not adapted'} | {row['pairs']} | {row['spearman']:.4f} | "
              f"{row['margin_std']:.3f} | {row['max_abs_error']:.3f} |"
              for key, row in results.items() if key.startswith("agreement")]
    lines += ["",
              "| student training | seconds | training queries / min | ratio to (e) |", "| --- | ---: | ---: | ---: |"]
    for label, row, seconds in [("(e) end-to-end LoRA step, float32", e, f"{e['median_step_s']:.2f} / step"),
                                ("(f) end-to-end LoRA step, bf16 autocast", f, f"{f['median_step_s']:.2f} / step"),
                                (f"(g) head warm-up epoch on cached states ({g['queries']} queries)", g,
                                 f"{g['epoch_s']:.1f} / epoch")]:
        lines.append(f"| {label} | {seconds} | {row['queries_per_min']:.0f} | "
                     f"{row['queries_per_min'] / e['queries_per_min']:.1f} |")
    lines += ["", f"Caching the token states of (g)'s {g['texts']} texts: {g['caching_s']:.0f} s. At scale: "
              f"{big['queries']} teacher-scored queries ({big['texts']} distinct texts) cached in "
              f"{big['caching_s']:.0f} s "
              f"(target <= 900), one warm-up epoch in {big['epoch_s']:.0f} s (target <= 300), peak memory "
              f"{big['peak_rss_gb']:.2f} GB (target <= 8)."]
    if "quality_spec" in results:
        spec, short = results["quality_spec"], results["quality_short"]
        lines += ["", f"Teachers adapted on the same {spec['pairs']} STS-B train pairs (one epoch, batch 16, learning "
                  f"rate {spec['lr']:g}, {spec['dtype']}), evaluated on all STS-B test pairs:", "",
                  "| adapted teacher prompt | adaptation steps | adaptation s | STS-B test Spearman | eval s |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| {row['preset']} | {row['steps']} | {row['adapt_s']:.0f} | {row['stsb_test_spearman']:.4f} | "
                  f"{row['eval_s']:.0f} |" for row in (spec, short)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=str(ROOT / "outputs" / "bench_throughput"))
    parser.add_argument("--report", help="write the markdown table here too")
    parser.add_argument("--batches", type=int, default=32)
    parser.add_argument("--adapter", help="LoRA teacher adapter (teacher.adapt) for the teacher rows")
    parser.add_argument("--agreement-pairs", type=int, default=64)
    parser.add_argument("--student-steps", type=int, default=4)
    parser.add_argument("--warmup-queries", type=int, default=2000)
    parser.add_argument("--adapt-pairs", type=int, default=1200, help="0: skip the short-prompt quality rows")
    parser.add_argument("--adapt-lr", type=float, default=5e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lock", help="hold an exclusive flock on this file while each stage is measured (to share "
                                       "a machine with other benchmark jobs without overlapping them)")
    parser.add_argument("--warmup-child", help=argparse.SUPPRESS)  # SCORED: run the at-scale warm-up and print JSON
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    LOCK.extend([args.lock] if args.lock else [])
    work = Path(args.work)
    if args.warmup_child:
        print(json.dumps(warmup_epoch(work, args.warmup_child, work / "cache_scale")))
        return
    work.mkdir(parents=True, exist_ok=True)
    from common.embedded_models import smollm2_gguf
    from teacher.export_backbone import export_backbone

    build_once(work / "smollm2", lambda out: export_backbone(smollm2_gguf(), out),
               {"gguf": saved_digest(smollm2_gguf())})
    mined = load_from_disk(str(mined_mix(work)))
    sample = mined.select(range(B * (args.batches + 2)))
    results: dict[str, Any] = {"machine": measured(work, "machine", lambda: {"cpu_capability": cpu_capability()}, {})}
    hardware = resolve_dtype("auto").dtype
    settings: dict[str, dict[str, Any]] = {}  # each result's settings, part of the settings of the results using it

    def result(name: str, measure: Callable[[], dict], **options: Any) -> dict:
        settings[name] = {**options, "threads": args.threads}
        return measured(work, name, measure, settings[name])

    def scoring(name: str, dtype: str, inbatch: str, preset: str | None = None, rows=sample) -> dict:
        return result(name, lambda: teacher_row(work, name, rows, load_teacher(work, args.adapter, dtype, preset),
                                                inbatch),
                      rows=len(rows), adapter=args.adapter, dtype=dtype, inbatch=inbatch, preset=preset)

    results["teacher_a"] = scoring("teacher_a", "float32", "all")
    results["teacher_b"] = results["teacher_a"] if hardware == "float32" else scoring("teacher_b", hardware, "all")
    results["teacher_c"] = scoring("teacher_c", hardware, "none")
    results["teacher_d"] = scoring("teacher_d", hardware, "none", "short")
    results["agreement"] = result("agreement", lambda: agreement(work, args.adapter, hardware, args.agreement_pairs),
                                  adapter=args.adapter, dtype=hardware, pairs=args.agreement_pairs)
    scored = results["teacher_a"]["scored"]
    for name, bf16 in (("student_e", False), ("student_f", True)):
        results[name] = result(name, lambda bf16=bf16: student_steps(work, scored, args.student_steps, bf16),
                               scored=settings["teacher_a"], steps=args.student_steps, bf16=bf16)
    results["warmup_g"] = result("warmup_g", lambda: warmup_epoch(work, scored, work / "cache_g"),
                                 scored=settings["teacher_a"])
    scale = mined.select(range(min(len(mined), B * (args.warmup_queries // B + 8))))
    big = scoring("scale_scoring", hardware, "none", "short", rows=scale)
    results["warmup_scale"] = result("warmup_scale", lambda: json.loads(subprocess.run(
        [sys.executable, __file__, "--work", str(work), "--threads", str(args.threads), "--warmup-child",
         big["scored"]], check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]),
        scored=settings["scale_scoring"])
    if args.adapt_pairs:
        for preset in ("spec", "short"):
            results[f"quality_{preset}"] = result(
                f"quality_{preset}", lambda preset=preset: adapted_quality(work, preset, args.adapt_pairs,
                                                                           args.adapt_lr),
                preset=preset, pairs=args.adapt_pairs, lr=args.adapt_lr)
        adapted = results["quality_spec"]["adapter"]
        results["agreement_adapted"] = result("agreement_adapted", lambda: agreement(
            work, adapted, hardware, args.agreement_pairs), adapter=settings["quality_spec"], dtype=hardware,
            pairs=args.agreement_pairs)
    table = report(results, args)
    print(table)
    if args.report:
        write_whole(Path(args.report), lambda out: out.write_text(table))


if __name__ == "__main__":
    main()
