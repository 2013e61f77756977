"""evaluate_model.py: one code path for D2LLM checkpoints, teachers and bi-encoders; bad input exits non-zero."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from evaluation_tiny import (LABELS, QRELS, QUERIES, STS_ROWS, save_tiny_d2llm, write_beir, write_jsonl, write_nli,
                             write_sts)
from teacher_tiny import tiny_teacher
from tiny import tiny_bert, tiny_llama, tiny_tokenizer
from transformers import BertModel, LlamaForCausalLM

from common import embedded_models
from evaluate_model import main
from evaluation.loaders import load_retrieval
from evaluation.models import ModelError, detect_model_type, load_d2llm, load_scorer
from evaluation.scorers import BM25FirstStage, CosineScorer, CrossEncoderScorer, D2LLMScorer

FIRST = ["the cat sat on the mat", "what is the capital of france", "a dog ran"]
SECOND = ["a cat sat", "paris is the capital city of france", "the sun is a star"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_d2llm(tmp_path_factory.mktemp("d2llm"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    return {"sts": str(write_sts(folder / "sts.jsonl")), "nli": str(write_nli(folder / "nli.jsonl")),
            "beir": str(write_beir(folder / "beir"))}


def run_cli(capsys, *args: str) -> tuple[int, dict | None, str]:
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if code == 0 else None, captured.err


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    for rank, index in enumerate(order):
        ranks[index] = float(rank)
    return ranks


def _hand_spearman(scores: list[float], gold: list[float]) -> float:
    """Pearson correlation of the ranks (no ties in either list here)."""
    a, b = _ranks(scores), _ranks(gold)
    mean = (len(a) - 1) / 2
    covariance = sum((x - mean) * (y - mean) for x, y in zip(a, b))
    return covariance / sum((x - mean) ** 2 for x in a)


def _hand_pair_metrics(scores: list[float], positive: list[bool]) -> tuple[float, float]:
    """Average precision (mean precision at each positive, best first) and the best accuracy of a cut."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    hits, precisions = 0, []
    for rank, index in enumerate(order, start=1):
        if positive[index]:
            hits += 1
            precisions.append(hits / rank)
    accuracies = [(sum(positive[i] for i in order[:cut]) + sum(not positive[i] for i in order[cut:])) / len(order)
                  for cut in range(len(order) + 1)]
    return sum(precisions) / len(precisions), max(accuracies)


