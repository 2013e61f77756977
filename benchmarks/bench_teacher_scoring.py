"""Teacher-scoring throughput: ``YesNoTeacher.score`` against the authors' way, on the same pairs in one run.

* ours: pairs sorted by length, dynamic left padding per batch, language-model head at the last position only
  (``logits_to_keep=1``);
* the authors' ``save_logits.py``: every sequence padded to one maximum length (``padding='max_length'``),
  logits over the whole vocabulary at every position, then the last position's yes/no columns.

Both read the same token ids, so the logits must agree (the largest difference is printed). The pairs are a
mix of short STS-B test pairs and long SciFact (claim, abstract) pairs from ``--data``; the authors' maximum
length is the longest of these sequences (they used a fixed 500, which would only widen the gap).

    python benchmarks/bench_teacher_scoring.py [--model PATH_OR_GGUF] [--sts 48] [--retrieval 16]
        [--batch-size 16] [--repeats 1] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common.embedded_models import smollm2_gguf  # noqa: E402
from preprocess.readers import read_examples  # noqa: E402
from teacher.model import YesNoTeacher  # noqa: E402


def benchmark_pairs(data: Path, sts: int, retrieval: int) -> list[tuple[str, str, str]]:
    """``(query, passage, task)``: STS-B test pairs (symmetric) and SciFact train positives (asymmetric)."""
    pairs = []
    with open(data / "en/stsb/test.jsonl", encoding="utf-8") as handle:
        for line, _ in zip(handle, range(sts)):
            row = json.loads(line)
            pairs.append((row["sentence1"], row["sentence2"], "symmetric"))
    scifact = read_examples(str(data / "en/scifact"), limit=retrieval).examples
    pairs += [(row["query"], row["positive"], "asymmetric") for row in scifact]
    return pairs


@torch.inference_mode()
def authors_way(teacher: YesNoTeacher, sequences: list[list[int]], answers: torch.Tensor, width: int,
                batch_size: int) -> torch.Tensor:
    """Input order, every row left-padded to ``width``, full-vocabulary logits at every position."""
    pad = teacher.tokenizer.pad_token_id
    results = []
    for start in range(0, len(sequences), batch_size):
        batch = sequences[start:start + batch_size]
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in batch])
        attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch])
        logits = teacher.model(input_ids=input_ids.to(teacher.device),
                               attention_mask=attention_mask.to(teacher.device)).logits
        rows = torch.arange(len(batch), device=logits.device)
        batch_answers = answers[start:start + batch_size].to(logits.device)
        results.append(logits[:, -1, :][rows[:, None], batch_answers].float().cpu())
    return torch.cat(results)


def ours(teacher: YesNoTeacher, pairs: list[tuple[str, str, str]], batch_size: int) -> torch.Tensor:
    result = torch.empty(len(pairs), 2)
    for task in ("symmetric", "asymmetric"):
        indices = [i for i, pair in enumerate(pairs) if pair[2] == task]
        if indices:
            result[indices] = teacher.score([pairs[i][0] for i in indices], [pairs[i][1] for i in indices], task,
                                            batch_size=batch_size)
    return result


def timed(function, repeats: int) -> tuple[float, torch.Tensor]:
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - started)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="causal LM (default: the embedded SmolLM2 GGUF)")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--sts", type=int, default=48)
    parser.add_argument("--retrieval", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-passage-tokens", type=int, default=384)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    pairs = benchmark_pairs(Path(args.data), args.sts, args.retrieval)
    started = time.perf_counter()
    teacher = YesNoTeacher.from_pretrained(args.model or smollm2_gguf(), max_passage_tokens=args.max_passage_tokens)
    load_seconds = time.perf_counter() - started
    sequences, answers = [], []
    for query, passage, task in pairs:
        sequences += teacher.encode_pairs([query], [passage], task)
        answers.append(teacher.answer_ids(task))
    answers = torch.tensor(answers)
    lengths = [len(ids) for ids in sequences]
    width = max(lengths)
    ours(teacher, pairs[:4], args.batch_size)  # warm-up

    ours_seconds, ours_logits = timed(lambda: ours(teacher, pairs, args.batch_size), args.repeats)
    authors_seconds, authors_logits = timed(
        lambda: authors_way(teacher, sequences, answers, width, args.batch_size), args.repeats)

    print(f"device: {teacher.device}, dtype {next(teacher.model.parameters()).dtype}, threads "
          f"{torch.get_num_threads()}, model load {load_seconds:.1f}s")
    print(f"pairs: {len(pairs)} ({args.sts} STS-B, {args.retrieval} SciFact), tokens per pair: min {min(lengths)}, "
          f"mean {sum(lengths) / len(lengths):.0f}, max {width}; batch size {args.batch_size}")
    print(f"ours    (length-sorted, dynamic padding, logits_to_keep=1): {len(pairs) / ours_seconds:8.2f} pairs/s "
          f"({ours_seconds:.1f}s)")
    print(f"authors (padded to {width}, full-vocabulary logits everywhere): "
          f"{len(pairs) / authors_seconds:8.2f} pairs/s ({authors_seconds:.1f}s)")
    print(f"speed-up: {authors_seconds / ours_seconds:.2f}x; largest logit difference "
          f"{(ours_logits - authors_logits).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
