"""Teacher scoring of fixed training batches (docs/method.md, sections 3-4; output
``common.schema.SCORED_BATCH_FEATURES``).

Mined examples are grouped into fixed batches of B (one task, language and K per batch; no text twice in a
batch, so no in-batch "negative" is another row's query or positive), and the teacher scores, per batch:
every query with its positive and K hard negatives (logits and final-token features, giving the
(1+K) x (1+K) feature cosine matrix) and every query with every positive of the batch (the B x B in-batch
logits). One output row is one batch, so the in-batch matrix always belongs to the batch trained on.

Cost controls: ``--inbatch-scores none`` scores only each query's 1 + K candidates (the B x B in-batch block
feeds only the pairwise rank term, yet it is most of the pairs: 64 of 96 at B = 8, K = 3); the rows then hold an
empty ``teacher_inbatch_logits`` list (``schema``) and training refuses ``gamma > 0``. ``--dtype auto`` (the
default) computes in bfloat16 where the hardware has a fast bf16 path and in float32 elsewhere
(``common.hardware.resolve_dtype``); the choice and the CPU capability are recorded in ``scoring_run.json``.

Long runs: batches are scored in shards of ``shard_batches``; each shard is written to a temporary folder
and renamed into place, so a shard on disk is always complete. A killed run started again with the same
arguments skips the shards on disk and scores the rest; nothing is scored twice. Under ``accelerate launch``
each process scores every ``world_size``-th shard and the main process merges them. When all shards are there
they are merged into ``OUTPUT`` (a ``datasets`` folder, ``load_from_disk``) and the work folder is removed.

Command line::

    python -m teacher.score --input MINED_DIR [MINED_DIR ...] --output SCORED_DIR --teacher MODEL_OR_GGUF
        [--adapter LORA_DIR] [--batch-size 16] [--seed 0] [--shard-batches 32] [--teacher-batch-size 32]
        [--drop-last] [--max-shards N] [--inbatch-scores all|none] [--dtype auto|float32|bfloat16]
        [--prompt-preset spec|short]

Bad input ends the command with exit status 2 and one line: a mined row that cannot be used, a ``--teacher`` or
``--adapter`` that does not load, or an ``--output`` (or work folder) scored from other inputs or settings.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import shutil
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from datasets import Dataset, concatenate_datasets, load_from_disk
from tqdm.auto import tqdm

from common.cli_errors import ModelError
from common.schema import MINED_FEATURES, SCORED_BATCH_FEATURES
from common.stages import write_whole
from preprocess.mining import normalise
from preprocess.readers import DataError
from teacher.model import YesNoTeacher, add_teacher_cost_arguments
from teacher.prompts import prompts_to_json

logger = logging.getLogger(__name__)

RUN_FILE = "scoring_run.json"
INBATCH_CHOICES = ("all", "none")


@dataclass
class ScoringConfig:
    batch_size: int = 16
    seed: int = 0
    shard_batches: int = 32
    teacher_batch_size: int = 32
    drop_last: bool = False
    inbatch_scores: str = "all"
    """``all``: every (query, in-batch positive) pair too, as in the paper; ``none``: only the 1 + K candidates."""

    def __post_init__(self) -> None:
        if self.inbatch_scores not in INBATCH_CHOICES:
            raise ValueError(f"inbatch_scores must be one of {INBATCH_CHOICES}, got {self.inbatch_scores!r}")


# ---------------------------------------------------------------------- fixed batches
def plan_batches(rows: Sequence[dict], batch_size: int, seed: int = 0, drop_last: bool = False
                 ) -> tuple[list[list[int]], int]:
    """Row-index batches (one task, language and K each; no text repeated inside a batch) and the number of
    rows left out by ``drop_last``. Deterministic in ``seed``; batches of all groups come in a seeded order."""
    groups: dict[tuple[str, str, int], list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        groups[(row["task"], row["language"], len(row["negatives"]))].append(index)
    rng = random.Random(seed)
    batches, dropped = [], 0
    for key in sorted(groups):
        order = groups[key]
        rng.shuffle(order)
        open_batches: list[tuple[list[int], set[str]]] = []
        for index in order:
            texts = {normalise(rows[index]["query"]), normalise(rows[index]["positive"])}
            home = next((batch for batch in open_batches if not texts & batch[1]), None)
            if home is None:
                home = ([], set())
                open_batches.append(home)
            home[0].append(index)
            home[1].update(texts)
            if len(home[0]) == batch_size:
                batches.append(home[0])
                open_batches.remove(home)
        for members, _ in open_batches:
            if drop_last:
                dropped += len(members)
            else:
                batches.append(members)
    rng.shuffle(batches)
    return batches, dropped


# ---------------------------------------------------------------------- scoring
def score_shard(teacher: YesNoTeacher, batches: Sequence[dict], batch_size: int, inbatch_scores: bool = True
                ) -> list[dict]:
    """Scored rows for ``batches`` (dicts with batch_id, task, language, queries, positives, negatives).

    Each distinct (query, passage) of the shard is scored once: hard pairs with features, in-batch pairs
    without (an in-batch pair that is also a hard pair reuses the hard score). Without ``inbatch_scores`` no
    in-batch pair is scored and ``teacher_inbatch_logits`` is an empty list.
    """
    hard: dict[tuple[str, str], dict[tuple[str, str], int]] = defaultdict(dict)
    inbatch: dict[tuple[str, str], dict[tuple[str, str], int]] = defaultdict(dict)
    for batch in batches:
        key = (batch["task"], batch["language"])
        for query, positive, negatives in zip(batch["queries"], batch["positives"], batch["negatives"]):
            for passage in [positive, *negatives]:
                hard[key].setdefault((query, passage), len(hard[key]))
        for query in batch["queries"] if inbatch_scores else []:
            for passage in batch["positives"]:
                if (query, passage) not in hard[key]:
                    inbatch[key].setdefault((query, passage), len(inbatch[key]))
    hard_scores, inbatch_scores = {}, {}
    for key in hard:
        task, language = key
        for pairs, store, features in ((hard[key], hard_scores, True), (inbatch[key], inbatch_scores, False)):
            if not pairs:
                continue
            queries, passages = zip(*pairs)
            result = teacher.score(queries, passages, task, language=language, batch_size=batch_size,
                                   return_features=features)
            store[key] = result if features else (result, None)

    scored = []
    for batch in batches:
        key = (batch["task"], batch["language"])
        hard_logits, hard_features = hard_scores[key]

        def logits_of(query: str, passage: str) -> torch.Tensor:
            if (query, passage) in hard[key]:
                return hard_logits[hard[key][(query, passage)]]
            return inbatch_scores[key][0][inbatch[key][(query, passage)]]

        hard_rows, cosine_rows = [], []
        for query, positive, negatives in zip(batch["queries"], batch["positives"], batch["negatives"]):
            at = [hard[key][(query, passage)] for passage in [positive, *negatives]]
            hard_rows.append(hard_logits[at].tolist())
            states = F.normalize(hard_features[at].float(), dim=-1)
            cosine_rows.append((states @ states.T).tolist())
        inbatch_rows = [[logits_of(query, passage).tolist() for passage in batch["positives"]]
                        for query in batch["queries"]] if inbatch_scores else []
        scored.append({**batch, "teacher_hard_logits": hard_rows, "teacher_inbatch_logits": inbatch_rows,
                       "teacher_feature_cosine": cosine_rows})
    return scored


def score_dataset(
    rows: Dataset,
    teacher: YesNoTeacher,
    output: str | Path,
    config: ScoringConfig | None = None,
    *,
    teacher_id: str = "",
    work_dir: str | Path | None = None,
    max_shards: int | None = None,
    process_index: int = 0,
    num_processes: int = 1,
    wait_for_everyone=lambda: None,
) -> Dataset | None:
    """Score ``rows`` (``MINED_FEATURES``) in fixed batches into ``output``; resumable (module docstring).

    ``max_shards`` stops this call after scoring that many shards (the run resumes later); returns the
    finished dataset, or None while shards are missing. ``teacher_id`` names the teacher in the run
    fingerprint, so a resumed run cannot mix two teachers' scores.
    """
    config = config or ScoringConfig()
    rows = rows.select_columns(list(MINED_FEATURES)).to_list()
    output = Path(output)
    work = Path(work_dir) if work_dir else output.with_name(output.name + ".work")
    batches, dropped = plan_batches(rows, config.batch_size, config.seed, config.drop_last)
    if dropped:
        logger.info("drop_last: %d rows in incomplete batches left out", dropped)
    fingerprint = _fingerprint(rows, batches, config, teacher, teacher_id)
    if output.exists():
        return _finished(output, work, fingerprint, process_index)
    shards = [list(range(start, min(start + config.shard_batches, len(batches))))
              for start in range(0, len(batches), config.shard_batches)]
    if process_index == 0:
        _start_work_dir(work, fingerprint, config, len(shards))
    wait_for_everyone()
    mine = [shard for shard in range(len(shards)) if shard % num_processes == process_index]
    todo = [shard for shard in mine if not _shard_path(work, shard).is_dir()]
    done_batches = sum(len(shards[shard]) for shard in mine) - sum(len(shards[shard]) for shard in todo)
    progress = tqdm(total=sum(len(shards[shard]) for shard in mine), initial=done_batches, unit="batch",
                    desc=f"scoring (process {process_index})", dynamic_ncols=True)
    pairs, started = 0, time.perf_counter()
    for count, shard in enumerate(todo):
        if max_shards is not None and count >= max_shards:
            break
        members = [_batch_row(rows, batch_id, batches[batch_id]) for batch_id in shards[shard]]
        inbatch = config.inbatch_scores == "all"
        scored = score_shard(teacher, members, config.teacher_batch_size, inbatch)
        _write_atomically(Dataset.from_list(scored, features=SCORED_BATCH_FEATURES), _shard_path(work, shard),
                          shared_folder=True)
        pairs += sum(len(b["queries"]) * (1 + len(b["negatives"][0]) + inbatch * len(b["queries"])) for b in members)
        progress.update(len(members))
        progress.set_postfix(pairs_per_s=f"{pairs / (time.perf_counter() - started):.1f}")
    progress.close()
    wait_for_everyone()
    missing = [shard for shard in range(len(shards)) if not _shard_path(work, shard).is_dir()]
    if missing:
        logger.info("%d of %d shards scored; run again with the same arguments to resume",
                    len(shards) - len(missing), len(shards))
        return None
    if process_index != 0:
        return None
    merged = concatenate_datasets([load_from_disk(str(_shard_path(work, shard))) for shard in range(len(shards))])
    record = {"fingerprint": fingerprint, "inbatch_scores": config.inbatch_scores,
              "compute": teacher.compute.to_dict() if teacher.compute else None}
    _write_atomically(merged, output, extra={RUN_FILE: json.dumps(record, indent=2)})
    shutil.rmtree(work)
    logger.info("%d scored batches -> %s", len(merged), output)
    scored = load_from_disk(str(output))
    report_teacher_separation(scored, output)
    return scored


# ---------------------------------------------------------------------- teacher separation report
SEPARATION_KEY = "teacher_separation"
SEPARATION_THRESHOLD = 0.1  # mean p(yes) on positives minus on hard negatives below this: little to teach


def teacher_separation(scored: Dataset) -> dict[str, float | None]:
    """The teacher's mean ``p(yes) = softmax([l_yes, l_no])[0]`` (temperature 1) over every pair of ``scored``:
    positives (``teacher_hard_logits[i][0]``), hard negatives (``[i][k >= 1]``) and off-diagonal in-batch pairs
    (``teacher_inbatch_logits[i][j]``, j != i; None when no batch holds in-batch scores)."""
    sums = {"positives": 0.0, "hard_negatives": 0.0, "inbatch": 0.0}
    counts = dict.fromkeys(sums, 0)
    for row in scored.select_columns(["teacher_hard_logits", "teacher_inbatch_logits"]):
        hard = torch.tensor(row["teacher_hard_logits"], dtype=torch.float32)
        yes = torch.sigmoid(hard[..., 0] - hard[..., 1])
        parts = {"positives": yes[:, 0], "hard_negatives": yes[:, 1:]}
        if row["teacher_inbatch_logits"]:
            inbatch = torch.tensor(row["teacher_inbatch_logits"], dtype=torch.float32)
            off_diagonal = ~torch.eye(inbatch.shape[0], dtype=torch.bool)
            parts["inbatch"] = torch.sigmoid(inbatch[..., 0] - inbatch[..., 1])[off_diagonal]
        for name, values in parts.items():
            sums[name] += float(values.sum())
            counts[name] += values.numel()
    return {f"mean_p_yes_{name}": sums[name] / counts[name] if counts[name] else None for name in sums}


def report_teacher_separation(scored: Dataset, output: Path) -> dict[str, float | None]:
    """Log ``teacher_separation`` of the finished ``scored`` dataset, warn when positives are not at least
    ``SEPARATION_THRESHOLD`` above hard negatives, and record it under ``SEPARATION_KEY`` in ``output/RUN_FILE``."""
    separation = teacher_separation(scored)
    inbatch = separation["mean_p_yes_inbatch"]
    logger.info("teacher mean p(yes): positives %.3f, hard negatives %.3f, in-batch pairs %s",
                separation["mean_p_yes_positives"], separation["mean_p_yes_hard_negatives"],
                "absent (not scored)" if inbatch is None else f"{inbatch:.3f}")
    gap = separation["mean_p_yes_positives"] - separation["mean_p_yes_hard_negatives"]
    if gap < SEPARATION_THRESHOLD:
        logger.warning("the teacher's mean p(yes) on positives is only %.3f above hard negatives (< %.2f): this "
                       "teacher has little to teach; adapt it or check its prompts before distilling",
                       gap, SEPARATION_THRESHOLD)
    run_file = output / RUN_FILE
    run = json.loads(run_file.read_text()) if run_file.exists() else {}
    run[SEPARATION_KEY] = {**separation, "threshold": SEPARATION_THRESHOLD}
    write_whole(run_file, lambda partial: partial.write_text(json.dumps(run)))
    return separation


def teacher_identity(teacher: str, adapter: str | None) -> str:
    """What names the teacher in the run fingerprint: the content digest of the model and the adapter where they
    are on disk (retrained in place: another teacher; copied elsewhere: the same), else their Hub ids."""
    from common.fingerprints import saved_digest

    return "|".join(saved_digest(path) if os.path.exists(path) else path for path in (teacher, adapter or ""))


def _batch_row(rows: Sequence[dict], batch_id: int, members: Sequence[int]) -> dict:
    picked = [rows[index] for index in members]
    return {"batch_id": batch_id, "task": picked[0]["task"], "language": picked[0]["language"],
            "queries": [row["query"] for row in picked], "positives": [row["positive"] for row in picked],
            "negatives": [row["negatives"] for row in picked]}


def _fingerprint(rows: Sequence[dict], batches: Sequence[Sequence[int]], config: ScoringConfig, teacher: YesNoTeacher,
                 teacher_id: str) -> str:
    digest = hashlib.sha256()
    settings = {"config": asdict(config), "teacher": teacher_id, "prompts": prompts_to_json(teacher.prompts),
                "max_tokens": [teacher.max_query_tokens, teacher.max_passage_tokens],
                "dtype": teacher.compute.dtype if teacher.compute else None}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for batch in batches:
        for index in batch:
            row = rows[index]
            digest.update(json.dumps([row["query"], row["positive"], row["negatives"]]).encode())
    return digest.hexdigest()


def _finished(output: Path, work: Path, fingerprint: str, process_index: int) -> Dataset:
    run_file = output / RUN_FILE
    recorded = json.loads(run_file.read_text())["fingerprint"] if run_file.exists() else None
    if recorded != fingerprint:
        raise FileExistsError(f"{output} exists and was not scored from these inputs and settings; "
                              "choose another --output or remove it")
    if process_index == 0 and work.exists():
        shutil.rmtree(work)
    logger.info("%s is already complete", output)
    return load_from_disk(str(output))


def _start_work_dir(work: Path, fingerprint: str, config: ScoringConfig, num_shards: int) -> None:
    run_file = work / RUN_FILE
    if run_file.exists():
        if json.loads(run_file.read_text())["fingerprint"] != fingerprint:
            raise FileExistsError(f"{work} holds shards of a run with other inputs or settings; "
                                  "remove it or use another --output")
        return
    record = {"fingerprint": fingerprint, "config": asdict(config), "shards": num_shards}
    write_whole(run_file, lambda partial: partial.write_text(json.dumps(record)))


def _shard_path(work: Path, shard: int) -> Path:
    return work / f"shard-{shard:05d}"


def _write_atomically(dataset: Dataset, target: Path, extra: dict[str, str] | None = None,
                      shared_folder: bool = False) -> None:
    """``save_to_disk`` plus the ``extra`` files, written whole or not at all (``common.stages.write_whole``)."""

    def build(partial: Path) -> None:
        dataset.save_to_disk(str(partial))
        for name, text in (extra or {}).items():
            (partial / name).write_text(text)

    write_whole(target, build, shared_folder=shared_folder)


def load_mined(paths: Sequence[str]) -> Dataset:
    """Mined datasets concatenated, checked for the mined schema and for K hard negatives per row."""
    parts = []
    for path in paths:
        part = load_from_disk(path)
        missing = set(MINED_FEATURES) - set(part.column_names)
        if missing:
            raise DataError(f"{path}: missing columns {sorted(missing)}; write it with python -m preprocess.mining")
        for index, negatives in enumerate(part["negatives"]):
            if not negatives:
                raise DataError(f"{path}: row {index} has no negatives")
        parts.append(part.select_columns(list(MINED_FEATURES)).cast(MINED_FEATURES))
    return concatenate_datasets(parts)


def main(argv: Sequence[str] | None = None) -> None:
    defaults = ScoringConfig()
    parser = argparse.ArgumentParser(description="Teacher scores of fixed training batches (resumable).")
    parser.add_argument("--input", nargs="+", required=True, help="mined datasets (python -m preprocess.mining)")
    parser.add_argument("--output", required=True, help="folder of the scored-batch dataset")
    parser.add_argument("--teacher", required=True, help="causal LM: hub id, folder or .gguf file")
    parser.add_argument("--adapter", help="LoRA folder written by python -m teacher.adapt")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="B: queries per batch")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--shard-batches", type=int, default=defaults.shard_batches)
    parser.add_argument("--teacher-batch-size", type=int, default=defaults.teacher_batch_size,
                        help="pairs per teacher forward pass")
    parser.add_argument("--drop-last", action="store_true", help="leave out incomplete batches (counted)")
    parser.add_argument("--max-shards", type=int, help="stop after scoring this many shards (resume later)")
    parser.add_argument("--max-query-tokens", type=int, help="default: the adapter's (teacher_settings.json), else 128")
    parser.add_argument("--max-passage-tokens", type=int, help="default: the adapter's, else 384")
    parser.add_argument("--work-dir", help="where shards go while scoring (default OUTPUT.work)")
    parser.add_argument("--inbatch-scores", choices=INBATCH_CHOICES, default=defaults.inbatch_scores,
                        help="none: score only each query's 1+K candidates (about 3x fewer pairs at B = 8, K = 3; "
                             "training then needs --gamma 0)")
    add_teacher_cost_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from accelerate import PartialState

    state = PartialState()
    rows = load_mined(args.input)
    teacher = YesNoTeacher.from_pretrained(args.teacher, adapter=args.adapter, device=state.device,
                                           dtype=args.dtype, prompt_preset=args.prompt_preset,
                                           max_query_tokens=args.max_query_tokens,
                                           max_passage_tokens=args.max_passage_tokens)
    config = ScoringConfig(batch_size=args.batch_size, seed=args.seed, shard_batches=args.shard_batches,
                           teacher_batch_size=args.teacher_batch_size, drop_last=args.drop_last,
                           inbatch_scores=args.inbatch_scores)
    teacher_id = teacher_identity(args.teacher, args.adapter)
    started = time.perf_counter()
    score_dataset(rows, teacher, args.output, config, teacher_id=teacher_id, work_dir=args.work_dir,
                  max_shards=args.max_shards, process_index=state.process_index,
                  num_processes=state.num_processes, wait_for_everyone=state.wait_for_everyone)
    logger.info("scoring took %.1fs", time.perf_counter() - started)


if __name__ == "__main__":
    from common.cli_errors import run_command

    run_command(main, DataError, ModelError, FileNotFoundError, FileExistsError)