def _hand_retrieval(run: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """NDCG@10 (the grade as gain, 1 / log2(rank + 1)), MRR@10 and Recall@100 of ranked id lists."""
    ndcg, mrr, recall = [], [], []
    for query, grades in qrels.items():
        relevant = {doc: grade for doc, grade in grades.items() if grade > 0}
        ranked = run[query]
        dcg = sum(relevant.get(doc, 0) / math.log2(rank + 1) for rank, doc in enumerate(ranked[:10], start=1))
        ideal = sum(grade / math.log2(rank + 1)
                    for rank, grade in enumerate(sorted(relevant.values(), reverse=True), start=1))
        ndcg.append(dcg / ideal)
        mrr.append(next((1 / rank for rank, doc in enumerate(ranked[:10], start=1) if doc in relevant), 0.0))
        recall.append(len(set(ranked[:100]) & set(relevant)) / len(relevant))
    return {"ndcg_at_10": sum(ndcg) / len(ndcg), "mrr_at_10": sum(mrr) / len(mrr),
            "recall_at_100": sum(recall) / len(recall)}


def test_cli_evaluates_a_d2llm_checkpoint_on_every_layout(checkpoint, data, tmp_path, capsys):
    output = tmp_path / "results.json"
    code, report, _ = run_cli(capsys, "--model", checkpoint, "--sts", data["sts"], "--pairs", data["nli"],
                              "--beir", data["beir"], "--output", output, "--device", "cpu")
    assert code == 0 and report["model_type"] == "d2llm"
    sts, pairs, retrieval = report["results"]
    assert (sts["task"], sts["pairs"], pairs["task"], pairs["pairs"]) == ("sts", 6, "pair_classification", 6)
    assert (retrieval["queries"], retrieval["documents"]) == (3, 6) and "reranked" not in retrieval
    # the same metrics worked out by hand from the model's own IEM scores
    model = load_d2llm(str(checkpoint), "cpu")
    first, second, gold = (list(column) for column in zip(*STS_ROWS))
    with torch.no_grad():
        symmetric = model.similarity_pairwise(model.encode_query(first, task="symmetric", convert_to_tensor=True),
                                              model.encode_document(second, task="symmetric", convert_to_tensor=True),
                                              "symmetric").tolist()
    assert sts["spearman"] == pytest.approx(_hand_spearman(symmetric, gold), abs=1e-6)
    average_precision, accuracy = _hand_pair_metrics(symmetric, [label == "entailment" for label in LABELS])
    assert pairs["average_precision"] == pytest.approx(average_precision, abs=1e-6)
    assert pairs["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    judged = {query: {doc: grade for q, doc, grade in QRELS if q == query} for query, _, _ in QRELS}
    corpus = load_retrieval(data["beir"]).corpus
    with torch.no_grad():
        scores = model.similarity(model.encode_query([QUERIES[q] for q in judged], convert_to_tensor=True),
                                  model.encode_document(list(corpus.values()), convert_to_tensor=True))
    ids = list(corpus)
    ranked = {query: [ids[i] for i in torch.argsort(row, descending=True).tolist()]
              for query, row in zip(judged, scores)}
    expected = _hand_retrieval(ranked, judged)
    for name in ("ndcg_at_10", "mrr_at_10", "recall_at_100"):
        assert retrieval[name] == pytest.approx(expected[name], abs=1e-4), name
    assert json.loads(output.read_text()) == report


def test_cli_output_replaces_an_older_file_whole_or_not_at_all(checkpoint, data, tmp_path, capsys, monkeypatch):
    output = tmp_path / "results.json"
    output.write_text("the older results\n")
    write_text = Path.write_text

    def killed_midway(path: Path, text: str, *args, **kwargs) -> int:
        if path.name == output.name:
            write_text(path, text[: len(text) // 2], *args, **kwargs)
            raise RuntimeError("killed while writing")
        return write_text(path, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", killed_midway)
    with pytest.raises(RuntimeError, match="killed while writing"):
        main(["--model", str(checkpoint), "--sts", data["sts"], "--output", str(output), "--device", "cpu"])
    monkeypatch.undo()
    assert output.read_text() == "the older results\n"  # not half of the new file
    capsys.readouterr()
    assert run_cli(capsys, "--model", checkpoint, "--sts", data["sts"], "--output", output, "--device", "cpu")[0] == 0
    assert json.loads(output.read_text())["results"][0]["pairs"] == 6


def test_d2llm_pair_scores_are_the_symmetric_iem_scores(checkpoint):
    model = load_d2llm(str(checkpoint), "cpu")
    scores = D2LLMScorer(model).score_pairs(FIRST, SECOND, "symmetric")
    with torch.no_grad():
        expected = model.similarity_pairwise(model.encode_query(FIRST, task="symmetric", convert_to_tensor=True),
                                             model.encode_document(SECOND, task="symmetric", convert_to_tensor=True),
                                             "symmetric")
    torch.testing.assert_close(torch.as_tensor(scores), expected)


def test_d2llm_retrieval_is_exact_top_k_over_the_whole_corpus(checkpoint, data):
    model = load_d2llm(str(checkpoint), "cpu")
    corpus = load_retrieval(data["beir"]).corpus
    run = D2LLMScorer(model, batch_size=2).retrieve(QUERIES, corpus, top_k=3)
    with torch.no_grad():
        scores = model.similarity(model.encode_query(list(QUERIES.values()), convert_to_tensor=True),
                                  model.encode_document(list(corpus.values()), convert_to_tensor=True))
    doc_ids = list(corpus)
    for row, query in enumerate(QUERIES):
        best = torch.topk(scores[row], 3)
        assert list(run[query]) == [doc_ids[i] for i in best.indices]
        assert list(run[query].values()) == pytest.approx(best.values.tolist(), abs=1e-5)


def test_teacher_scores_are_yes_no_log_odds_ordered_like_its_probability():
    teacher = tiny_teacher()
    scores = CrossEncoderScorer(teacher, BM25FirstStage()).score_pairs(FIRST, SECOND, "symmetric")
    logits = teacher.score(FIRST, SECOND, "symmetric")
    torch.testing.assert_close(torch.as_tensor(scores), logits[:, 0] - logits[:, 1])
    probability = teacher.probability(FIRST, SECOND, "symmetric")
    assert torch.argsort(torch.as_tensor(scores)).tolist() == torch.argsort(probability).tolist()


def test_teacher_retrieval_reranks_only_the_bm25_shortlist(data):
    corpus = load_retrieval(data["beir"]).corpus
    teacher = tiny_teacher()
    run = CrossEncoderScorer(teacher, BM25FirstStage(), depth=2).retrieve(QUERIES, corpus, top_k=10)
    shortlist = BM25FirstStage().retrieve(QUERIES, corpus, 2)
    assert run["q4"] == {} == shortlist["q4"]  # no term in common with the corpus: nothing to rerank
    for query, docs in run.items():
        assert set(docs) == set(shortlist[query])
        if not docs:
            continue
        logits = teacher.score([QUERIES[query]] * len(docs), [corpus[d] for d in docs], "asymmetric")
        assert list(docs.values()) == pytest.approx((logits[:, 0] - logits[:, 1]).tolist(), abs=1e-5)
        assert list(docs.values()) == sorted(docs.values(), reverse=True)


def test_bm25_first_stage_finds_the_lexical_match(data):
    corpus = load_retrieval(data["beir"]).corpus
    run = BM25FirstStage().retrieve({"q": "banana fruit"}, corpus, 1)
    assert list(run["q"]) == ["d5"]


def test_cli_evaluates_a_teacher_folder_by_reranking(data, tmp_path, capsys):
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama()).save_pretrained(tmp_path / "teacher")
    tiny_tokenizer().save_pretrained(tmp_path / "teacher")
    code, report, _ = run_cli(capsys, "--model", tmp_path / "teacher", "--sts", data["sts"],
                              "--beir", data["beir"], "--rerank-depth", 3, "--batch-size", 4)
    assert code == 0 and report["model_type"] == "teacher"
    assert report["results"][1]["reranked"] == {"first_stage": "bm25", "depth": 3}


def test_teacher_token_limits_reach_the_teacher_and_are_refused_for_other_models(checkpoint, tmp_path):
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama()).save_pretrained(tmp_path / "teacher")
    tiny_tokenizer().save_pretrained(tmp_path / "teacher")
    scorer = load_scorer(str(tmp_path / "teacher"), "teacher", max_query_tokens=7, max_passage_tokens=9)
    assert (scorer.teacher.max_query_tokens, scorer.teacher.max_passage_tokens) == (7, 9)
    default = load_scorer(str(tmp_path / "teacher"), "teacher", max_passage_tokens=9)
    assert (default.teacher.max_query_tokens, default.teacher.max_passage_tokens) == (128, 9)
    with pytest.raises(ModelError, match="apply to a teacher"):
        load_scorer(str(checkpoint), "d2llm", max_passage_tokens=9)


def test_teacher_can_rerank_a_bi_encoder_shortlist_but_not_a_cross_encoder_one(checkpoint, data, tmp_path, capsys):
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama()).save_pretrained(tmp_path / "teacher")
    tiny_tokenizer().save_pretrained(tmp_path / "teacher")
    code, report, _ = run_cli(capsys, "--model", tmp_path / "teacher", "--beir", data["beir"],
                              "--first-stage", checkpoint, "--rerank-depth", 2)
    assert code == 0 and report["results"][0]["reranked"] == {"first_stage": str(checkpoint), "depth": 2}
    code, _, err = run_cli(capsys, "--model", tmp_path / "teacher", "--beir", data["beir"],
                           "--first-stage", tmp_path / "teacher")
    assert code == 2 and "is a cross-encoder" in err


def test_cosine_scorer_takes_any_object_with_encode():
    class Encoder:  # only encode(texts, batch_size), as bi_encoder.BiEncoder
        def encode(self, texts, batch_size=32):
            return torch.tensor([[float(len(t)), 1.0] for t in texts])

    scores = CosineScorer(Encoder()).score_pairs(["ab", "abcd"], ["ab", "a"], "symmetric")
    expected = [1.0, (4 * 1 + 1) / ((17 ** 0.5) * (2 ** 0.5))]
    assert scores.tolist() == pytest.approx(expected, abs=1e-6)


def test_cli_evaluates_the_embedded_minilm_offline(data, capsys):
    code, report, _ = run_cli(capsys, "--model", embedded_models.minilm_dir(), "--sts", data["sts"],
                              "--device", "cpu")
    assert code == 0 and report["model_type"] == "sentence-transformers"
    assert report["results"][0]["spearman"] > 0.5


def test_eval_file_missing_a_field_exits_2_naming_file_line_field(checkpoint, tmp_path, capsys):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"sentence1": "a cat", "sentence2": "a dog", "score": 1},
                                                {"sentence1": "a cat", "score": 2}])
    code, _, err = run_cli(capsys, "--model", checkpoint, "--sts", path)
    assert code == 2 and "bad.jsonl:2: missing field 'sentence2'" in err


