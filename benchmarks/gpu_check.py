"""GPU check, no downloads: randomly initialised models from real configs (Qwen2-1.5B by default), one JSON out.

Measures, each part guarded (a failure is recorded, the rest still runs):
* student training step: D2LLM on Qwen2-1.5B (LoRA r 16 on every linear layer, PMA, IEM h = 512) in bf16, B queries
  + B positives + B * K hard negatives of ``--seq-len`` tokens, the distillation loss ``L_CI + L_RI + L_FI``
  (``distil.losses.distillation_losses``) against random teacher scores, AdamW; for each attention kernel (sdpa, and
  flash_attention_2 where installed): tokens/s and model FLOP utilisation. MFU counts ``4 N`` FLOPs per token (a
  frozen backbone under LoRA: forward ``2 N`` plus the activation gradients ``2 N``; no weight gradients) over
  ``--peak-tflops`` (H200 SXM dense bf16: 989);
* teacher scoring: the same config as a causal LM in bf16, forward of ``--pairs`` pairs with ``logits_to_keep=1``
  (what ``YesNoTeacher.forward`` runs): pairs/s;
* exact IEM search at ``--passages`` passages (fp16 projections on the GPU, 32 queries batched, bf16): queries/s,
  with the plain ``[Nq * Np, h] x [h, h]`` bf16 matmul floor of the same size;
* peak GPU memory of each part;
* the accelerate configs (``configs/accelerate_{ddp,fsdp,deepspeed_zero2}.yaml``, one process on the one GPU):
  one training step of a tiny student on the test fixture, a probe recording whether the trainer really ran
  FSDP / DeepSpeed, and the logged loss against a plain single-process run (accelerate runs FSDP only on GPUs:
  on CPU it silently falls back to plain data parallel, so this is where those configs get checked).

    python benchmarks/gpu_check.py --output gpu_check.json [--config qwen2-1.5b] [--steps 5]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from configuration_d2llm import D2LLMConfig  # noqa: E402
from distil.losses import LossWeights, distillation_losses  # noqa: E402
from modeling_d2llm import D2LLMModel  # noqa: E402
from retrieval.scoring import exact_top_k  # noqa: E402

CONFIGS = {  # written out from the models' published config.json files
    "qwen2-1.5b": {
        "model_type": "qwen2", "vocab_size": 151936, "hidden_size": 1536, "intermediate_size": 8960,
        "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2, "hidden_act": "silu",
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-6, "rope_theta": 1_000_000.0,
        "tie_word_embeddings": True, "use_sliding_window": False, "bos_token_id": 151643, "eos_token_id": 151643,
    },
    "smollm2-135m": {
        "model_type": "llama", "vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
        "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "hidden_act": "silu",
        "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "tie_word_embeddings": True,
    },
}


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def guarded(report: dict[str, Any], name: str, part: Callable[[], dict[str, Any]]) -> None:
    """Run one part; record its result, or its error, and its peak GPU memory (where there is a GPU)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        report[name] = part()
    except Exception as error:  # noqa: BLE001 - a GPU check records every failure and goes on
        report[name] = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-2000:]}
    if torch.cuda.is_available():
        report[name]["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    report[name]["wall_seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps({name: report[name]}, indent=1), flush=True)


def cuda_seconds(function: Callable[[], Any], repeats: int) -> float:
    """Median seconds of ``function`` after one warm-up, synchronised."""
    function()
    synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def backbone_config(name: str, attention: str) -> dict[str, Any]:
    return {**CONFIGS[name], "attn_implementation": attention}


