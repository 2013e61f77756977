"""Readers: every layout into the example schema, with bad input named or counted, never dropped silently."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.schema import EXAMPLE_FEATURES
from preprocess import read_report, readers
from preprocess.readers import DataError, load_read, read_examples, read_pairs, save_read


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


GRADED = [
    {"sentence1": "A plane is taking off.", "sentence2": "An air plane is taking off.", "score": 5.0},
    {"sentence1": "A man plays a flute.", "sentence2": "A man is playing a large flute.", "score": 3.8},
    {"sentence1": "A cat sleeps.", "sentence2": "", "score": 4.5},
    {"sentence1": "A dog barks.", "sentence2": "A dog barks.", "score": 5.0},
    {"sentence1": "A plane is taking off.", "sentence2": "An air plane is taking off.", "score": 5.0},
]


def test_graded_pairs_give_positives_above_the_threshold_and_count_skips(tmp_path):
    result = read_examples(str(write_jsonl(tmp_path / "train.jsonl", GRADED)), threshold=4.0)
    assert result.examples.features == EXAMPLE_FEATURES
    assert result.examples.to_list() == [{"query": "A plane is taking off.", "positive": "An air plane is taking off.",
                                          "task": "symmetric", "language": "en"}]
    assert set(result.corpus) == {"A plane is taking off.", "An air plane is taking off.", "A man plays a flute.",
                                  "A man is playing a large flute."}
    assert result.report.rows == 5
    assert result.report.skipped == {"empty text": 1, "identical query and passage": 1, "repeated pair": 1}
    assert "train.jsonl:3" in result.report.summary()


def test_labelled_pairs_keep_entailment_and_label_one(tmp_path):
    rows = [{"sentence1": "a", "sentence2": "b", "label": "entailment"},
            {"sentence1": "a", "sentence2": "c", "label": "contradiction"},
            {"sentence1": "d", "sentence2": "e", "label": 1}, {"sentence1": "f", "sentence2": "g", "label": 0}]
    result = read_examples(str(write_jsonl(tmp_path / "nli.jsonl", rows)))
    assert [(r["query"], r["positive"]) for r in result.examples] == [("a", "b"), ("d", "e")]


def test_csv_with_query_and_positive_columns_is_read_as_examples(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("query,positive,task\nwhat is tea,tea is a drink,asymmetric\n", encoding="utf-8")
    result = read_examples(str(path))
    assert result.examples.to_list() == [{"query": "what is tea", "positive": "tea is a drink",
                                          "task": "asymmetric", "language": "en"}]


def test_chinese_text_is_detected_as_zh(tmp_path):
    rows = [{"sentence1": "一架飞机要起飞了。", "sentence2": "一架飞机正在起飞。", "score": 5.0}]
    assert read_examples(str(write_jsonl(tmp_path / "zh.jsonl", rows))).examples[0]["language"] == "zh"


def test_a_missing_column_names_the_file_row_and_column(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [GRADED[0], {"sentence1": "x", "score": 1.0}])
    with pytest.raises(DataError, match=r"bad.jsonl:2: missing column 'sentence2'"):
        read_examples(str(path))


def test_a_non_numeric_score_and_broken_json_are_named(tmp_path):
    with pytest.raises(DataError, match=r"s.jsonl:1: column 'score' must be a number"):
        read_examples(str(write_jsonl(tmp_path / "s.jsonl", [{"sentence1": "a", "sentence2": "b", "score": "hi"}])))
    path = tmp_path / "broken.jsonl"
    path.write_text('{"sentence1": "a", "sentence2": "b", "score": 1}\n{"sentence1": \n')
    with pytest.raises(DataError, match=r"broken.jsonl:2: not valid JSON"):
        read_examples(str(path))


def beir(tmp_path: Path, corpus: list[dict], queries: list[dict], qrels: list[tuple]) -> Path:
    folder = tmp_path / "beir"
    write_jsonl(folder / "corpus.jsonl", corpus)
    write_jsonl(folder / "queries.jsonl", queries)
    lines = ["query-id\tcorpus-id\tscore"] + ["\t".join(map(str, row)) for row in qrels]
    (folder / "qrels").mkdir()
    (folder / "qrels" / "train.tsv").write_text("\n".join(lines) + "\n")
    return folder


CORPUS = [{"_id": "d1", "title": "Tea", "text": "Tea is a drink."}, {"_id": "d2", "title": "", "text": "Coffee."},
          {"_id": "d3", "title": "", "text": ""}]
QUERIES = [{"_id": "q1", "text": "what is tea"}, {"_id": "q2", "text": "what is coffee"},
           {"_id": "q3", "text": "what is milk"}]


def test_beir_folders_give_asymmetric_examples_from_train_qrels(tmp_path):
    folder = beir(tmp_path, CORPUS, QUERIES, [("q1", "d1", 1), ("q2", "d2", 2), ("q3", "d2", 0), ("q3", "d3", 1)])
    result = read_examples(str(folder))
    assert [(r["query"], r["positive"], r["task"]) for r in result.examples] == [
        ("what is tea", "Tea Tea is a drink.", "asymmetric"), ("what is coffee", "Coffee.", "asymmetric")]
    assert result.corpus == ["Tea Tea is a drink.", "Coffee."]
    assert result.report.skipped == {"empty document": 1, "qrel to an empty document": 1,
                                     "query without any positive": 1}


def test_beir_duplicate_ids_and_unknown_qrel_ids_are_errors(tmp_path):
    folder = beir(tmp_path, CORPUS + [CORPUS[0]], QUERIES, [("q1", "d1", 1)])
    with pytest.raises(DataError, match=r"corpus.jsonl:4: duplicate _id 'd1'"):
        read_examples(str(folder))
    folder = beir(tmp_path / "other", CORPUS, QUERIES, [("q1", "d9", 1)])
    with pytest.raises(DataError, match=r"train.tsv:2: corpus-id 'd9' is not in"):
        read_examples(str(folder))


def test_no_positives_at_all_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no positive pairs"):
        read_examples(str(write_jsonl(tmp_path / "low.jsonl", GRADED[1:2])))


def test_limit_draws_a_seeded_subset_and_keeps_the_whole_corpus(tmp_path):
    rows = [{"sentence1": f"q{i}", "sentence2": f"p{i}", "score": 5} for i in range(20)]
    path = str(write_jsonl(tmp_path / "many.jsonl", rows))
    first, again = read_examples(path, limit=5, seed=1), read_examples(path, limit=5, seed=1)
    assert first.examples.to_list() == again.examples.to_list() and len(first.examples) == 5
    assert len(first.corpus) == 40 and first.report.examples == 5


@pytest.mark.parametrize("limit", [-3, 0])
def test_a_limit_below_one_is_refused_before_any_row_is_read(tmp_path, limit):
    never_read = str(tmp_path / "absent.jsonl")
    for read in (read_examples, read_pairs):
        with pytest.raises(DataError, match=f"^--limit {limit}: must be at least 1"):
            read(never_read, limit=limit)


def test_announce_skips_prints_one_line_per_source_and_returns_the_metadata_record(tmp_path, capsys):
    rows = [{"sentence1": "a", "sentence2": "b", "score": 1}, {"sentence1": "a", "sentence2": "b", "score": 2},
            {"sentence1": "c", "sentence2": "c", "score": 3}, {"sentence1": "d", "sentence2": "e", "score": 4},
            {"sentence1": "a", "sentence2": "b", "score": 5}]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    _, report = read_pairs(str(path))
    assert read_report.announce_skips(report) == {
        "rows": 5, "skipped": 3, "reasons": {"identical query and passage": 1, "repeated pair": 2},
        "examples": {"identical query and passage": [f"{path}:3"], "repeated pair": [f"{path}:2", f"{path}:5"]}}
    assert capsys.readouterr().err == (f"{path}: skipped 3 of 5 rows (identical query and passage: 1, repeated pair: "
                                       f"2), e.g. {path}:3, {path}:2\n")
    _, clean = read_pairs(str(write_jsonl(tmp_path / "clean.jsonl", rows[:1])))
    assert read_report.announce_skips(clean) == {"rows": 1, "skipped": 0, "reasons": {}, "examples": {}}
    assert capsys.readouterr().err == ""  # nothing skipped, nothing said


def test_saved_examples_and_corpus_load_back(tmp_path):
    result = read_examples(str(write_jsonl(tmp_path / "train.jsonl", GRADED)))
    save_read(result, tmp_path / "read")
    examples, corpus = load_read(tmp_path / "read")
    assert examples.to_list() == result.examples.to_list() and corpus == result.corpus


def test_a_save_killed_before_the_corpus_leaves_the_older_output_whole(tmp_path, monkeypatch):
    first = read_examples(str(write_jsonl(tmp_path / "train.jsonl", GRADED)))
    save_read(first, tmp_path / "read")
    again = read_examples(str(write_jsonl(tmp_path / "other.jsonl", [{"query": "q", "positive": "p"}])))

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(readers.Dataset, "from_dict", killed)  # examples written, corpus never
    with pytest.raises(KeyboardInterrupt):
        save_read(again, tmp_path / "read")
    assert load_read(tmp_path / "read")[0].to_list() == first.examples.to_list() != again.examples.to_list()
    with pytest.raises(KeyboardInterrupt):
        save_read(again, tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()


def test_read_pairs_gives_soft_targets_for_scores_and_hard_for_labels(tmp_path):
    pairs, report = read_pairs(str(write_jsonl(tmp_path / "g.jsonl", GRADED[:2])))
    assert pairs["target"] == pytest.approx([1.0, 0.76])
    labelled = [{"sentence1": "a", "sentence2": "b", "label": "entailment"},
                {"sentence1": "a", "sentence2": "c", "label": "neutral"}]
    assert read_pairs(str(write_jsonl(tmp_path / "l.jsonl", labelled)))[0]["target"] == [1.0, 0.0]
    with pytest.raises(DataError, match="outside"):
        read_pairs(str(write_jsonl(tmp_path / "h.jsonl", [{"sentence1": "a", "sentence2": "b", "score": 7}])))


def test_unlabelled_pairs_are_read_only_when_asked_for_and_never_as_training_examples(tmp_path):
    rows = [{"sentence1": "a", "sentence2": "b"}, {"sentence1": "a", "sentence2": "a"}]
    path = write_jsonl(tmp_path / "u.jsonl", rows)
    pairs, report = read_pairs(str(path), layout="unlabelled")
    assert len(pairs) == 1 and pairs["target"][0] != pairs["target"][0]  # NaN: no gold
    with pytest.raises(DataError, match="cannot tell the layout"):
        read_pairs(str(path))
    with pytest.raises(DataError, match="unlabelled pairs hold no positives"):
        read_examples(str(path), layout="unlabelled")


def test_hub_class_labels_are_read_as_names_and_unlabelled_rows_are_skipped(monkeypatch):
    from datasets import ClassLabel, Dataset, Features, Value

    import preprocess.readers as readers

    features = Features({"sentence1": Value("string"), "sentence2": Value("string"),
                         "label": ClassLabel(names=["entailment", "neutral", "contradiction"])})
    hub = Dataset.from_dict({"sentence1": ["a dog runs", "a cat sleeps", "a bird sings"],
                             "sentence2": ["an animal moves", "a cat is awake", "a bird is quiet"],
                             "label": [0, 2, -1]}, features=features)
    monkeypatch.setattr(readers, "load_dataset", lambda *args, **kwargs: hub)
    assert [row["label"] for _, row in readers.iter_records("someone/snli", "validation")] == [
        "entailment", "contradiction", None]
    result = read_examples("someone/snli", split="validation")
    assert result.examples["query"] == ["a dog runs"]
    assert result.report.skipped["no gold label"] == 1


@pytest.mark.parametrize("label, positive", [("entailment", True), (" TRUE ", True), (1, True), ("neutral", False),
                                             ("contradiction", False), ("false", False), (0, False)])
def test_one_rule_says_which_label_is_positive_for_the_readers_and_the_evaluation_loader(tmp_path, label, positive):
    from evaluation.loaders import load_labelled_pairs
    from preprocess.readers import positive_label

    assert positive_label(label, "here") is positive
    path = tmp_path / "pairs.jsonl"
    other = {"sentence1": "c", "sentence2": "d", "label": "neutral" if positive else "entailment"}  # both classes
    rows = [{"sentence1": "a", "sentence2": "b", "label": label}, other]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert [bool(gold) for gold in load_labelled_pairs(str(path)).gold] == [positive, not positive]
    assert read_pairs(str(path), layout="labelled")[0]["target"] == [float(positive), float(not positive)]


def test_a_label_outside_the_rule_is_refused_by_the_readers_and_the_loader_alike(tmp_path):
    from evaluation.loaders import load_labelled_pairs

    path = tmp_path / "pairs.jsonl"
    rows = [{"sentence1": "a", "sentence2": "b", "label": "entailed"}, {"sentence1": "c", "sentence2": "d", "label": 0}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    for read in (lambda: read_pairs(str(path), layout="labelled"), lambda: load_labelled_pairs(str(path))):
        with pytest.raises(DataError, match=r"pairs.jsonl:1: field 'label' must be one of entailment"):
            read()
    assert read_pairs(str(path), layout="labelled", positive_labels=["entailed"])[0]["target"] == [1.0, 0.0]
