"""preprocess.silver_pairs: unlabelled BM25-neighbour pairs of the gold sentences, for a teacher to label."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

from preprocess.readers import read_pairs
from preprocess.silver_pairs import silver_pairs

REPO = Path(__file__).resolve().parents[1]
GOLD = [("a dog runs in the park", "a dog is running outside"),
        ("a man plays the guitar", "a man is playing music"),
        ("the dog sleeps in the park", "a cat sleeps on the sofa"),
        ("a man plays the piano", "someone plays an instrument")]


def test_each_sentence_meets_its_best_word_neighbour_that_is_not_already_a_gold_or_taken_pair():
    pairs = silver_pairs(GOLD, k=1)
    assert ("a dog runs in the park", "the dog sleeps in the park") in pairs
    assert ("a man plays the guitar", "a man plays the piano") in pairs
    keys = [frozenset(pair) for pair in pairs]
    assert len(keys) == len(set(keys))  # no pair twice, in either order
    assert not set(keys) & {frozenset(pair) for pair in GOLD} and all(len(key) == 2 for key in keys)
    firsts = [first for first, _ in pairs]
    assert all(firsts.count(first) == 1 for first in firsts)  # k = 1: at most one new pair per sentence


def test_a_sentence_already_paired_with_its_neighbour_takes_the_next_one():
    sweet, fruit, sour, taste = "red apples are sweet", "red apples are sweet fruit", "green apples are sour", \
        "red apples taste sweet"
    gold = [(sweet, fruit), (sour, taste)]
    # sweet's gold partner is fruit, so it meets taste (red, apples, sweet); fruit's is sweet, so fruit meets taste
    # too; sour's partner is taste, so it meets sweet (apples, are; shorter than fruit, so BM25 ranks it first);
    # taste has none left (sweet and fruit taken, sour gold)
    assert silver_pairs(gold, k=1) == [(sweet, taste), (fruit, taste), (sour, sweet)]
    # k = 2: sweet and fruit each also meet sour (apples, are); sour and taste then have nothing new left
    assert silver_pairs(gold, k=2) == [(sweet, taste), (sweet, sour), (fruit, taste), (fruit, sour)]


def test_the_command_writes_pairs_that_read_back_without_gold_and_keeps_limit_many(tmp_path):
    source = tmp_path / "gold.jsonl"
    source.write_text("".join(json.dumps({"sentence1": a, "sentence2": b, "score": 3.0}) + "\n" for a, b in GOLD))
    output = tmp_path / "silver.jsonl"
    command = [sys.executable, "-m", "preprocess.silver_pairs", str(source), "--output", str(output)]
    subprocess.run([*command, "--limit", "3"], cwd=REPO, check=True, capture_output=True)
    pairs, _ = read_pairs(str(output), layout="unlabelled")
    assert all(math.isnan(target) for target in pairs["target"])
    every = silver_pairs(GOLD, k=1)  # the command's defaults: k = 1, depth 20
    drawn = [every[i] for i in sorted(random.Random(0).sample(range(len(every)), 3))]  # --seed 0
    assert list(zip(pairs["query"], pairs["passage"])) == drawn


def test_a_source_row_without_its_score_ends_with_one_line_and_no_output(tmp_path):
    source = tmp_path / "gold.jsonl"
    source.write_text(json.dumps({"sentence1": "a", "sentence2": "b", "score": 1}) + "\n"
                      + json.dumps({"sentence1": "c", "sentence2": "d"}) + "\n")
    result = subprocess.run([sys.executable, "-m", "preprocess.silver_pairs", str(source), "--output",
                             str(tmp_path / "silver.jsonl")], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert "gold.jsonl" in result.stderr and "score" in result.stderr and not (tmp_path / "silver.jsonl").exists()