def training_step(args: argparse.Namespace, attention: str) -> dict[str, Any]:
    from transformers import AutoConfig

    config = AutoConfig.for_model(**backbone_config(args.config, attention))
    student = D2LLMModel(D2LLMConfig(backbone_config=config.to_dict(), pma_num_heads=config.num_attention_heads,
                                     iem_hidden_size=512))
    student.backbone.config._attn_implementation = attention
    student = student.enable_lora(r=16, lora_alpha=32, lora_dropout=0.0).to(args.device, torch.bfloat16).train()
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-5)
    b, k, length = args.batch_size, args.negatives, args.seq_len
    texts = b * (2 + k)
    ids = torch.randint(0, config.vocab_size, (texts, length), device=args.device)
    mask = torch.ones_like(ids)
    teacher_hard = torch.rand(b, 1 + k, device=args.device)
    teacher_inbatch = torch.rand(b, b, device=args.device)
    teacher_cosine = torch.rand(b, 1 + k, 1 + k, device=args.device)

    def step() -> None:
        embeddings = student(input_ids=ids, attention_mask=mask).embeddings.float()
        queries, positives = embeddings[:b], embeddings[b : 2 * b]
        candidates = torch.cat([positives[:, None], embeddings[2 * b :].view(b, k, -1)], dim=1)
        inbatch = student.iem.similarity(student.iem.project_query(queries.to(torch.bfloat16)),
                                         student.iem.project_passage(positives.to(torch.bfloat16)), "asymmetric")
        hard, features = student.score(queries[:, None].to(torch.bfloat16), candidates.to(torch.bfloat16))
        losses = distillation_losses(inbatch.float(), hard.float(), features.float(), teacher_inbatch,
                                     teacher_hard, teacher_cosine, LossWeights())
        sum(losses.values()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds = cuda_seconds(step, args.steps)
    parameters = sum(p.numel() for name, p in student.named_parameters() if "embed_tokens" not in name)
    tokens = texts * length
    return {"attention": attention, "texts_per_step": texts, "seq_len": length, "step_seconds": round(seconds, 4),
            "tokens_per_s": round(tokens / seconds), "non_embedding_parameters": parameters,
            "mfu": round(4 * parameters * tokens / seconds / (args.peak_tflops * 1e12), 4)}


def teacher_scoring(args: argparse.Namespace) -> dict[str, Any]:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(**backbone_config(args.config, "sdpa"))
    teacher = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).to(args.device).eval()
    ids = torch.randint(0, config.vocab_size, (args.pairs, args.teacher_len), device=args.device)
    with torch.inference_mode():
        seconds = cuda_seconds(lambda: teacher(input_ids=ids, attention_mask=torch.ones_like(ids),
                                               logits_to_keep=1, use_cache=False), args.steps)
    return {"pairs": args.pairs, "pair_tokens": args.teacher_len, "pairs_per_s": round(args.pairs / seconds, 1)}


