"""Head warm-up: cached token states give the same loss and head gradients as the frozen backbone, the cache is
refused when anything it depends on changes, resumes from its pieces, and train.py runs warm-up then end to end."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from scored_fixture import scored_dataset, tiny_student
from test_train_cli import LocalHub, _config

import train
from common.hardware import resolve_dtype
from data_collator import D2LLMDataCollator
from distil import token_state_cache
from distil.head_warmup import HEADS_FILE, LOG_FILE, WARMUP_DIR, CachedStatesCollator, run_head_warmup
from distil.losses import LOSS_COMPONENTS
from distil.token_state_cache import CACHE_FILE, CacheMismatchError, build_cache, collator_texts
from heads_d2llm import head_state_dict
from trainer_d2llm import D2LLMTrainer, D2LLMTrainingArguments

TASKS = ["symmetric", "asymmetric"]
FLOAT32 = resolve_dtype("float32")


def _frozen_student(**config):
    model = tiny_student(query_instructions={"symmetric": "query "}, **config)
    for param in model.backbone.parameters():
        param.requires_grad_(False)
    return model


def _step(trainer: D2LLMTrainer, model, inputs) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = trainer.compute_loss(model, inputs)
    loss.backward()
    return loss.item(), {name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None}


@pytest.mark.parametrize("half, tolerance", [(False, 1e-5), (True, 2e-3)])
def test_one_warmup_step_on_cached_states_matches_an_end_to_end_step_with_the_backbone_frozen(tmp_path, half,
                                                                                              tolerance):
    model = _frozen_student()
    dataset = scored_dataset(num_batches=2, tasks=TASKS)
    args = D2LLMTrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to=[])
    trainer = D2LLMTrainer(model=model, args=args, train_dataset=dataset)
    base = D2LLMDataCollator.from_model(model)
    texts = collator_texts(dataset, base)
    cached = CachedStatesCollator(base, build_cache(model, texts, tmp_path / "cache", FLOAT32, half=half,
                                                    piece_size=16))
    for row in dataset:
        loss, grads = _step(trainer, model, base([row]))
        cached_loss, cached_grads = _step(trainer, model, cached([row]))
        assert set(grads) == set(cached_grads) and set(grads) <= set(head_state_dict(model))  # none in the backbone
        assert {name for name in grads if name.startswith("pma.")} == {n for n, _ in model.pma.named_parameters(
            prefix="pma")}
        assert abs(loss - cached_loss) <= tolerance * max(1.0, abs(loss))
        for name in grads:
            assert torch.allclose(grads[name], cached_grads[name], atol=tolerance, rtol=tolerance), name


def test_a_cache_of_another_backbone_token_limit_or_dataset_is_refused(tmp_path):
    model = _frozen_student()
    texts = collator_texts(scored_dataset(num_batches=2, tasks=TASKS), D2LLMDataCollator(model.tokenizer, TASKS))
    build_cache(model, texts, tmp_path / "cache", FLOAT32)
    stamp = (tmp_path / "cache" / CACHE_FILE).stat().st_mtime_ns
    assert len(build_cache(model, texts, tmp_path / "cache", FLOAT32)) == len(texts)  # reused, not rebuilt
    assert (tmp_path / "cache" / CACHE_FILE).stat().st_mtime_ns == stamp
    others = {"backbone": (_frozen_student(seed=1), texts), "texts": (model, texts[:-1])}
    shorter = _frozen_student(max_seq_length=4)
    others["max length"] = (shorter, texts)
    for what, (other, other_texts) in others.items():
        with pytest.raises(CacheMismatchError, match="fingerprint differs"):
            build_cache(other, other_texts, tmp_path / "cache", FLOAT32)
    with pytest.raises(CacheMismatchError):
        build_cache(model, texts, tmp_path / "cache", resolve_dtype("bfloat16"))


def test_a_trained_lora_changes_the_backbone_fingerprint_and_the_cache_built_before_is_refused(tmp_path):
    model = tiny_student()
    texts = collator_texts(scored_dataset(num_batches=2, tasks=TASKS), D2LLMDataCollator(model.tokenizer, TASKS))
    build_cache(model, texts, tmp_path / "cache", FLOAT32)
    before = token_state_cache.backbone_digest(model)
    lora = [param for name, param in model.backbone.named_parameters() if "lora_" in name]
    optimizer = torch.optim.SGD(lora, lr=0.5)
    batch = model.tokenizer(texts[:4], padding=True, return_tensors="pt")
    for _ in range(2):  # the first step moves only the B matrices (A's gradient is zero while B is)
        optimizer.zero_grad()
        states = model.backbone_states(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        states.pow(2).mean().backward()
        optimizer.step()
    assert any(param.any() for name, param in model.backbone.named_parameters() if "lora_B" in name)
    assert token_state_cache.backbone_digest(model) != before
    with pytest.raises(CacheMismatchError, match="fingerprint differs"):
        build_cache(model, texts, tmp_path / "cache", FLOAT32)


def test_a_killed_cache_build_resumes_from_its_finished_pieces(tmp_path, monkeypatch):
    model = _frozen_student()
    texts = collator_texts(scored_dataset(num_batches=3, tasks=TASKS), D2LLMDataCollator(model.tokenizer, TASKS))
    whole = build_cache(model, texts, tmp_path / "whole", FLOAT32, piece_size=8)
    build_cache(model, texts, tmp_path / "cache", FLOAT32, piece_size=8)
    pieces = sorted((tmp_path / "cache").glob("piece-*.safetensors"))
    assert len(pieces) >= 3
    (tmp_path / "cache" / CACHE_FILE).unlink()  # as if killed before the end
    pieces[-1].unlink()
    encoded = []
    original = token_state_cache._encode_piece
    monkeypatch.setattr(token_state_cache, "_encode_piece",
                        lambda model, texts, *args: encoded.append(len(texts)) or original(model, texts, *args))
    resumed = build_cache(model, texts, tmp_path / "cache", FLOAT32, piece_size=8)
    assert len(encoded) == 1
    states, mask = resumed.states(texts)
    expected_states, expected_mask = whole.states(texts)
    assert torch.equal(mask, expected_mask) and torch.equal(states, expected_states)
    assert states.dtype == torch.float32 and mask.sum(1).min() > 0


def test_train_py_warms_the_heads_up_then_trains_end_to_end_and_a_rerun_reuses_the_warmup(tmp_path, backbone,
                                                                                          scored):
    config = _config(tmp_path, backbone, scored, head_warmup_epochs=1)
    trainer = train.main([config])
    folder = tmp_path / "out" / WARMUP_DIR
    heads = load_file(str(folder / HEADS_FILE))
    warmup_log = [entry for entry in json.loads((folder / LOG_FILE).read_text()) if "total" in entry]
    assert len(warmup_log) == 6 and all(set(LOSS_COMPONENTS) <= set(entry) for entry in warmup_log)  # 6 batches
    assert len(list((folder / "token_states").glob("piece-*.safetensors"))) == 1
    end_to_end = [entry for entry in trainer.state.log_history if "total" in entry]
    assert len(end_to_end) == 2
    lora = [param for name, param in trainer.model.named_parameters() if "lora_" in name]
    assert lora and all(param.requires_grad for param in lora)

    fresh = train.build_model(train.parse_arguments([config])[0])
    assert any(not torch.equal(heads[name], value) for name, value in head_state_dict(fresh).items())
    stamp = (folder / HEADS_FILE).stat().st_mtime_ns
    rerun = train.main([config, "--max_steps", "1"])  # the warm-up is not run again: its heads are loaded
    assert (folder / HEADS_FILE).stat().st_mtime_ns == stamp
    first = [entry for entry in rerun.state.log_history if "total" in entry][0]
    assert first["total"] == end_to_end[0]["total"]

    (tmp_path / "r").mkdir()
    recompute = train.main([_config(tmp_path / "r", backbone, scored, head_warmup_epochs=1,
                                    output_dir=str(tmp_path / "recompute")), "--head_warmup_states", "recompute"])
    recompute_log = [entry for entry in json.loads((tmp_path / "recompute" / WARMUP_DIR / LOG_FILE).read_text())
                     if "total" in entry]
    assert not (tmp_path / "recompute" / WARMUP_DIR / "token_states").exists()
    assert recompute_log[0]["total"] == pytest.approx(warmup_log[0]["total"], rel=2e-3)
    assert recompute.state.global_step == 2


def test_push_to_hub_leaves_the_warmup_folder_and_its_cache_out(tmp_path, backbone, scored, monkeypatch):
    import transformers.trainer

    hub = LocalHub(tmp_path / "hub")
    monkeypatch.setattr(transformers.trainer, "hf_api", lambda: hub)
    train.main([_config(tmp_path, backbone, scored, head_warmup_epochs=1, max_steps=1), "--push_to_hub", "true",
                "--hub_model_id", "someone/warm"])
    assert (tmp_path / "out" / WARMUP_DIR / HEADS_FILE).is_file()
    repo = tmp_path / "hub" / "someone" / "warm"
    assert (repo / "model.safetensors").is_file() and not list(repo.rglob("*token_states*"))
    assert not (repo / WARMUP_DIR).exists()


class _FinishedTrainer:
    """Stands in for ``D2LLMTrainer``: a warm-up that has just finished, with a two-step log history."""

    def __init__(self, **kwargs) -> None:
        self.state = SimpleNamespace(log_history=[{"step": 1, "total": 2.0}, {"step": 2, "total": 1.5}])
        self.accelerator = SimpleNamespace(wait_for_everyone=lambda: None)

    def train(self) -> None:
        pass

    def is_world_process_zero(self) -> bool:
        return True


def test_a_warmup_killed_while_writing_its_log_leaves_neither_a_half_log_nor_heads(tmp_path, monkeypatch):
    model = tiny_student()
    args = SimpleNamespace(output_dir=str(tmp_path), head_warmup_epochs=1, head_warmup_states="recompute")
    folder = tmp_path / WARMUP_DIR
    write_text = Path.write_text

    def killed_midway(path: Path, text: str, *more, **kwargs) -> int:
        if path.name == LOG_FILE:
            write_text(path, text[: len(text) // 2], *more, **kwargs)
            raise RuntimeError("killed while writing the log")
        return write_text(path, text, *more, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Path, "write_text", killed_midway)
        with pytest.raises(RuntimeError, match="killed while writing the log"):
            run_head_warmup(model, None, args, _FinishedTrainer)
    assert not (folder / LOG_FILE).exists() and not (folder / HEADS_FILE).exists()  # the warm-up runs again
    run_head_warmup(model, None, args, _FinishedTrainer)
    assert json.loads((folder / LOG_FILE).read_text()) == [{"step": 1, "total": 2.0}, {"step": 2, "total": 1.5}]
    assert set(load_file(str(folder / HEADS_FILE))) == set(head_state_dict(model))
