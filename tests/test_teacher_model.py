"""The yes/no teacher: prompt order, truncation, padding-independent scores, features, answer words."""

from __future__ import annotations

import json

import pytest
import torch
from teacher_tiny import TINY_PROMPTS, tiny_teacher

from teacher.model import YesNoTeacher, length_sorted_batches
from teacher.prompts import PROMPTS, TaskPrompt, load_prompts

QUERIES = ["the cat sat on the mat", "what is the capital of france", "dog"]
PASSAGES = ["a cat sat", "paris is the capital city of france and a big city on a river",
            "the dog ran fast in the garden on a sunny day"]


@pytest.fixture(scope="module")
def teacher() -> YesNoTeacher:
    return tiny_teacher()


def test_default_prompts_put_query_then_passage_then_the_instruction():
    for language, tasks in PROMPTS.items():
        for task, prompt in tasks.items():
            text = prompt.format("QUERY", "PASSAGE")
            assert text.index("QUERY") < text.index("PASSAGE")
            assert len(text) - text.index("PASSAGE") > 40, (language, task)  # the instruction comes last
    assert PROMPTS["zh"]["symmetric"].yes == "是" and PROMPTS["zh"]["asymmetric"].no == "不能"


def test_a_template_with_the_instruction_first_is_refused():
    with pytest.raises(ValueError, match="end with the task instruction"):
        TaskPrompt("judge this: {query} {passage}", "yes", "no")
    with pytest.raises(ValueError, match="before"):
        TaskPrompt("{passage} {query} answer", "yes", "no")


def test_prompts_file_overrides_one_language_and_task(tmp_path):
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps({"fr": {"symmetric": {"template": "{query} / {passage} : oui ou non ?",
                                                     "yes": " oui", "no": " non"}}}))
    prompts = load_prompts(path)
    assert prompts["fr"]["symmetric"].yes == " oui" and prompts["en"] == PROMPTS["en"]


def test_scores_do_not_depend_on_what_a_pair_is_batched_with(teacher):
    together = teacher.score(QUERIES, PASSAGES, "symmetric", batch_size=3)
    alone = torch.cat([teacher.score([q], [p], "symmetric") for q, p in zip(QUERIES, PASSAGES)])
    assert together.shape == (3, 2) and together.dtype == torch.float32
    assert torch.allclose(together, alone, atol=1e-5)


def test_scores_match_a_full_forward_of_the_prompt(teacher):
    ids = teacher.encode_pairs(QUERIES[:1], PASSAGES[:1], "asymmetric")[0]
    full = teacher.model(torch.tensor([ids])).logits[0, -1, list(teacher.answer_ids("asymmetric"))]
    assert torch.allclose(teacher.score(QUERIES[:1], PASSAGES[:1], "asymmetric")[0], full, atol=1e-5)


def test_features_are_the_last_layer_state_at_the_final_prompt_token(teacher):
    logits, features = teacher.score(QUERIES, PASSAGES, "symmetric", return_features=True)
    assert features.shape == (3, teacher.model.config.hidden_size)
    ids = teacher.encode_pairs(QUERIES[2:], PASSAGES[2:], "symmetric")[0]
    states = teacher.model(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0, -1]
    assert torch.allclose(features[2], states, atol=1e-5)


def test_truncation_cuts_query_and_passage_but_keeps_the_instruction(teacher):
    short = tiny_teacher()
    short.max_query_tokens, short.max_passage_tokens = 2, 3
    ids = short.encode_pairs(["the cat sat on the mat"], ["the dog ran fast in the garden"], "symmetric")[0]
    text = short.tokenizer.decode(ids)
    assert text == TINY_PROMPTS["en"]["symmetric"].format("the cat", "the dog ran")


def test_probability_is_the_two_way_softmax_with_temperature(teacher):
    logits = teacher.score(QUERIES, PASSAGES, "symmetric")
    for temperature in (1.0, 0.5):
        expected = torch.softmax(logits / temperature, dim=-1)[:, 0]
        assert torch.allclose(teacher.probability(QUERIES, PASSAGES, "symmetric", temperature=temperature), expected)


def test_answer_words_must_start_with_different_tokens(teacher):
    clash = YesNoTeacher(teacher.model, teacher.tokenizer,
                         prompts={"en": {"symmetric": TaskPrompt("{query} {passage} answer", "yes no", "yes")}})
    with pytest.raises(ValueError, match="different first tokens"):
        clash.answer_ids("symmetric")
    with pytest.raises(KeyError, match="no teacher prompt for language 'de'"):
        teacher.answer_ids("symmetric", "de")


def test_length_sorted_batches_cover_every_pair_once_longest_first():
    sequences = [[0] * n for n in (3, 9, 1, 7, 5)]
    batches = length_sorted_batches(sequences, 2)
    assert batches == [[1, 3], [4, 0], [2]]
