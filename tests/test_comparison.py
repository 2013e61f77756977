"""evaluation.comparison: several models on the same held-out sets, each row measured as evaluate_model.py would,
written as one JSON table and one PNG; bad input exits 2 before any model loads."""

from __future__ import annotations

import json

import pytest
from evaluation_tiny import save_tiny_d2llm, write_beir, write_sts

import evaluate_model
from evaluation.comparison import encode_cost, loss_curve, main, render


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("comparison")
    return {"first": str(save_tiny_d2llm(folder / "first", seed=0)),
            "second": str(save_tiny_d2llm(folder / "second", seed=1)),
            "sts": str(write_sts(folder / "sts.jsonl")), "beir": str(write_beir(folder / "beir"))}


def test_each_row_scores_as_evaluate_model_does_and_the_json_and_png_are_written(setup, tmp_path, capsys):
    curve = tmp_path / "log_history.json"
    curve.write_text(json.dumps([{"step": 1, "loss": 0.9}, {"step": 2, "loss": 0.7}, {"train_runtime": 3.0}]))
    output, png = tmp_path / "results.json", tmp_path / "results.png"
    code = main(["--row", "first", "d2llm", setup["first"], "--row", "second", "d2llm", setup["second"],
                 "--sts", setup["sts"], "--beir", setup["beir"], "--curve", str(curve), "--output", str(output),
                 "--plot", str(png)])
    assert code == 0
    report = json.loads(output.read_text())
    assert [row["name"] for row in report["rows"]] == ["first", "second"]
    assert report["curve"] == [{"step": 1, "loss": 0.9}, {"step": 2, "loss": 0.7}]
    assert png.read_bytes()[:4] == b"\x89PNG"
    for row in report["rows"]:
        capsys.readouterr()
        assert evaluate_model.main(["--model", row["path"], "--sts", setup["sts"], "--beir", setup["beir"]]) == 0
        alone = json.loads(capsys.readouterr().out)["results"]
        assert row["metrics"]["spearman"] == pytest.approx(alone[0]["spearman"], abs=1e-6)
        assert row["metrics"]["ndcg_at_10"] == pytest.approx(alone[1]["ndcg_at_10"], abs=1e-6)
        sts_seconds = row["details"][0]["seconds"]  # the timed STS job: 6 pairs of 12 distinct texts
        assert row["details"][0]["task"] == "sts" and sts_seconds > 0
        assert row["cost"] == {"seconds_per_1000": pytest.approx(1000 * sts_seconds / 12), "unit": "texts"}
    rows = report["rows"]
    assert rows[0]["metrics"] != rows[1]["metrics"]  # two seeds, two different untrained students


def test_a_missing_held_out_file_exits_2_with_one_line_naming_it(setup, tmp_path, capsys):
    missing = tmp_path / "nowhere.jsonl"
    code = main(["--row", "first", "d2llm", setup["first"], "--sts", str(missing), "--output",
                 str(tmp_path / "out.json")])
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1 and str(missing) in error
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("text, message", [
    ("[{\"step\": 1, \"loss\": 0.9}", "not valid JSON"),
    ("{\"step\": 1, \"loss\": 0.9}", "expected a Trainer log_history, a JSON list of objects"),
    ("[{\"step\": 1, \"loss\": \"high\"}]", "[0]: step and loss must be numbers, got 1 and 'high'"),
])
def test_a_damaged_curve_exits_2_with_one_line_before_any_row_is_evaluated(setup, tmp_path, capsys, monkeypatch,
                                                                            text, message):
    curve = tmp_path / "log_history.json"
    curve.write_text(text)
    monkeypatch.setattr("evaluation.comparison.load_scorer", lambda *args, **kwargs: pytest.fail("a model loaded"))
    code = main(["--row", "first", "d2llm", setup["first"], "--sts", setup["sts"], "--curve", str(curve),
                 "--output", str(tmp_path / "out.json")])
    error = capsys.readouterr().err
    assert code == 2 and error.splitlines() == [error.strip()] and error.startswith(f"error: {curve}")
    assert message in error and not (tmp_path / "out.json").exists()


def test_a_cross_encoder_costs_per_pair_and_an_encoder_per_distinct_text():
    first, second = ["a", "b", "a"], ["c", "d", "c"]
    assert encode_cost("teacher", first, second, 3.0) == {"seconds_per_1000": 1000.0, "unit": "pairs"}
    assert encode_cost("d2llm", first, second, 2.0) == {"seconds_per_1000": 500.0, "unit": "texts"}


def test_the_table_has_one_line_per_model_and_leaves_unmeasured_cells_empty(tmp_path):
    rows = [{"name": "teacher", "metrics": {"spearman": 0.75}, "cost": {"seconds_per_1000": 41.0, "unit": "pairs"}},
            {"name": "student", "metrics": {"spearman": 0.5, "ndcg_at_10": 0.8},
             "cost": {"seconds_per_1000": 9.0, "unit": "texts"}}]
    lines = render(rows).splitlines()
    assert lines[2] == "| teacher | 0.750 |  | 41.0 per 1,000 pairs |"
    assert lines[3] == "| student | 0.500 | 0.800 | 9.0 |"
    log = tmp_path / "log.json"
    log.write_text(json.dumps([{"loss": 1.0, "step": 5}, {"eval_loss": 2.0, "step": 5}]))
    assert loss_curve(log) == [(5, 1.0)]
