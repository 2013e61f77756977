"""SciFact NDCG@10 of the bi-encoder baseline and of the D2LLM student, with and without BeLLM's bidirectional
layer and LLM-QL pre-training.

    OMP_NUM_THREADS=1 python benchmarks/bench_bellm_llmql.py [--work /tmp/bench_bellm] [--queries 40] ...
        [--scored SCORED_DIR [--epochs 2]]

A small, seeded slice so that it runs on a CPU: the first ``--queries`` judged test queries, a corpus of their
relevant documents plus random others (``--corpus`` in all), ``--train-pairs`` (query, positive) pairs of the
train split. Rows: starting backbone (the embedded SmolLM2, or it after ``--ql-steps`` of LLM-QL on the train
pairs) x ``bidirectional_layers`` in {0, 1} x {zero-shot, ``--steps`` LoRA steps of InfoNCE + AnglE by
``train.py --objective bi-encoder`` on the train pairs as pair batches of ``--batch-size``}.
Resumable: every finished row is stored in ``WORK/results.json`` with the digest of the weights it measured and
read back while they are the same; the dense base model, the QL backbone and each trained row are rebuilt only
when what they are built from changes.

With ``--scored`` (teacher-scored fixed batches, e.g. the SciFact batches of ``teacher.score``;
only the ``asymmetric`` ones are used), each starting backbone x k also gets two rows trained by ``train.py`` on
exactly those batches for ``--epochs``: ``--objective bi-encoder`` (InfoNCE + AnglE on their texts and hard
negatives) and the D2LLM student (``configs/main_job.yaml``: PMA + IEM, the three losses); both are evaluated
by ``evaluate_model.py``'s code on the same slice.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from baselines.bi_encoder import BELLM_PROMPT, BiEncoder  # noqa: E402
from common.fingerprints import saved_digest  # noqa: E402
from common.metrics import retrieval  # noqa: E402
from common.stages import build_once, write_json  # noqa: E402
from evaluation.loaders import load_retrieval  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def text_digest(text: str) -> str:
    """sha256 of a text: what a file written from it holds."""
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()
DATA = str(REPO.parent / "shared" / "data" / "en" / "scifact")
OBJECTIVES = {
    "bi-encoder": "bi-encoder, train.py on scored batches",
    "d2llm": "D2LLM student, train.py on scored batches",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=DATA, help="BEIR folder of SciFact")
    parser.add_argument("--work", default="/tmp/bench_bellm", help="cache, backbones and results.json")
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--corpus", type=int, default=200)
    parser.add_argument("--train-pairs", type=int, default=192)
    parser.add_argument("--max-length", type=int, default=128, help="tokens per text")
    parser.add_argument("--steps", type=int, default=24, help="contrastive LoRA steps")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--ql-steps", type=int, default=24)
    parser.add_argument("--ql-lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scored", help="teacher-scored batches: adds the train.py rows (bi-encoder and student)")
    parser.add_argument("--epochs", type=float, default=2, help="train.py epochs over the asymmetric batches")
    return parser.parse_args()


def base_backbone(work: Path) -> str:
    """The embedded SmolLM2 as a dense causal-LM folder (unpacking the GGUF once)."""
    from common.embedded_models import smollm2_gguf
    from teacher.export_backbone import export_backbone

    folder = work / "smollm2"
    build_once(folder, lambda out: export_backbone(smollm2_gguf(), out), {"gguf": saved_digest(smollm2_gguf())})
    return str(folder)


def data_slice(args: argparse.Namespace) -> tuple[dict, dict, dict, list[dict]]:
    """(queries, corpus, qrels) of the test slice and the train pairs, all seeded."""
    test, train = load_retrieval(args.data, "test"), load_retrieval(args.data, "train")
    rng = random.Random(args.seed)
    query_ids = sorted(test.qrels, key=int)[: args.queries]
    relevant = sorted({doc for query in query_ids for doc in test.qrels[query]})
    others = sorted(set(test.corpus) - set(relevant))
    docs = relevant + rng.sample(others, max(0, args.corpus - len(relevant)))
    pairs = [{"query": train.queries[query], "positive": train.corpus[doc]}
             for query in sorted(train.qrels, key=int) for doc in sorted(train.qrels[query])]
    pairs = rng.sample(pairs, min(args.train_pairs, len(pairs)))
    return ({q: test.queries[q] for q in query_ids}, {d: test.corpus[d] for d in docs},
            {q: test.qrels[q] for q in query_ids}, pairs)


def ql_backbone(work: Path, base: str, pairs: list[dict], args: argparse.Namespace) -> str:
    from baselines.pretrain_ql import main

    folder, data = work / "ql", work / "train_pairs.jsonl"
    text = "".join(json.dumps(pair) + "\n" for pair in pairs)
    build_once(data, lambda out: out.write_text(text), {"pairs": text_digest(text)})
    options = ["--max_document_length", str(args.max_length), "--max_query_length", "48", "--lora_r",
               str(args.lora_r), "--max_steps", str(args.ql_steps), "--per_device_train_batch_size",
               str(args.batch_size), "--learning_rate", str(args.ql_lr), "--logging_steps", "4",
               "--save_strategy", "no", "--report_to", "none", "--use_cpu", "true", "--seed", str(args.seed)]
    build_once(folder, lambda out: main(["--model_name_or_path", base, "--train_data", str(data), "--output_dir",
                                         str(out), *options]),
               {"base": saved_digest(base), "pairs": text_digest(text), "options": options})
    return str(folder)


def ndcg_at_10(encoder: BiEncoder, queries: dict, corpus: dict, qrels: dict) -> float:
    doc_ids = list(corpus)
    scores = BiEncoder.similarity(encoder.encode(list(queries.values()), batch_size=16),
                                  encoder.encode([corpus[d] for d in doc_ids], batch_size=16))
    run = {q: {doc_ids[j]: float(s) for j, s in enumerate(row)} for q, row in zip(queries, scores.tolist())}
    return retrieval(run, qrels)["ndcg_at_10"]


def pair_batches_of(pairs: list[dict], work: Path, args: argparse.Namespace) -> str:
    """The train pairs as pair batches of ``--batch-size`` (``preprocess.pair_batches``), saved once under ``work``."""
    from datasets import Dataset

    from preprocess.pair_batches import pair_batches

    folder = work / "train_pair_batches"
    rows = [{"query": pair["query"], "passage": pair["positive"], "target": 1.0, "task": "asymmetric",
             "language": "en"} for pair in pairs]
    build_once(folder, lambda out: pair_batches(Dataset.from_list(rows), args.batch_size, args.seed).save_to_disk(
        str(out)), {"pairs": text_digest(json.dumps(rows)), "batch_size": args.batch_size, "seed": args.seed})
    return str(folder)


def asymmetric_batches(scored: str, work: Path) -> str:
    """The ``asymmetric`` stored batches of ``scored``, saved once under ``work``."""
    from datasets import load_from_disk

    def build(out: Path) -> None:
        batches = load_from_disk(scored).filter(lambda row: row["task"] == "asymmetric")
        if len(batches) == 0:
            raise SystemExit(f"{scored} holds no asymmetric batch")
        batches.save_to_disk(str(out))

    folder = work / "scored_asymmetric"
    build_once(folder, build, {"scored": saved_digest(scored)})
    return str(folder)


def train_with_train_py(objective: str, start: str, k: int, batches: str, output: Path, args: argparse.Namespace,
                        extra: tuple[str, ...] = ()) -> None:
    """``accelerate launch train.py configs/main_job.yaml`` with the given objective, start, k and ``extra`` options
    (skipped when ``output`` was built from the same start, batches and options)."""
    import subprocess

    from common.recipes import ACCELERATE_ONE_PROCESS

    def command(out: str) -> list[str]:
        return [*ACCELERATE_ONE_PROCESS, "train.py", "configs/main_job.yaml", "--objective", objective,
                "--model_name_or_path", start, "--bidirectional_layers", str(k), "--train_dataset", batches,
                "--output_dir", out, "--num_train_epochs", str(args.epochs), "--max_seq_length",
                str(args.max_length), "--seed", str(args.seed), "--disable_tqdm", "true", *extra]

    build_once(output, lambda out: subprocess.run(command(str(out)), cwd=REPO, check=True),
               {"command": command("{output}")[len(ACCELERATE_ONE_PROCESS):], "start": saved_digest(start),
                "batches": saved_digest(batches)})


def evaluated_ndcg(model: str, queries: dict, corpus: dict, qrels: dict) -> float:
    """NDCG@10 over the slice through ``evaluate_model.py``'s code path (IEM scores or cosine)."""
    from evaluation.tasks import evaluate_retrieval
    from evaluation.loaders import RetrievalData
    from evaluation.models import load_scorer

    data = RetrievalData(corpus, queries, qrels, "SciFact slice")
    return evaluate_retrieval(load_scorer(model, batch_size=16, device="cpu"), data)["ndcg_at_10"]


