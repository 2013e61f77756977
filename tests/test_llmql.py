"""LLM-QL: Attention Stop, Input Corruption, the query-likelihood loss and the pre-training entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny import PICKLES, tiny_llama, tiny_tokenizer
from transformers import LlamaForCausalLM

from baselines.bi_encoder import BiEncoder
from baselines.llmql import IGNORE_INDEX, QLCollator, attention_stop_mask, corrupt_documents, tokenize_pairs
from baselines.pretrain_ql import main
from common.cli_errors import ModelError
from modeling_d2llm import D2LLMModel

PAIRS = [
    {"query": "what is the capital of france", "positive": "paris is the capital city of france on a river"},
    {"query": "who sat on the mat", "positive": "the cat sat on the mat"},
    {"query": "what do birds do", "positive": "a bird flew in the blue sky at night"},
    {"query": "what is the loan rate", "positive": "the bank money loan interest rate is big"},
]


def tiny_causal_lm(attn: str = "eager") -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = tiny_llama()
    config._attn_implementation = attn
    return LlamaForCausalLM(config)


def test_query_positions_see_only_earlier_query_tokens_and_the_final_document_token():
    tokenizer = tiny_tokenizer()
    inputs = tokenize_pairs(tokenizer, [row["positive"] for row in PAIRS], [row["query"] for row in PAIRS])
    batch = QLCollator(tokenizer, corruption=0.0, mask_dtype=torch.float32)(PAIRS)
    with torch.no_grad():
        out = tiny_causal_lm("eager")(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                      position_ids=batch["position_ids"], output_attentions=True)
    for weights in out.attentions:  # [B, heads, L, L] per layer
        for row, (end, length) in enumerate(zip(inputs.document_end.tolist(), inputs.lengths.tolist())):
            query = weights[row, :, end + 1 : length]
            assert (query[..., :end] == 0).all(), "a query token attends to the document body"
            assert (query[..., end] > 0).all(), "a query token must attend to the final document token"
            assert (query[..., length:] == 0).all()
            document = weights[row, :, : end + 1, : end + 1]
            causal = torch.ones(end + 1, end + 1, dtype=torch.bool).tril()
            assert (document[:, ~causal] == 0).all() and (document[:, causal] > 0).all(), "documents attend causally"


def test_sdpa_with_the_boolean_attention_stop_mask_gives_the_eager_logits():
    tokenizer = tiny_tokenizer()
    inputs = tokenize_pairs(tokenizer, [row["positive"] for row in PAIRS], [row["query"] for row in PAIRS])
    boolean = QLCollator(tokenizer, corruption=0.0)(PAIRS)  # the default: what pretrain_ql gives sdpa
    additive = QLCollator(tokenizer, corruption=0.0, mask_dtype=torch.float32)(PAIRS)
    assert boolean["attention_mask"].dtype == torch.bool and boolean["attention_mask"].dim() == 4
    length = boolean["input_ids"].shape[1]
    padding_only = (torch.arange(length)[None, :] < inputs.lengths[:, None]).long()  # causal, no Attention Stop
    with torch.no_grad():
        sdpa, eager = (tiny_causal_lm(attn)(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                            position_ids=batch["position_ids"]).logits
                       for attn, batch in (("sdpa", boolean), ("eager", additive)))
        causal = tiny_causal_lm("sdpa")(input_ids=boolean["input_ids"], attention_mask=padding_only,
                                        position_ids=boolean["position_ids"]).logits
    for row, (end, n) in enumerate(zip(inputs.document_end.tolist(), inputs.lengths.tolist())):
        torch.testing.assert_close(sdpa[row, :n], eager[row, :n], atol=1e-5, rtol=1e-4)
        assert not torch.allclose(sdpa[row, end + 1 : n], causal[row, end + 1 : n], atol=1e-4), \
            "the query positions must not see the document body"


def test_attention_stop_mask_layout():
    allowed = attention_stop_mask(torch.tensor([2]), torch.tensor([5]), 6)[0, 0].int()
    expected = [[1, 0, 0, 0, 0, 0],   # d1
                [1, 1, 0, 0, 0, 0],   # d2
                [1, 1, 1, 0, 0, 0],   # END
                [0, 0, 1, 1, 0, 0],   # q1
                [0, 0, 1, 1, 1, 0],   # EOS of the query
                [0, 0, 0, 0, 0, 1]]   # padding sees itself only
    assert allowed.tolist() == expected


def test_labels_cover_exactly_the_query_and_its_eos():
    tokenizer = tiny_tokenizer()
    inputs = tokenize_pairs(tokenizer, ["the cat sat"], ["who sat"])
    words = tokenizer(["the cat sat", "who sat"], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    assert inputs.input_ids[0].tolist() == words[0] + [eos] + words[1] + [eos]
    assert inputs.labels[0].tolist() == [IGNORE_INDEX] * 4 + words[1] + [eos]
    assert inputs.document_end.tolist() == [3]


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.6, 1.0])
def test_corruption_masks_the_configured_fraction_of_document_tokens_only(fraction):
    tokenizer = tiny_tokenizer()
    inputs = tokenize_pairs(tokenizer, [row["positive"] for row in PAIRS], [row["query"] for row in PAIRS])
    mask_id = tokenizer.pad_token_id  # never inside a document, so every replacement shows
    corrupted = corrupt_documents(inputs.input_ids, inputs.document_end, fraction, mask_id,
                                  torch.Generator().manual_seed(0))
    for row, end in enumerate(inputs.document_end.tolist()):
        changed = corrupted[row] != inputs.input_ids[row]
        assert int(changed.sum()) == round(fraction * end)
        assert (corrupted[row][changed] == mask_id).all()
        assert not changed[end:].any(), "the final document token and the query stay intact"


def test_query_likelihood_loss_falls_on_a_tiny_task():
    model = tiny_causal_lm("sdpa")
    collator = QLCollator(tiny_tokenizer(), corruption=0.3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = model(**collator(PAIRS)).loss
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.3 * losses[0]


def test_pretrain_ql_entry_point_saves_a_backbone_both_encoders_load(tmp_path):
    base, output = tmp_path / "base", tmp_path / "ql"
    tiny_causal_lm("sdpa").save_pretrained(base)
    tiny_tokenizer().save_pretrained(base)
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({**row, "task": "asymmetric", "language": "en"}) + "\n" for row in PAIRS))
    trainer = main(["--model_name_or_path", str(base), "--train_data", str(data), "--output_dir", str(output),
                    "--max_steps", "12", "--per_device_train_batch_size", "4", "--learning_rate", "1e-2",
                    "--logging_steps", "1", "--save_strategy", "no", "--report_to", "none", "--lora_r", "4",
                    "--use_cpu", "true"])
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 12 and losses[-1] < losses[0]
    assert not any("lora" in name for name in LlamaForCausalLM.from_pretrained(output).state_dict())
    student = D2LLMModel.from_backbone(str(output), pma_num_heads=4, bidirectional_layers=1)
    assert student.encode(["the cat sat"]).shape == (1, 32)
    assert BiEncoder.from_pretrained(str(output)).encode(["the cat sat"]).shape == (1, 32)


def _pairs_file(path: Path) -> Path:
    path.write_text("".join(json.dumps({**row, "task": "asymmetric", "language": "en"}) + "\n" for row in PAIRS))
    return path


def test_pretrain_ql_checkpoints_hold_no_pickle_and_resume(tmp_path):
    base, output = tmp_path / "base", tmp_path / "ql"
    tiny_causal_lm("sdpa").save_pretrained(base)
    tiny_tokenizer().save_pretrained(base)
    options = ["--model_name_or_path", str(base), "--train_data", str(_pairs_file(tmp_path / "pairs.jsonl")),
               "--output_dir", str(output), "--per_device_train_batch_size", "4", "--save_strategy", "steps",
               "--save_steps", "2", "--report_to", "none", "--use_cpu", "true"]
    main([*options, "--max_steps", "2"])
    checkpoint = output / "checkpoint-2"
    assert not [path.name for pattern in PICKLES for path in checkpoint.rglob(pattern)]
    assert {"model.safetensors", "optimizer.safetensors", "rng_state.json", "training_args.json"} <= {
        path.name for path in checkpoint.iterdir()}
    resumed = main([*options, "--max_steps", "3", "--resume_from_checkpoint", str(checkpoint)])
    assert resumed.state.global_step == 3
    assert not [path.name for pattern in PICKLES for path in output.rglob(pattern)]


def test_pretrain_ql_refuses_a_model_folder_that_does_not_load_after_reading_the_pairs(tmp_path):
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(ModelError, match=f"{tmp_path / 'not-a-model'}: does not load as a causal LM"):
        main(["--model_name_or_path", str(tmp_path / "not-a-model"), "--train_data",
              str(_pairs_file(tmp_path / "pairs.jsonl")), "--output_dir", str(tmp_path / "out"), "--report_to",
              "none"])