def exact_search(args: argparse.Namespace) -> dict[str, Any]:
    from transformers import AutoConfig

    config = AutoConfig.for_model(**backbone_config("smollm2-135m", "sdpa"))
    model = D2LLMModel(D2LLMConfig(backbone_config=config.to_dict(), pma_num_heads=9, iem_hidden_size=512))
    model = model.to(args.device).eval()
    hidden, queries = 512, 32
    projections = torch.randn(args.passages, hidden, device=args.device, dtype=torch.float16)
    query_projections = torch.randn(queries, hidden, device=args.device)
    with torch.inference_mode():
        seconds = cuda_seconds(lambda: exact_top_k(model.iem, "asymmetric", query_projections, projections, 10,
                                                   precision="auto", memory_mb=args.memory_mb), 3)
        rows = min(16384, args.passages)
        block = torch.randn(queries * rows, hidden, device=args.device, dtype=torch.bfloat16)
        weight = torch.randn(hidden, hidden, device=args.device, dtype=torch.bfloat16)
        floor = cuda_seconds(lambda: [block @ weight for _ in range(args.passages // rows)], 3)
        floor *= args.passages / (rows * (args.passages // rows))
    return {"passages": args.passages, "queries": queries, "queries_per_s": round(queries / seconds, 2),
            "bf16_floor_seconds": round(floor, 4), "over_floor": round(seconds / floor, 3)}


PROBE = """
import json, os, sys
sys.path.insert(0, {repo!r})
import train, trainer_d2llm

original = trainer_d2llm.D2LLMTrainer.training_step

def probed(self, model, inputs, *args, **kwargs):
    from torch.distributed.tensor import DTensor
    with open({record!r}, "w") as handle:
        json.dump({{"fsdp": bool(self.is_fsdp_enabled), "deepspeed": bool(self.is_deepspeed_enabled),
                    "dtensor_parameters": sum(isinstance(p, DTensor) for p in model.parameters())}}, handle)
    return original(self, model, inputs, *args, **kwargs)

trainer_d2llm.D2LLMTrainer.training_step = probed
train.main(sys.argv[1:])
"""


def accelerate_configs(names: list[str]) -> dict[str, Any]:
    """One step under each accelerate config (one process) against a plain run; losses from trainer_state.json."""
    sys.path.insert(0, str(ROOT / "tests"))
    from scored_fixture import save_tiny_backbone, scored_dataset
    from test_train_distributed import _config, _logged

    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    backbone = save_tiny_backbone(work / "backbone")
    scored_dataset(num_batches=1, batch_size=8, num_negatives=3).save_to_disk(str(work / "scored"))
    python = sys.executable
    results: dict[str, Any] = {}
    for name in ["plain", *names]:
        config = _config(work / name, backbone, str(work / "scored"))
        probe = work / f"{name}-probe.py"
        probe.write_text(PROBE.format(repo=str(ROOT), record=str(work / f"{name}-probe.json")))
        launcher = [python, str(probe)] if name == "plain" else [
            str(Path(python).with_name("accelerate")), "launch", "--config_file",
            str(ROOT / "configs" / f"accelerate_{name}.yaml"), "--num_processes", "1", str(probe)]
        environment = {**os.environ, "PYTHONPATH": str(ROOT)}
        if name != "plain":
            values = Path(config).read_text().replace("use_cpu: true", "use_cpu: false")
            Path(config).write_text(values)
        done = subprocess.run([*launcher, config], cwd=ROOT, env=environment, capture_output=True, text=True,
                              timeout=300)
        row: dict[str, Any] = {"returncode": done.returncode}
        if done.returncode == 0:
            row.update(json.loads((work / f"{name}-probe.json").read_text()))
            row["loss"] = _logged(work / name / "out" / "checkpoint-1")["total"]
        else:
            row["stderr_tail"] = done.stderr[-1500:]
        results[name] = row
    plain = results["plain"].get("loss")
    for name in names:
        if plain is not None and "loss" in results[name]:
            results[name]["relative_loss_difference"] = abs(results[name]["loss"] - plain) / abs(plain)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--config", default="qwen2-1.5b", choices=list(CONFIGS))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--negatives", type=int, default=7)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=128)
    parser.add_argument("--teacher-len", type=int, default=384)
    parser.add_argument("--passages", type=int, default=1_000_000)
    parser.add_argument("--memory-mb", type=float, default=4096)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--accelerate-configs", nargs="*", default=["ddp", "fsdp", "deepspeed_zero2"])
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of the script itself (tiny sizes)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device")
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else args.device
    report: dict[str, Any] = {"date": datetime.date.today().isoformat(), "device": device_name,
                              "torch": torch.__version__, "config": args.config, "arguments": vars(args) | {
                                  "output": str(args.output)}}
    attentions = ["sdpa"]
    try:
        import flash_attn  # noqa: F401

        attentions.append("flash_attention_2")
    except ImportError:
        report["flash_attention_2"] = "not installed"
    for attention in attentions:
        guarded(report, f"student_step_{attention}", lambda: training_step(args, attention))
    guarded(report, "teacher_scoring", lambda: teacher_scoring(args))
    guarded(report, "exact_search", lambda: exact_search(args))
    guarded(report, "accelerate_configs", lambda: accelerate_configs(args.accelerate_configs))
    partial = args.output.with_name(f"{args.output.name}.partial")
    partial.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, args.output)  # whole or not at all
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
