"""One list of the student's settings (``configuration_d2llm.HEAD_SETTINGS``): train.py offers each with the config's
default, and each survives train.py options -> save_pretrained (merged and adapter forms) -> from_pretrained."""

from __future__ import annotations

import dataclasses
import json

import pytest

import train
from configuration_d2llm import HEAD_SETTING_DEFAULTS, HEAD_SETTINGS, D2LLMConfig
from modeling_d2llm import D2LLMModel

# A value other than the default for every setting.
NON_DEFAULT = {
    "pooling": "mean", "pma_num_heads": 2, "pma_num_seeds": 2, "pma_layer_norm": False, "pma_init": "mean",
    "iem_hidden_size": 6, "iem_dropout": 0.1, "iem_init": "normal", "initializer_range": 0.05,
    "task_names": ["a", "b", "c"], "pooling_layer": -2, "normalize_embeddings": True, "max_seq_length": 33,
    "bidirectional_layers": 1, "query_instructions": {"a": "q: "}, "passage_instructions": {"b": "p: "},
}


def _options(settings: dict) -> list[str]:
    """train.py command-line options giving ``settings``."""
    options = []
    for name, value in settings.items():
        options.append(f"--{name}")
        if isinstance(value, list):
            options += value
        elif isinstance(value, dict):
            options.append(json.dumps(value))
        else:
            options.append(str(value).lower() if isinstance(value, bool) else str(value))
    return options


def test_head_settings_are_every_config_argument_but_the_backbone():
    assert set(HEAD_SETTINGS) <= set(D2LLMConfig().to_dict())  # each is saved in config.json
    assert "backbone_config" not in HEAD_SETTINGS and set(NON_DEFAULT) == set(HEAD_SETTINGS)
    assert all(NON_DEFAULT[name] != HEAD_SETTING_DEFAULTS[name] for name in HEAD_SETTINGS)
    assert D2LLMConfig(**NON_DEFAULT).head_settings() == NON_DEFAULT


def test_train_py_offers_every_head_setting_with_the_config_default():
    fields = {field.name: field for field in dataclasses.fields(train.ModelArguments)}
    assert set(HEAD_SETTINGS) <= set(fields)
    defaults = train.ModelArguments().head_settings()
    assert defaults == {**HEAD_SETTING_DEFAULTS, "task_names": list(HEAD_SETTING_DEFAULTS["task_names"]),
                        "query_instructions": {}, "passage_instructions": {}}


@pytest.mark.parametrize("pooling", ["pma", "mean"])
def test_every_head_setting_round_trips_through_train_options_and_both_checkpoint_forms(tmp_path, backbone, pooling):
    settings = {**NON_DEFAULT, "pooling": pooling}
    model_args, _, _ = train.parse_arguments(["--train_dataset", "unused", "--output_dir", str(tmp_path / "out"),
                                              "--model_name_or_path", backbone, "--lora_r", "2", "--lora_alpha", "4",
                                              *_options(settings)])
    assert model_args.head_settings() == settings
    model = train.build_model(model_args)
    assert model.has_lora and model.config.head_settings() == settings
    model.save_pretrained(tmp_path / "merged")
    model.save_pretrained(tmp_path / "adapter", merge_lora=False)
    for form in ("merged", "adapter"):
        loaded = D2LLMModel.from_pretrained(str(tmp_path / form))
        assert loaded.config.head_settings() == settings, form
        assert loaded.has_lora == (form == "adapter")
