"""Checkpoints load through AutoModel with trust_remote_code in a fresh process and score identically."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel

from configuration_d2llm import D2LLMConfig
from modeling_d2llm import D2LLMModel
from remote import run_isolated
from tiny import tiny_llama, tiny_tokenizer

QUERIES = ["what is the capital of france", "the cat sat"]
PASSAGES = ["paris is the capital of france", "a dog ran in the garden", "the cat sat on the mat"]

# Encodes and scores in the isolated process; writes the scores next to the checkpoint.
SCORE_IN_FRESH_PROCESS = """
import torch
from safetensors.torch import save_file
from transformers import AutoModel
model = AutoModel.from_pretrained({path!r}, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
q = model.encode_query({queries!r}, convert_to_tensor=True)
p = model.encode_document({passages!r}, convert_to_tensor=True)
with torch.no_grad():
    save_file({{"symmetric": model.similarity(q, p, task="symmetric").contiguous(),
               "asymmetric": model.similarity(q, p, task="asymmetric").contiguous()}}, {out!r})
"""


def scores(model: D2LLMModel) -> dict[str, torch.Tensor]:
    q = model.encode_query(QUERIES, convert_to_tensor=True)
    p = model.encode_document(PASSAGES, convert_to_tensor=True)
    with torch.no_grad():
        return {task: model.similarity(q, p, task=task) for task in ("symmetric", "asymmetric")}


def fresh_process_scores(path: Path, tmp_path: Path, block: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    out = tmp_path / "fresh_scores.safetensors"
    run_isolated(SCORE_IN_FRESH_PROCESS.format(path=str(path), queries=QUERIES, passages=PASSAGES, out=str(out)),
                 cwd=tmp_path, block=block)
    return load_file(out)


def assert_same_scores(expected: dict[str, torch.Tensor], actual: dict[str, torch.Tensor]) -> None:
    for task in expected:
        torch.testing.assert_close(actual[task], expected[task], atol=1e-5, rtol=1e-5)


def tiny_model(**overrides) -> D2LLMModel:
    torch.manual_seed(0)
    config = D2LLMConfig(backbone_config=tiny_llama().to_dict(), pma_num_heads=4, iem_hidden_size=16,
                         query_instructions={"asymmetric": "query "}, **overrides)
    model = D2LLMModel(config).eval()
    model.tokenizer = tiny_tokenizer()
    return model


def perturb_lora(model: D2LLMModel) -> None:
    """LoRA B starts at zero; give it values so the adapter changes the output."""
    torch.manual_seed(1)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.3)


def perturb_heads(model: D2LLMModel) -> None:
    """Give PMA and every IEM branch values unlike their start (the distance init's branches are identities, which
    would hide swapped or dropped branch weights)."""
    torch.manual_seed(3)
    for module in (model.pma, model.iem):
        for parameter in module.parameters():
            torch.nn.init.normal_(parameter, std=0.3)


def test_saved_checkpoint_scores_identically_in_fresh_process(tmp_path):
    model = tiny_model()
    perturb_heads(model)
    model.save_pretrained(tmp_path / "ckpt")
    files = {p.name for p in (tmp_path / "ckpt").iterdir()}
    assert {"config.json", "model.safetensors", "modeling_d2llm.py", "configuration_d2llm.py", "backbone_d2llm.py",
            "tokenizer.json"} <= files
    assert_same_scores(scores(model), fresh_process_scores(tmp_path / "ckpt", tmp_path))


def test_trained_pma_weights_survive_loading_a_mean_init_checkpoint(tmp_path):
    model = tiny_model(pma_init="mean")
    torch.manual_seed(2)
    for parameter in model.pma.parameters():  # as after training: nothing like the mean init
        torch.nn.init.normal_(parameter, std=0.3)
    model.save_pretrained(tmp_path / "ckpt")
    assert_same_scores(scores(model), fresh_process_scores(tmp_path / "ckpt", tmp_path))


def test_merged_lora_checkpoint_loads_without_peft(tmp_path):
    model = tiny_model().enable_lora(r=4, lora_alpha=8, lora_dropout=0.0)
    perturb_lora(model)
    expected = scores(model)
    model.save_pretrained(tmp_path / "merged")
    assert not any("lora" in key for key in load_file(tmp_path / "merged" / "model.safetensors"))
    assert model.has_lora, "saving must not unwrap the training model"
    assert_same_scores(expected, fresh_process_scores(tmp_path / "merged", tmp_path, block=("peft",)))


def test_adapter_checkpoint_rebuilds_backbone_adapter_and_heads(tmp_path):
    torch.manual_seed(0)
    tiny_model().backbone.save_pretrained(tmp_path / "base")
    tiny_tokenizer().save_pretrained(tmp_path / "base")
    model = D2LLMModel.from_backbone(str(tmp_path / "base"), pma_num_heads=4, iem_hidden_size=16).eval()
    model.enable_lora(r=4, lora_alpha=8, lora_dropout=0.0)
    perturb_lora(model)
    perturb_heads(model)
    expected = scores(model)
    model.save_pretrained(tmp_path / "adapter", merge_lora=False)
    files = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert {"backbone_adapter", "heads.safetensors", "config.json", "modeling_d2llm.py", "configuration_d2llm.py",
            "backbone_d2llm.py"} <= files
    assert "model.safetensors" not in files
    assert_same_scores(expected, fresh_process_scores(tmp_path / "adapter", tmp_path))


def test_tokenizer_is_loaded_lazily_from_the_checkpoint(tmp_path):
    tiny_model().save_pretrained(tmp_path / "ckpt")
    model = D2LLMModel.from_pretrained(tmp_path / "ckpt")
    assert model._tokenizer is None
    assert model.tokenizer.pad_token == "[PAD]"


def test_model_without_tokenizer_says_how_to_attach_one():
    model = D2LLMModel(D2LLMConfig(backbone_config=tiny_llama().to_dict(), pma_num_heads=4, iem_hidden_size=16))
    with pytest.raises(ValueError, match="no tokenizer"):
        model.encode(["dog"])


def test_push_to_hub_writes_the_saved_files(tmp_path, monkeypatch):
    """push_to_hub against a local folder: the network calls are replaced, the files are compared."""
    import transformers.utils.hub as hub

    pushed = tmp_path / "hub" / "user" / "d2llm-tiny"

    class LocalApi:
        def create_repo(self, repo_id, **kwargs):
            return type("Repo", (), {"repo_id": repo_id})()

    def upload(self, working_dir, repo_id, **kwargs):
        shutil.copytree(working_dir, pushed)

    class Card:
        def save(self, path):
            Path(path).write_text("---\nlibrary_name: transformers\n---\n")

    monkeypatch.setattr(hub, "hf_api", lambda: LocalApi())
    monkeypatch.setattr(hub, "create_and_tag_model_card", lambda *args, **kwargs: Card())
    monkeypatch.setattr(D2LLMModel, "_upload_modified_files", upload)
    model = tiny_model()
    model.push_to_hub("user/d2llm-tiny")
    model.save_pretrained(tmp_path / "saved")
    saved = {p.name for p in (tmp_path / "saved").iterdir()}
    assert {p.name for p in pushed.iterdir()} == saved | {"README.md"}
    config = AutoModel.from_pretrained(pushed, trust_remote_code=True).config
    assert config.auto_map == {"AutoConfig": "configuration_d2llm.D2LLMConfig",
                               "AutoModel": "modeling_d2llm.D2LLMModel"}


def test_from_backbone_keeps_pretrained_weights_and_initialises_heads(tmp_path):
    torch.manual_seed(0)
    source = tiny_model()
    source.backbone.save_pretrained(tmp_path / "base")
    tiny_tokenizer().save_pretrained(tmp_path / "base")
    model = D2LLMModel.from_backbone(str(tmp_path / "base"), pma_num_heads=4, iem_hidden_size=16)
    for key, value in source.backbone.state_dict().items():
        torch.testing.assert_close(model.backbone.state_dict()[key], value)
    for name, parameter in list(model.pma.named_parameters()) + list(model.iem.named_parameters()):
        assert torch.isfinite(parameter).all() and parameter.device.type == "cpu", name
    assert model.pma.seeds.std() > 0 and model.iem.first.weight.std() > 0
    assert model.config.backbone_config.model_type == "llama"
    assert model.tokenizer is not None


def test_scores_survive_safetensors_round_trip_of_embeddings(tmp_path):
    """Embeddings cached as safetensors (as the search index does) score like fresh ones."""
    model = tiny_model()
    embeddings = model.encode_document(PASSAGES, convert_to_tensor=True)
    save_file({"embeddings": embeddings}, tmp_path / "e.safetensors")
    cached = load_file(tmp_path / "e.safetensors")["embeddings"]
    q = model.encode_query(QUERIES, convert_to_tensor=True)
    torch.testing.assert_close(model.similarity(q, cached), model.similarity(q, embeddings))