def test_qrels_id_absent_from_corpus_exits_2(checkpoint, tmp_path, capsys):
    folder = write_beir(tmp_path / "beir", qrels=[("q1", "nope", 1)])
    code, _, err = run_cli(capsys, "--model", checkpoint, "--beir", folder)
    assert code == 2 and "test.tsv:2: corpus-id 'nope' is not in" in err


def test_empty_corpus_exits_2(checkpoint, tmp_path, capsys):
    folder = write_beir(tmp_path / "beir", qrels=[], corpus={})
    code, _, err = run_cli(capsys, "--model", checkpoint, "--beir", folder)
    assert code == 2 and "corpus has no documents" in err


def test_non_d2llm_checkpoint_where_one_is_required_exits_2(data, tmp_path, capsys):
    BertModel(tiny_bert()).save_pretrained(tmp_path / "bert")
    code, _, err = run_cli(capsys, "--model", tmp_path / "bert", "--model-type", "d2llm", "--sts", data["sts"])
    assert code == 2 and "not a D2LLM checkpoint" in err and "'bert'" in err


def test_unrecognised_model_asks_for_model_type(tmp_path):
    BertModel(tiny_bert()).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match="pass --model-type"):
        detect_model_type(str(tmp_path / "bert"))


def test_constant_scores_exit_2_with_the_metric_named(data, capsys, monkeypatch):
    monkeypatch.setattr(CosineScorer, "pairwise", lambda self, q, p, task: torch.zeros(len(q)))
    code, _, err = run_cli(capsys, "--model", embedded_models.minilm_dir(), "--sts", data["sts"], "--device", "cpu")
    assert code == 2 and "Spearman correlation is undefined" in err


def test_pair_scores_embed_each_distinct_text_once_and_keep_the_pair_order(checkpoint):
    model = load_d2llm(str(checkpoint), "cpu")
    scorer = D2LLMScorer(model)
    calls: list[list[str]] = []
    embed = scorer.embed
    scorer.embed = lambda texts, side, task: calls.append(list(texts)) or embed(texts, side, task)
    first, second = [FIRST[0], FIRST[1], FIRST[0]], [SECOND[0], SECOND[1], SECOND[2]]
    scores = scorer.score_pairs(first, second, "symmetric")
    assert calls[0] == [FIRST[0], FIRST[1]] and calls[1] == second  # the repeated premise ran once
    one_by_one = [D2LLMScorer(model).score_pairs([a], [b], "symmetric")[0] for a, b in zip(first, second)]
    torch.testing.assert_close(torch.as_tensor(scores), torch.as_tensor(one_by_one), rtol=1e-5, atol=1e-5)
