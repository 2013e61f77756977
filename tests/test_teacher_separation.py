"""The teacher-separation report at the end of scoring: mean p(yes) on positives, hard negatives and in-batch
pairs, the warning for a teacher with little to teach, and its record in the scored dataset's run file."""

from __future__ import annotations

import json
import logging
import math

import pytest
from scored_fixture import scored_rows, to_dataset
from teacher_tiny import tiny_mined, tiny_teacher

from teacher.score import (
    RUN_FILE,
    SEPARATION_KEY,
    SEPARATION_THRESHOLD,
    ScoringConfig,
    report_teacher_separation,
    score_dataset,
    teacher_separation,
)


def _p(margin: float) -> float:
    return 1.0 / (1.0 + math.exp(-margin))


def _row(hard_margins: list[list[float]], inbatch_margins: list[list[float]] | None) -> dict:
    """A stored batch whose teacher logits are ``[m / 2, -m / 2]`` for the given margins ``m = l_yes - l_no``."""
    size, candidates = len(hard_margins), len(hard_margins[0])
    row = scored_rows(num_batches=1, batch_size=size, num_negatives=candidates - 1)[0]
    row["teacher_hard_logits"] = [[[m / 2, -m / 2] for m in line] for line in hard_margins]
    row["teacher_inbatch_logits"] = ([[[m / 2, -m / 2] for m in line] for line in inbatch_margins]
                                     if inbatch_margins is not None else [])
    return row


def test_separation_is_the_mean_p_yes_over_pairs_hand_computed():
    first = _row([[2.0, 0.0, -1.0], [1.0, -2.0, 0.0]], [[9.0, -1.0], [3.0, 9.0]])
    second = _row([[4.0, 0.5, 0.5]], [[9.0]])  # B = 1: no off-diagonal pair
    got = teacher_separation(to_dataset([first, second]))
    assert got["mean_p_yes_positives"] == pytest.approx((_p(2.0) + _p(1.0) + _p(4.0)) / 3)
    assert got["mean_p_yes_hard_negatives"] == pytest.approx(
        (_p(0.0) + _p(-1.0) + _p(-2.0) + _p(0.0) + _p(0.5) + _p(0.5)) / 6)
    assert got["mean_p_yes_inbatch"] == pytest.approx((_p(-1.0) + _p(3.0)) / 2)  # the diagonal is left out


def test_separation_marks_inbatch_absent_when_batches_hold_no_inbatch_scores(tmp_path, caplog):
    scored = to_dataset([_row([[3.0, -3.0], [2.0, -2.0]], None)])
    with caplog.at_level(logging.INFO, logger="teacher.score"):
        got = report_teacher_separation(scored, tmp_path)
    assert got["mean_p_yes_inbatch"] is None
    assert "in-batch pairs absent" in caplog.text
    assert json.loads((tmp_path / RUN_FILE).read_text())[SEPARATION_KEY]["mean_p_yes_inbatch"] is None


def test_a_teacher_that_barely_separates_is_warned_about_and_a_clear_one_is_not(tmp_path, caplog):
    # p(yes) 0.58 on positives against 0.54 on hard negatives (as measured on the main job's batches): warned
    barely = to_dataset([_row([[math.log(0.58 / 0.42), math.log(0.54 / 0.46)]], None)])
    clear = to_dataset([_row([[3.0, -3.0]], None)])
    for scored, warned in ((barely, True), (clear, False)):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="teacher.score"):
            report_teacher_separation(scored, tmp_path)
        warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
        assert bool(warnings) == warned
        if warned:
            assert "little to teach" in warnings[0].getMessage() and f"{SEPARATION_THRESHOLD:.2f}" in caplog.text


def test_scoring_records_the_separation_beside_its_fingerprint(tmp_path):
    output = tmp_path / "scored"
    scored = score_dataset(tiny_mined(6, 2), tiny_teacher(), output, ScoringConfig(batch_size=3))
    run = json.loads((output / RUN_FILE).read_text())
    assert run["fingerprint"] and run[SEPARATION_KEY]["threshold"] == SEPARATION_THRESHOLD
    expected = teacher_separation(scored)
    for name, value in expected.items():
        assert value is not None and 0.0 < value < 1.0 and run[SEPARATION_KEY][name] == pytest.approx(value)
    # the recorded separation does not stop the finished output from being recognised
    assert score_dataset(tiny_mined(6, 2), tiny_teacher(), output, ScoringConfig(batch_size=3)).to_list() == \
        scored.to_list()
