"""Time ``D2LLMModel.similarity`` against the hand-written decomposed IEM and the concatenating MLP.

16 queries x 10,000 passages at a 7B-sized embedding (d = 4096, h = 512), all in one run:
* decomposed by hand: project both sides once, add, relu, one h x h layer, output layer;
* ``model.similarity`` (target: at most 2x the hand-written version);
* the concatenating MLP of the paper, ``W1 [y_q ; y_p]`` per pair (about ten times the cost).

    python benchmarks/bench_similarity.py [--queries 16] [--passages 10000] [--dim 4096] [--hidden 512]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from transformers import LlamaConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from configuration_d2llm import D2LLMConfig  # noqa: E402
from modeling_d2llm import IEM, D2LLMModel  # noqa: E402


def best_time(function: Callable[[], torch.Tensor], repeats: int) -> tuple[float, torch.Tensor]:
    """Fastest of ``repeats`` runs (after one warm-up) and the result."""
    result = function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def decomposed_by_hand(iem: IEM, queries: torch.Tensor, passages: torch.Tensor, task: str) -> torch.Tensor:
    d = queries.shape[1]
    a = queries @ iem.first.weight[:, :d].T + iem.first.bias
    c = passages @ iem.first.weight[:, d:].T
    hidden = F.relu(a[:, None, :] + c[None, :, :])
    branch = iem.branches[task]
    return (F.relu(hidden @ branch.weight.T + branch.bias) @ iem.output.weight.T).squeeze(-1) + iem.output.bias


def concatenating(iem: IEM, queries: torch.Tensor, passages: torch.Tensor, task: str, chunk: int) -> torch.Tensor:
    rows = []
    for start in range(0, passages.shape[0], chunk):
        block = passages[start : start + chunk]
        pairs = torch.cat([queries[:, None, :].expand(-1, block.shape[0], -1),
                           block[None, :, :].expand(queries.shape[0], -1, -1)], dim=-1)
        rows.append(iem.output(F.relu(iem.branches[task](F.relu(iem.first(pairs))))).squeeze(-1))
    return torch.cat(rows, dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=16)
    parser.add_argument("--passages", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    # A one-layer backbone of the right width: only the heads matter here.
    backbone = LlamaConfig(vocab_size=16, hidden_size=args.dim, intermediate_size=16, num_hidden_layers=1,
                           num_attention_heads=32, num_key_value_heads=1)
    model = D2LLMModel(D2LLMConfig(backbone_config=backbone.to_dict(), pma_num_heads=32,
                                   iem_hidden_size=args.hidden)).eval()
    queries = torch.randn(args.queries, args.dim)
    passages = torch.randn(args.passages, args.dim)
    task = "asymmetric"
    with torch.inference_mode():
        hand_s, hand = best_time(lambda: decomposed_by_hand(model.iem, queries, passages, task), args.repeats)
        model_s, fast = best_time(lambda: model.similarity(queries, passages, task=task), args.repeats)
        concat_s, slow = best_time(lambda: concatenating(model.iem, queries, passages, task, chunk=500), 1)
    torch.testing.assert_close(fast, hand, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(slow, hand, atol=1e-3, rtol=1e-3)
    print(json.dumps({
        "queries": args.queries, "passages": args.passages, "dim": args.dim, "hidden": args.hidden,
        "threads": torch.get_num_threads(),
        "decomposed_by_hand_s": round(hand_s, 4), "model_similarity_s": round(model_s, 4),
        "concatenating_mlp_s": round(concat_s, 4),
        "similarity_over_hand": round(model_s / hand_s, 3),
        "concatenating_over_hand": round(concat_s / hand_s, 2),
    }, indent=2))


if __name__ == "__main__":
    main()
