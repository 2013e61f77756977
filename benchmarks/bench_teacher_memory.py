"""Where teacher adaptation's memory goes: peak resident memory and seconds per step of LoRA adaptation on real
STS-B pairs, with and without activation checkpointing, each in its own process, measured in the same run.

    python benchmarks/bench_teacher_memory.py --teacher /work/runs/smollm2 --pairs ../shared/data/en/stsb/train.jsonl
        [--steps 6] [--batch-size 16]

Prints one JSON line per variant (peak GB, s/step, the widest batch) and the ratios of the checkpointed run to the
plain one. The teacher folder is a causal LM (``teacher.export_backbone`` unpacks the embedded GGUF into one).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure(teacher_path: str, pairs_path: str, steps: int, batch_size: int, checkpointing: bool) -> dict:
    """One adaptation of ``steps`` steps in this process: peak memory (GB), seconds per step, widest batch."""
    from preprocess.readers import read_pairs
    from teacher.adapt import AdaptConfig, adapt, add_lora
    from teacher.adapt_data import pair_rows
    from teacher.model import YesNoTeacher

    pairs, _ = read_pairs(pairs_path, limit=steps * batch_size, seed=0)
    teacher = YesNoTeacher.from_pretrained(teacher_path, max_query_tokens=64, max_passage_tokens=64,
                                           dtype="float32", prompt_preset="short", device="cpu")
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    config = AdaptConfig(batch_size=batch_size, max_steps=steps, activation_checkpointing=checkpointing)
    add_lora(teacher, config)
    rows = pair_rows(pairs)
    widest = max(len(ids) for ids in teacher.encode_pairs(pairs["query"], pairs["passage"], "symmetric"))
    start = time.perf_counter()
    adapt(teacher, rows, config)
    return {"activation_checkpointing": checkpointing, "steps": steps, "batch_size": batch_size,
            "widest_prompt_tokens": widest, "loaded_gb": round(loaded, 2),
            "peak_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
            "seconds_per_step": round((time.perf_counter() - start) / steps, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--pairs", required=True)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--variant", choices=("plain", "checkpointed"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args.teacher, args.pairs, args.steps, args.batch_size,
                                 args.variant == "checkpointed")))
        return
    results = {}
    for variant in ("plain", "checkpointed"):
        output = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--variant", variant],
                                capture_output=True, text=True, check=True).stdout
        results[variant] = json.loads(output.strip().splitlines()[-1])
        print(json.dumps(results[variant]), flush=True)
    plain, checkpointed = results["plain"], results["checkpointed"]
    print(f"checkpointed / plain: peak memory {checkpointed['peak_gb'] / plain['peak_gb']:.2f}x, "
          f"time per step {checkpointed['seconds_per_step'] / plain['seconds_per_step']:.2f}x")


if __name__ == "__main__":
    main()
