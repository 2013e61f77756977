"""Time of one optimizer step of D2LLMTrainer against a plain bi-encoder step, in one run, on one machine.

Both students use the embedded SmolLM2-135M-Instruct backbone with the same LoRA (r 16 on every linear layer),
the same fixed batch of B queries, B positives and B * K hard negatives (one padded forward of all texts) and
AdamW. They differ in what D2LLM adds to a bi-encoder:
* D2LLM: PMA pooling, IEM scores of the B x B in-batch and B x (1+K) hard pairs, ``L_CI + L_RI + L_FI``
  (``D2LLMTrainer.compute_loss``), optimizer from ``D2LLMTrainer.create_optimizer``;
* bi-encoder (``baselines.bi_encoder.BiEncoder``, mean pooling): cosine and InfoNCE over in-batch positives and the
  query's own hard negatives (``baselines.bi_encoder_losses.info_nce_loss``).
Steps alternate (D2LLM, bi-encoder, ...) after one warm-up step each, so load on a shared machine hits both alike;
reported: median seconds per step and their ratio (target: at most 1.15).

Texts: MS MARCO queries with a judged passage as positive and other judged passages as negatives from
``--data``/en/msmarco-mini (the synthetic fixture of tests/scored_fixture.py when that folder is absent);
teacher logits are random (the cost does not depend on them).

    python benchmarks/bench_train_step.py [--batch-size 4] [--negatives 3] [--steps 5] [--threads N]
        [--max-seq-length 64] [--activation-checkpointing] [--output train_step.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from datasets import Dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from baselines.bi_encoder import BiEncoder  # noqa: E402
from baselines.bi_encoder_losses import info_nce_loss  # noqa: E402
from common.embedded_models import smollm2_gguf  # noqa: E402
from common.stages import write_whole  # noqa: E402
from common.schema import SCORED_BATCH_FEATURES  # noqa: E402
from modeling_d2llm import D2LLMModel  # noqa: E402
from trainer_d2llm import D2LLMTrainer, D2LLMTrainingArguments  # noqa: E402

LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": "all-linear"}


def msmarco_batch(data: Path, size: int, negatives: int, seed: int) -> dict:
    """One stored batch (``SCORED_BATCH_FEATURES`` row) of MS MARCO texts with random teacher logits."""
    from evaluation.loaders import load_retrieval

    retrieval = load_retrieval(str(data / "en" / "msmarco-mini"))
    queries, positives, hard = [], [], []
    for query_id, judged in retrieval.qrels.items():
        ranked = sorted(judged, key=judged.get, reverse=True)
        if len(ranked) <= negatives:
            continue
        queries.append(retrieval.queries[query_id])
        positives.append(retrieval.corpus[ranked[0]])
        hard.append([retrieval.corpus[doc] for doc in ranked[-negatives:]])
        if len(queries) == size:
            break
    generator = torch.Generator().manual_seed(seed)
    return {
        "batch_id": 0, "task": "asymmetric", "language": "en", "queries": queries, "positives": positives,
        "negatives": hard,
        "teacher_hard_logits": torch.randn(size, 1 + negatives, 2, generator=generator).tolist(),
        "teacher_inbatch_logits": torch.randn(size, size, 2, generator=generator).tolist(),
        "teacher_feature_cosine": torch.rand(size, 1 + negatives, 1 + negatives, generator=generator).tolist(),
    }


def stored_batch(data: Path, size: int, negatives: int, seed: int) -> tuple[dict, str]:
    if (data / "en" / "msmarco-mini").is_dir():
        return msmarco_batch(data, size, negatives, seed), "msmarco-mini"
    from scored_fixture import scored_rows

    return scored_rows(num_batches=1, batch_size=size, num_negatives=negatives, seed=seed)[0], "synthetic fixture"


def d2llm_step(batch: dict, output_dir: str, max_seq_length: int, checkpointing: bool) -> Callable[[], None]:
    """One D2LLMTrainer optimizer step on ``batch``: ``compute_loss``, backward, AdamW step."""
    model = D2LLMModel.from_backbone(smollm2_gguf(), max_seq_length=max_seq_length).enable_lora(**LORA)
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    args = D2LLMTrainingArguments(output_dir=output_dir, report_to=[], use_cpu=not torch.cuda.is_available(),
                                  learning_rate=1e-4, head_learning_rate=1e-3)
    trainer = D2LLMTrainer(model, args, train_dataset=Dataset.from_list([batch], features=SCORED_BATCH_FEATURES))
    optimizer = trainer.create_optimizer()
    inputs = {key: value.to(args.device) for key, value in trainer.data_collator([batch]).items()}
    model.to(args.device).train()

    def step() -> None:
        trainer.compute_loss(model, inputs).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def bi_encoder_step(batch: dict, device: torch.device, max_seq_length: int, checkpointing: bool
                    ) -> Callable[[], None]:
    """One plain bi-encoder optimizer step on the same texts: mean pooling, cosine InfoNCE, AdamW."""
    encoder = BiEncoder.from_pretrained(smollm2_gguf(), max_seq_length=max_seq_length).enable_lora(**LORA)
    if checkpointing:
        encoder.backbone.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    encoder.to(device).train()
    optimizer = torch.optim.AdamW([p for p in encoder.parameters() if p.requires_grad], lr=1e-4)
    size, negatives = len(batch["queries"]), len(batch["negatives"][0])
    tokens = encoder.tokenize(batch["queries"] + batch["positives"] + [n for row in batch["negatives"] for n in row])
    tokens = {key: value.to(device) for key, value in tokens.items()}

    def step() -> None:
        embeddings = encoder(tokens["input_ids"], tokens["attention_mask"])
        loss = info_nce_loss(embeddings[:size], embeddings[size : 2 * size],
                             embeddings[2 * size :].view(size, negatives, -1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def timed(step: Callable[[], None]) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--batch-size", type=int, default=4, help="queries per stored batch (B)")
    parser.add_argument("--negatives", type=int, default=3, help="hard negatives per query (K)")
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5, help="timed steps of each, after one warm-up step")
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    batch, source = stored_batch(args.data, args.batch_size, args.negatives, args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as output_dir:
        steps = {"d2llm": d2llm_step(batch, output_dir, args.max_seq_length, args.activation_checkpointing),
                 "bi_encoder": bi_encoder_step(batch, device, args.max_seq_length, args.activation_checkpointing)}
        times: dict[str, list[float]] = {name: [] for name in steps}
        for name, step in steps.items():
            timed(step)  # warm-up
        for _ in range(args.steps):
            for name, step in steps.items():
                times[name].append(timed(step))
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "device": str(device), "threads": torch.get_num_threads(), "texts": source, "batch_size": args.batch_size,
        "negatives": args.negatives, "max_seq_length": args.max_seq_length,
        "activation_checkpointing": args.activation_checkpointing, "steps": args.steps,
        "d2llm_step_seconds": medians["d2llm"], "bi_encoder_step_seconds": medians["bi_encoder"],
        "ratio": medians["d2llm"] / medians["bi_encoder"], "target_ratio": 1.15,
        "all_seconds": times,
    }
    print(json.dumps(result, indent=2))
    if args.output:
        write_whole(args.output, lambda out: out.write_text(json.dumps(result, indent=2)))


if __name__ == "__main__":
    main()
