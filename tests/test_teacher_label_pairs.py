"""teacher.label_pairs: pair batches whose targets blend gold labels with the teacher's p(yes) (method.md (10))."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import load_from_disk
from tiny import tiny_llama, tiny_tokenizer
from transformers import LlamaForCausalLM

from preprocess import pair_batches
from preprocess.readers import DataError
from teacher import label_pairs
from teacher.label_pairs import blended_targets
from teacher.model import YesNoTeacher

REPO = Path(__file__).resolve().parents[1]
WORDS = ("cat", "dog", "bird", "fish", "tea", "milk")


def _pairs_file(tmp_path: Path) -> Path:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"sentence1": f"the {a} sat {chr(97 + index)}", "sentence2": f"a {b} ran",
                                         "score": float(index % 6)}) + "\n"
                             for index, (a, b) in enumerate(zip(WORDS * 2, WORDS[::-1] * 2))))  # 12 distinct pairs
    return pairs


def _tiny_teacher(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model_dir = tmp_path / "tiny-llm"
    LlamaForCausalLM(tiny_llama(max_position_embeddings=256)).save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    return model_dir


def _gold_targets(pairs: Path) -> dict[tuple[str, str], float]:
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    return {(row["sentence1"], row["sentence2"]): row["score"] / 5 for row in rows}


def test_blended_targets_equal_the_weighted_sum_pair_by_pair():
    gold, teacher = torch.tensor([0.0, 0.4, 1.0]), torch.tensor([0.9, 0.5, 0.2])
    for weight in (0.0, 0.3, 1.0):
        expected = [weight * g + (1 - weight) * t for g, t in zip(gold.tolist(), teacher.tolist())]
        assert blended_targets(gold, teacher, weight).tolist() == pytest.approx(expected)
    with pytest.raises(DataError, match="--gold-weight 1.5"):
        blended_targets(gold, teacher, 1.5)


def test_a_pair_without_gold_takes_the_teachers_score_alone_at_every_gold_weight():
    gold, teacher = torch.tensor([0.0, float("nan"), 1.0]), torch.tensor([0.9, 0.5, 0.2])
    for weight in (0.0, 0.3, 1.0):
        expected = [t if g != g else weight * g + (1 - weight) * t for g, t in zip(gold.tolist(), teacher.tolist())]
        assert blended_targets(gold, teacher, weight).tolist() == pytest.approx(expected)


def test_the_command_writes_batches_whose_targets_blend_gold_with_the_teachers_own_pair_scores(tmp_path):
    model_dir = _tiny_teacher(tmp_path)
    pairs, output = _pairs_file(tmp_path), tmp_path / "labelled"
    label_pairs.main([str(pairs), "--output", str(output), "--teacher", str(model_dir), "--gold-weight", "0.25",
                      "--batch-size", "4", "--device", "cpu", "--dtype", "float32"])
    batches = load_from_disk(str(output))
    assert len(batches) == 3 and all(len(row["targets"]) == 4 for row in batches)
    teacher = YesNoTeacher.from_pretrained(str(model_dir), device="cpu", dtype="float32")
    gold = _gold_targets(pairs)
    for row in batches:
        for query, passage, target in zip(row["queries"], row["positives"], row["targets"]):
            alone = teacher.probability([query], [passage], "symmetric", batch_size=1).item()  # no padding
            assert target == pytest.approx(0.25 * gold[(query, passage)] + 0.75 * alone, abs=1e-4)
    assert len({target for row in batches for target in row["targets"]}) > 6  # the teacher moved the tied golds


def test_gold_weight_one_gives_the_gold_pair_batches_without_running_the_teacher(tmp_path):
    pairs = _pairs_file(tmp_path)
    label_pairs.main([str(pairs), "--output", str(tmp_path / "gold"), "--teacher", str(tmp_path / "absent"),
                      "--gold-weight", "1", "--batch-size", "4"])
    pair_batches.main([str(pairs), "--output", str(tmp_path / "plain"), "--batch-size", "4"])
    assert load_from_disk(str(tmp_path / "gold")).to_list() == load_from_disk(str(tmp_path / "plain")).to_list()


def test_unlabelled_pairs_are_scored_by_the_teacher_alone_beside_gold_pairs_kept_gold(tmp_path):
    model_dir = _tiny_teacher(tmp_path)
    pairs, unlabelled = _pairs_file(tmp_path), tmp_path / "silver.jsonl"
    unlabelled.write_text("".join(json.dumps({"sentence1": f"one {a} {index}", "sentence2": f"two {a}"}) + "\n"
                                  for index, a in enumerate(WORDS * 2)))
    label_pairs.main([str(pairs), "--unlabelled", str(unlabelled), "--output", str(tmp_path / "out"), "--teacher",
                      str(model_dir), "--gold-weight", "1", "--batch-size", "4", "--device", "cpu", "--dtype",
                      "float32"])
    batches = load_from_disk(str(tmp_path / "out"))
    assert len(batches) == 6
    gold = _gold_targets(pairs)
    teacher = YesNoTeacher.from_pretrained(str(model_dir), device="cpu", dtype="float32")
    for row in batches:
        for query, passage, target in zip(row["queries"], row["positives"], row["targets"]):
            expected = gold.get((query, passage))
            if expected is None:
                expected = teacher.probability([query], [passage], "symmetric", batch_size=1).item()
            assert target == pytest.approx(expected, abs=1e-4)


def test_each_batch_holds_pairs_of_one_source_so_graded_and_binary_labels_are_never_ranked_together(tmp_path):
    graded = _pairs_file(tmp_path)
    labelled = tmp_path / "nli.jsonl"
    labelled.write_text("".join(json.dumps({"sentence1": f"one {a} {index}", "sentence2": f"two {a}",
                                            "label": ("entailment", "neutral")[index % 2]}) + "\n"
                                for index, a in enumerate(WORDS * 2)))
    label_pairs.main([str(graded), str(labelled), "--output", str(tmp_path / "gold"), "--teacher",
                      str(tmp_path / "absent"), "--gold-weight", "1", "--batch-size", "4"])

    batches = load_from_disk(str(tmp_path / "gold"))
    sources = [{"the" if query.startswith("the ") else "one" for query in row["queries"]} for row in batches]
    assert len(batches) == 6 and all(len(names) == 1 for names in sources)
    assert sorted(name for [name] in map(list, sources)) == ["one"] * 3 + ["the"] * 3


def test_a_bad_gold_weight_ends_with_one_line_and_status_2_before_anything_is_written(tmp_path):
    pairs = _pairs_file(tmp_path)
    result = subprocess.run([sys.executable, "-m", "teacher.label_pairs", str(pairs), "--output",
                             str(tmp_path / "out"), "--teacher", str(tmp_path / "absent"), "--gold-weight", "-0.5"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert "--gold-weight -0.5" in result.stderr and not (tmp_path / "out").exists()


def test_a_row_without_its_second_text_ends_with_one_line_naming_it_before_the_teacher_loads(tmp_path):
    pairs = _pairs_file(tmp_path)
    pairs.write_text(pairs.read_text() + json.dumps({"sentence1": "the cat sat", "score": 2.0}) + "\n")
    result = subprocess.run([sys.executable, "-m", "teacher.label_pairs", str(pairs), "--output",
                             str(tmp_path / "out"), "--teacher", str(tmp_path / "absent")],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [f"error: {pairs}:13: missing column 'sentence2' (columns: ['score', "
                                          "'sentence1'])"]
    assert not (tmp_path / "out").exists()
