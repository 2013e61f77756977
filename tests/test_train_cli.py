"""train.py end to end on a tiny Llama backbone folder: configuration files, saving, resuming, refusing, pushing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from transformers import AutoModel

import train
from data_collator import ScoredBatchError
from modeling_d2llm import D2LLMModel
from scored_fixture import scored_dataset, scored_rows, to_dataset
from tiny import PICKLES
from distil.losses import LOSS_COMPONENTS
from trainer_d2llm import TRAINABLE_STATE_FILE


def _config(path: Path, backbone: str, scored: str, **overrides) -> str:
    values = {
        "model_name_or_path": backbone, "pma_num_heads": 4, "iem_hidden_size": 16, "lora_r": 4, "lora_alpha": 8,
        "lora_dropout": 0.0, "train_dataset": scored, "output_dir": str(path / "out"), "max_steps": 2,
        "logging_steps": 1, "save_strategy": "no", "report_to": [], "use_cpu": True, "disable_tqdm": True,
        "learning_rate": 1e-3, "head_learning_rate": 1e-2,
    }
    values.update(overrides)
    config = path / "config.yaml"
    config.write_text(yaml.safe_dump(values))
    return str(config)


def test_config_file_values_are_overridden_by_command_line_options(tmp_path):
    config = _config(tmp_path, "backbone-dir", "data-dir", gamma=0.5,
                     query_instructions={"symmetric": "query: "})
    model_args, data_args, training_args = train.parse_arguments(
        [config, "--max_steps", "7", "--lora_r", "2", "--batch_size", "4",
         "--passage_instructions", '{"asymmetric": "passage: "}'])
    assert (model_args.model_name_or_path, model_args.lora_r, model_args.pma_num_heads) == ("backbone-dir", 2, 4)
    assert model_args.head_settings()["query_instructions"] == {"symmetric": "query: "}
    assert model_args.head_settings()["passage_instructions"] == {"asymmetric": "passage: "}
    assert (data_args.train_dataset, data_args.batch_size) == ("data-dir", 4)
    assert (training_args.max_steps, training_args.gamma, training_args.per_device_train_batch_size) == (7, 0.5, 1)
    json_config = tmp_path / "config.json"
    json_config.write_text(json.dumps({"train_dataset": "x", "lora_target_modules": "q_proj, v_proj"}))
    model_args, _, _ = train.parse_arguments([str(json_config)])
    assert model_args.lora_targets() == ["q_proj", "v_proj"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("train_dataset: x\nlearning_rat: 0.1\n")
    with pytest.raises(ValueError, match="unknown option.*learning_rat"):
        train.parse_arguments([str(bad)])
    with pytest.raises(ValueError, match="train_dataset is required"):
        train.parse_arguments(["--output_dir", str(tmp_path)])


def test_train_py_saves_a_merged_model_for_automodel_plus_adapter_and_model_card_with_eval(tmp_path, backbone, scored):
    config = _config(tmp_path, backbone, scored, save_strategy="steps", save_steps=1)
    trainer = train.main([config, "--save_adapter", "true", "--eval_dataset", scored])
    output = tmp_path / "out"
    assert (output / "checkpoint-1" / TRAINABLE_STATE_FILE).is_file()
    assert not [path for pattern in PICKLES for path in output.rglob(pattern)]  # no pickles from training
    logged = [entry for entry in trainer.state.log_history if "total" in entry]
    assert len(logged) == 2 and all(set(LOSS_COMPONENTS) <= set(entry) for entry in logged)

    trained = trainer.model.eval()
    texts = ["what the cat dog", "the cat dog sat", "the money loan rate"]
    with torch.no_grad():
        embeddings = trained.encode(texts, convert_to_tensor=True)
        expected = trained.similarity(embeddings[:1], embeddings[1:], "symmetric")
    merged = AutoModel.from_pretrained(str(output), trust_remote_code=True)
    assert not merged.has_lora and merged.tokenizer is not None
    adapter = D2LLMModel.from_pretrained(str(output / train.ADAPTER_SUBDIR))
    assert adapter.has_lora
    for reloaded in (merged, adapter):
        with torch.no_grad():
            got = reloaded.encode(texts, convert_to_tensor=True)
            assert torch.allclose(got, embeddings, atol=1e-5)
            assert torch.allclose(reloaded.similarity(got[:1], got[1:], "symmetric"), expected, atol=1e-5)

    card = (output / "README.md").read_text()
    assert backbone in card and scored in card and "alpha = 1.0" in card and "gamma = 0.01" in card
    assert "B = 4 queries per batch, K = 3 hard negatives" in card and "| ci_inbatch |" in card
    assert "| eval_loss |" in card


def test_bad_input_is_refused_before_anything_is_written(tmp_path, backbone):
    rows = scored_rows(num_batches=3)
    rows[2]["negatives"][1] = rows[2]["negatives"][1][:2]
    bad = tmp_path / "bad-scored"
    to_dataset(rows).save_to_disk(str(bad))
    config = _config(tmp_path, backbone, str(bad))
    with pytest.raises(ScoredBatchError, match=r"batch 2 \(row 2\): column 'negatives'"):
        train.main([config])
    assert not (tmp_path / "out").exists()
    good = tmp_path / "good-scored"
    scored_dataset(num_batches=2).save_to_disk(str(good))
    with pytest.raises(ScoredBatchError, match="configured fixed batch size is 8"):
        train.main([_config(tmp_path, backbone, str(good)), "--batch_size", "8"])
    assert not (tmp_path / "out").exists()


def test_resume_from_the_last_checkpoint_continues_the_run(tmp_path, backbone, scored):
    config = _config(tmp_path, backbone, scored, save_strategy="steps", save_steps=1)
    with pytest.raises(ValueError, match="holds no checkpoint"):
        train.main([config, "--resume_from_checkpoint", "last"])
    assert train.resolve_checkpoint(None, str(tmp_path)) is None
    first = train.main([config, "--max_steps", "2"])
    resumed = train.main([config, "--max_steps", "3", "--resume_from_checkpoint", "last"])
    assert resumed.state.global_step == 3
    steps = {entry["step"]: entry for entry in resumed.state.log_history if "total" in entry}
    earlier = {entry["step"]: entry for entry in first.state.log_history if "total" in entry}
    assert sorted(steps) == [1, 2, 3] and steps[2]["total"] == earlier[2]["total"]


class LocalHub:
    """Stands in for ``huggingface_hub.HfApi``: repositories are folders under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.created: list[str] = []

    def create_repo(self, repo_id: str, token=None, private=None, exist_ok=False):
        self.created.append(repo_id)
        (self.root / repo_id).mkdir(parents=True, exist_ok=exist_ok)
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, repo_id: str, folder_path: str, ignore_patterns=(), path_in_repo=None, **kwargs):
        shutil.copytree(folder_path, self.root / repo_id, ignore=shutil.ignore_patterns(*ignore_patterns),
                        dirs_exist_ok=True)
        return SimpleNamespace(repo_id=repo_id)


def test_push_to_hub_uploads_the_merged_model_and_a_generated_card(tmp_path, backbone, scored, monkeypatch):
    import transformers.trainer

    hub = LocalHub(tmp_path / "hub")
    monkeypatch.setattr(transformers.trainer, "hf_api", lambda: hub)
    config = _config(tmp_path, backbone, scored, save_strategy="steps", save_steps=1)
    train.main([config, "--push_to_hub", "true", "--hub_model_id", "someone/d2llm-tiny"])
    repo = tmp_path / "hub" / "someone" / "d2llm-tiny"
    assert hub.created == ["someone/d2llm-tiny"]
    assert {"config.json", "model.safetensors", "modeling_d2llm.py", "README.md"} <= {p.name for p in repo.iterdir()}
    assert not list(repo.glob("checkpoint-*"))
    card = (repo / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers") and "# someone/d2llm-tiny" in card
    assert AutoModel.from_pretrained(str(repo), trust_remote_code=True).config.model_type == "d2llm"