def main() -> None:
    args = parse_args()
    torch.manual_seed(args.seed)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results_file = work / "results.json"
    # the train.py rows record their own --scored / --epochs, so adding them keeps the finished rows
    settings = {key: value for key, value in vars(args).items() if key not in ("work", "scored", "epochs")}
    saved = json.loads(results_file.read_text()) if results_file.exists() else {"settings": settings, "rows": {}}
    if saved["settings"] != settings:
        raise SystemExit(f"{results_file} holds results of other settings {saved['settings']}: use another --work")
    results = saved["rows"]
    queries, corpus, qrels, pairs = data_slice(args)
    print(f"slice: {len(queries)} queries, {len(corpus)} documents, {len(pairs)} train pairs", flush=True)
    base = base_backbone(work)
    starts = {"SmolLM2": base, "SmolLM2 + LLM-QL": None}
    for start_name in starts:
        for k in (0, 1):
            for trained in (False, True):
                row = f"{start_name} | k={k} | {'InfoNCE+AnglE LoRA' if trained else 'zero-shot'}"
                if starts[start_name] is None:
                    starts[start_name] = ql_backbone(work, base, pairs, args)
                began = time.time()
                torch.manual_seed(args.seed)
                model = starts[start_name]
                if trained:  # InfoNCE + AnglE (the bi-encoder's default weights) on the train pairs, LoRA
                    model = str(work / "trained" / f"{'ql' if 'QL' in start_name else 'base'}-k{k}-pairs")
                    train_with_train_py("bi-encoder", starts[start_name], k, pair_batches_of(pairs, work, args),
                                        Path(model), args, ("--max_steps", str(args.steps), "--learning_rate",
                                                            str(args.lr), "--lora_r", str(args.lora_r),
                                                            "--lora_alpha", str(2 * args.lora_r)))
                identity = saved_digest(model)
                if results.get(row, {}).get("model") == identity:  # measured on these very weights
                    continue
                encoder = BiEncoder.from_pretrained(model, attn_implementation="sdpa", pooling="mean",
                                                    prompt_template=BELLM_PROMPT, max_seq_length=args.max_length,
                                                    bidirectional_layers=k)
                results[row] = {"ndcg_at_10": ndcg_at_10(encoder, queries, corpus, qrels),
                                "seconds": round(time.time() - began), "model": identity}
                write_json(results_file, saved)
                print(f"{row}: NDCG@10 {results[row]['ndcg_at_10']:.4f} ({results[row]['seconds']} s)", flush=True)
    if args.scored:
        batches = asymmetric_batches(args.scored, work)
        for start_name in starts:
            for k in (0, 1):
                for objective, label in OBJECTIVES.items():
                    row = f"{start_name} | k={k} | {label}"
                    if starts[start_name] is None:
                        starts[start_name] = ql_backbone(work, base, pairs, args)
                    began = time.time()
                    output = work / "trained" / f"{'ql' if 'QL' in start_name else 'base'}-k{k}-{objective}"
                    train_with_train_py(objective, starts[start_name], k, batches, output, args)
                    identity = saved_digest(output)
                    if results.get(row, {}).get("model") == identity:  # measured on these very weights
                        continue
                    results[row] = {"ndcg_at_10": evaluated_ndcg(str(output), queries, corpus, qrels),
                                    "seconds": round(time.time() - began), "scored": args.scored,
                                    "epochs": args.epochs, "model": identity}
                    write_json(results_file, saved)
                    print(f"{row}: NDCG@10 {results[row]['ndcg_at_10']:.4f} ({results[row]['seconds']} s)",
                          flush=True)
    print(f"\nSciFact slice ({len(queries)} test queries, {len(corpus)} documents), NDCG@10")
    print("| backbone | bidirectional_layers | training | NDCG@10 |\n| --- | --- | --- | --- |")
    for row, value in results.items():
        backbone, k, training = row.split(" | ")
        print(f"| {backbone} | {k[2:]} | {training} | {value['ndcg_at_10']:.4f} |")


if __name__ == "__main__":
    main()
