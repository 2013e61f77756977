"""Untrained students: how the pooling starts, before any distillation.

Fresh D2LLM students on the embedded SmolLM2 (distance-initialised IEM, no training), all in one run, on the
quality benchmark's seeded STS-B and SciFact slices (``bench_quality.evaluation_jobs``):
* mean pooling (the baseline of the ratios);
* PMA, ``pma_init normal`` (small random weights: the paper's PMA as the Set Transformer starts it);
* PMA, ``pma_init mean`` (starts as the layer-normed masked mean).

    OMP_NUM_THREADS=2 python benchmarks/bench_fresh_pooling.py [--backbone FOLDER] [--tasks sts scifact]
        [--output docs/results/bench_fresh_pooling.json]

``--backbone``: a causal-LM folder (default: the embedded SmolLM2 GGUF). Prints and writes the metrics and each
variant's ratio to mean pooling.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import bench_quality  # noqa: E402
from evaluation import tasks  # noqa: E402
from evaluation.scorers import D2LLMScorer  # noqa: E402
from modeling_d2llm import D2LLMModel  # noqa: E402

# variant -> D2LLMConfig overrides; the first is the baseline of the ratios
VARIANTS: dict[str, dict[str, str]] = {
    "mean pooling": {"pooling": "mean"},
    "PMA, pma_init normal": {"pooling": "pma", "pma_init": "normal"},
    "PMA, pma_init mean": {"pooling": "pma", "pma_init": "mean"},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", help="causal-LM folder or .gguf (default: the embedded SmolLM2)")
    parser.add_argument("--data", default="../shared/data", help="the shared data folder (relative: to the repo)")
    parser.add_argument("--tasks", nargs="+", default=["sts", "scifact"], choices=tuple(bench_quality.TASKS))
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens per text (as in bench_quality)")
    parser.add_argument("--output", default="docs/results/bench_fresh_pooling.json")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    from common.embedded_models import smollm2_gguf

    backbone = args.backbone or smollm2_gguf()
    # the quality benchmark's evaluation slices, at its default sizes and seed
    jobs = bench_quality.evaluation_jobs(bench_quality.parse_args(["--data", args.data]))
    metrics: dict[str, dict[str, float]] = {}
    for variant, overrides in VARIANTS.items():
        torch.manual_seed(0)
        model = D2LLMModel.from_backbone(backbone, pma_num_heads=8, iem_hidden_size=512,
                                         max_seq_length=args.max_tokens, **overrides)
        scorer = D2LLMScorer(model)
        metrics[variant] = {}
        for task in args.tasks:
            key = bench_quality.TASKS[task][1]
            metrics[variant][task] = tasks.run(scorer, [jobs[task]])[0][key]
            print(f"[{variant} / {task}] {key} {metrics[variant][task]:.4f}", flush=True)
        del model, scorer
    baseline = metrics[next(iter(VARIANTS))]
    report = {
        "backbone": str(backbone), "tasks": {task: jobs[task][1].source for task in args.tasks},
        "metrics": metrics,
        "ratio_to_mean_pooling": {variant: {task: round(values[task] / baseline[task], 3) for task in args.tasks}
                                  for variant, values in metrics.items()},
    }
    bench_quality.write_json(REPO / args.output, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
