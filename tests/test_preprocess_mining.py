"""Hard-negative mining: exclusions, determinism, false-negative filtering, Chinese segmentation, bad input."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset, load_from_disk

from common.schema import EXAMPLE_FEATURES, MINED_FEATURES
from preprocess import mining, readers
from preprocess.mining import BM25Retriever, MiningConfig, mine, normalise, reciprocal_rank_fusion
from preprocess.readers import DataError

CORPUS = [
    "A man is playing a guitar.", "A man plays the guitar on stage.", "A woman is playing a guitar.",
    "A man is playing a flute.", "A man is playing the piano.", "A dog runs in the park.",
    "A cat sleeps on the sofa.", "Two dogs play with a ball.", "A woman is slicing an onion.",
    "A man is cutting an onion.", "The child rides a bicycle.", "A boy is riding a bike.",
    "The sun sets over the sea.", "A plane takes off from the runway.", "A man is playing guitar",
    "Someone plays a guitar loudly.", "The man is singing and playing the guitar.", "A girl is playing a violin.",
]


def examples(*pairs: tuple[str, str]) -> Dataset:
    return Dataset.from_list([{"query": q, "positive": p, "task": "symmetric", "language": "en"} for q, p in pairs],
                             features=EXAMPLE_FEATURES)


GUITAR = examples(("A man is playing a guitar.", "A man plays the guitar on stage."),
                  ("A man is playing a guitar.", "Someone plays a guitar loudly."),
                  ("A woman is slicing an onion.", "A man is cutting an onion."))


def test_mined_negatives_are_never_a_positive_or_the_query():
    mined, report = mine(GUITAR, CORPUS, MiningConfig(k=5, methods=("bm25",), skip_top=0))
    assert mined.features == MINED_FEATURES and report.rows == 3 and report.queries == 2
    guitar_positives = {normalise(p) for p in ("A man plays the guitar on stage.", "Someone plays a guitar loudly.")}
    for row in mined:
        assert len(row["negatives"]) == len(set(row["negatives"])) == 5
        forbidden = {normalise(row["query"])} | (guitar_positives if "guitar" in row["query"] else
                                                 {normalise(row["positive"])})
        assert not {normalise(n) for n in row["negatives"]} & forbidden
        assert set(row["negatives"]) <= set(CORPUS)


def test_skip_top_drops_the_best_ranked_candidates():
    full = mine(GUITAR, CORPUS, MiningConfig(k=6, methods=("bm25",), skip_top=0))[0]
    skipped = mine(GUITAR, CORPUS, MiningConfig(k=4, methods=("bm25",), skip_top=2))[0]
    assert skipped[0]["negatives"] == full[0]["negatives"][2:6]


def test_sampling_is_deterministic_under_a_seed_and_varies_with_it():
    def run(seed: int, data: Dataset = GUITAR) -> list[list[str]]:
        config = MiningConfig(k=3, methods=("bm25",), skip_top=0, sample_pool=10, seed=seed)
        return mine(data, CORPUS, config)[0]["negatives"]

    assert run(0) == run(0)
    assert any(run(0) != run(seed) for seed in range(1, 6))
    reversed_rows = GUITAR.select([2, 1, 0])
    assert run(0, reversed_rows) == run(0)[::-1]  # a row's negatives do not depend on the row order


def test_dense_mining_drops_candidates_scoring_too_close_to_the_positive():
    config = MiningConfig(k=3, methods=("bm25", "dense"), skip_top=0, max_relative_score=0.9)
    mined, report = mine(GUITAR, CORPUS, config)
    assert report.false_negatives_dropped > 0
    near_duplicate = "A man is playing guitar"  # cosine ~1 to the query: a false negative, never mined
    assert all(near_duplicate not in row["negatives"] for row in mined)
    unfiltered = mine(GUITAR, CORPUS, MiningConfig(k=3, methods=("bm25", "dense"), skip_top=0,
                                                   max_relative_score=None))[0]
    assert near_duplicate in unfiltered[0]["negatives"]


def test_short_candidate_lists_are_filled_from_the_corpus_and_counted():
    mined, report = mine(examples(("The sun sets over the sea.", "A plane takes off from the runway.")), CORPUS,
                         MiningConfig(k=6, methods=("bm25",), skip_top=0, depth=2))
    assert report.filled_randomly == 1 and len(mined[0]["negatives"]) == 6


def test_a_corpus_smaller_than_k_plus_one_is_an_error():
    with pytest.raises(DataError, match="fewer than k \\+ 1 = 8"):
        mine(GUITAR, CORPUS[:7], MiningConfig(k=7, methods=("bm25",)))


def test_a_query_with_too_few_eligible_texts_is_an_error_naming_the_row():
    corpus = ["A man is playing a guitar.", "A man plays the guitar on stage.", "A dog runs.", "A cat sleeps."]
    with pytest.raises(DataError, match="row 0 .*only 2 eligible"):
        mine(GUITAR.select([0]), corpus, MiningConfig(k=3, methods=("bm25",)))


def test_chinese_text_is_segmented_with_jieba():
    corpus = ["一架飞机要起飞了。", "一个男人在吹一支大笛子。", "一只猫在沙发上睡觉。", "孩子们在公园里玩。"]
    assert BM25Retriever(corpus, "zh").search(["飞机在起飞"], depth=4)[0][0] == 0
    assert BM25Retriever(corpus, "en").search(["飞机在起飞"], depth=4)[0] == []  # whole runs, no shared words


def test_reciprocal_rank_fusion_orders_by_summed_reciprocal_ranks_then_index():
    assert reciprocal_rank_fusion([[3, 1, 2], [1, 3, 0]], constant=0) == [1, 3, 0, 2]


def test_the_read_and_mine_commands_write_datasets_that_load_back(tmp_path):
    source = tmp_path / "pairs.jsonl"
    source.write_text("".join(json.dumps({"sentence1": q, "sentence2": p, "score": 5.0}) + "\n"
                              for q, p in zip(CORPUS[::2], CORPUS[1::2])))
    readers.main([str(source), "--output", str(tmp_path / "read")])
    mining.main(["--input", str(tmp_path / "read"), "--output", str(tmp_path / "mined"), "--k", "4",
                 "--methods", "bm25"])
    mined = load_from_disk(str(tmp_path / "mined"))
    assert mined.features == MINED_FEATURES and len(mined) == len(CORPUS) // 2
    assert all(len(negatives) == 4 for negatives in mined["negatives"])
