"""Evaluation data: every row kept, the positive class, BEIR folders, and bad input named by file, line, field."""

from __future__ import annotations

import pytest
from evaluation_tiny import CORPUS, QRELS, write_beir, write_jsonl, write_nli, write_sts

from evaluation.loaders import DataError, load_graded_pairs, load_labelled_pairs, load_retrieval


def test_graded_pairs_keep_every_row_in_order(tmp_path):
    path = write_jsonl(tmp_path / "sts.jsonl", [{"sentence1": "a cat", "sentence2": "a cat", "score": 5},
                                                {"sentence1": "a cat", "sentence2": "a cat", "score": 5},
                                                {"sentence1": "a dog", "sentence2": "the sun", "score": 0.5}])
    pairs = load_graded_pairs(str(path))
    assert pairs.first == ["a cat", "a cat", "a dog"]  # identical and repeated pairs are not dropped
    assert pairs.gold.tolist() == [5.0, 5.0, 0.5]


def test_labelled_pairs_positive_class_is_entailment_or_one(tmp_path):
    pairs = load_labelled_pairs(str(write_nli(tmp_path / "nli.jsonl")))
    assert pairs.gold.tolist() == [True, False, False, True, False, False]
    rows = [{"sentence1": "a", "sentence2": "b", "label": label} for label in (1, 0, "1", "0")]
    assert load_labelled_pairs(str(write_jsonl(tmp_path / "para.jsonl", rows))).gold.tolist() == [1, 0, 1, 0]


def test_missing_field_names_file_line_and_field(tmp_path):
    path = write_sts(tmp_path / "sts.jsonl")
    lines = path.read_text().splitlines()
    lines[2] = '{"sentence1": "a cat", "sentence2": "a dog"}'
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"sts\.jsonl:3: missing field 'score'"):
        load_graded_pairs(str(path))


def test_unknown_label_and_non_numeric_score_are_refused(tmp_path):
    bad_label = write_jsonl(tmp_path / "l.jsonl", [{"sentence1": "a", "sentence2": "b", "label": "maybe"}] * 2)
    with pytest.raises(DataError, match=r"l\.jsonl:1: field 'label'.*'maybe'"):
        load_labelled_pairs(str(bad_label))
    bad_score = write_jsonl(tmp_path / "s.jsonl", [{"sentence1": "a", "sentence2": "b", "score": "high"}] * 2)
    with pytest.raises(DataError, match=r"s\.jsonl:1: field 'score' must be a number"):
        load_graded_pairs(str(bad_score))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match="nothing.jsonl"):
        load_graded_pairs(str(tmp_path / "nothing.jsonl"))


def test_beir_folder_joins_title_and_text_and_keeps_judged_queries(tmp_path):
    data = load_retrieval(str(write_beir(tmp_path / "beir")))
    assert data.corpus["d1"] == "capital paris is the capital of france"
    assert data.corpus["d2"] == "the cat sat on the mat"
    assert set(data.queries) == {"q1", "q2", "q3"}  # q4 has no judgement
    assert data.qrels["q2"] == {"d2": 2, "d6": 0}


def test_qrels_id_absent_from_corpus_is_named(tmp_path):
    folder = write_beir(tmp_path / "beir", qrels=QRELS + [("q1", "d404", 1)])
    with pytest.raises(DataError, match=r"test\.tsv:6: corpus-id 'd404' is not in .*corpus\.jsonl"):
        load_retrieval(str(folder))


def test_empty_corpus_is_refused(tmp_path):
    folder = write_beir(tmp_path / "beir", qrels=[], corpus={})
    with pytest.raises(DataError, match="corpus has no documents"):
        load_retrieval(str(folder))


def test_missing_qrels_split_is_named(tmp_path):
    folder = write_beir(tmp_path / "beir")
    with pytest.raises(DataError, match=r"qrels/dev\.tsv: no such file"):
        load_retrieval(str(folder), split="dev")


def test_duplicate_document_id_is_refused(tmp_path):
    folder = write_beir(tmp_path / "beir")
    write_jsonl(folder / "corpus.jsonl", [{"_id": d, "text": t} for d, (_, t) in CORPUS.items()]
                + [{"_id": "d1", "text": "again"}])
    with pytest.raises(DataError, match=r"corpus\.jsonl:7: duplicate _id 'd1'"):
        load_retrieval(str(folder))


def test_labelled_pairs_of_a_single_class_are_refused(tmp_path):
    path = write_jsonl(tmp_path / "one.jsonl", [{"sentence1": "a", "sentence2": "b", "label": "neutral"}] * 3)
    with pytest.raises(DataError, match="all 3 pairs are negative"):
        load_labelled_pairs(str(path))


def test_hub_nli_labels_map_by_name_and_unlabelled_pairs_are_counted(monkeypatch):
    from datasets import ClassLabel, Dataset, Features, Value

    import preprocess.readers as readers
    from evaluation.loaders import load_labelled_pairs

    features = Features({"premise": Value("string"), "sentence1": Value("string"), "sentence2": Value("string"),
                         "label": ClassLabel(names=["entailment", "neutral", "contradiction"])})
    hub = Dataset.from_dict({"premise": ["", "", ""], "sentence1": ["a", "b", "c"], "sentence2": ["x", "y", "z"],
                             "label": [0, 2, -1]}, features=features)
    monkeypatch.setattr(readers, "load_dataset", lambda *args, **kwargs: hub)
    pairs = load_labelled_pairs("someone/snli", "test")
    assert pairs.gold.tolist() == [True, False]
    assert "1 pairs without a gold label left out" in pairs.source
