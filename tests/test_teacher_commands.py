"""The adapt and score commands chained on a tiny causal LM saved to disk: adapter in, scored batches out."""

from __future__ import annotations

import json

import torch
from datasets import load_from_disk
from teacher_tiny import tiny_mined
from tiny import tiny_llama, tiny_tokenizer
from transformers import LlamaForCausalLM

from common.schema import SCORED_BATCH_FEATURES
from teacher import adapt, score
from teacher import model as teacher_command
from teacher.model import YesNoTeacher


def test_adapt_then_score_commands_produce_an_adapter_and_scored_batches_at_its_token_limits(tmp_path, capsys):
    torch.manual_seed(0)
    model_dir = tmp_path / "tiny-llm"
    LlamaForCausalLM(tiny_llama(max_position_embeddings=256)).save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"sentence1": f"the {w} sat", "sentence2": f"a {w} ran", "score": s}) + "\n"
                             for w, s in (("cat", 5.0), ("dog", 1.0), ("bird", 4.0), ("fish", 0.5))))
    mined = tmp_path / "mined"
    tiny_mined(6, k=2).save_to_disk(str(mined))

    adapter = tmp_path / "adapter"
    adapt.main(["--teacher", str(model_dir), "--output", str(adapter), "--train-pairs", str(pairs),
                        "--train-mined", str(mined), "--mined-objective", "pointwise", "--batch-size", "4",
                        "--lora-r", "4", "--max-query-tokens", "6", "--max-passage-tokens", "5", "--dev-pairs",
                        str(pairs), "--dtype", "float32"])
    report = json.loads((adapter / adapt.REPORT_FILE).read_text())
    assert report["train_size"] == 4 + 2 * 6 and len(report["losses"]) == 4
    assert set(report["dev_before"]["pairs"]) == {"spearman", "pairs"}

    output = tmp_path / "scored"
    score.main(["--input", str(mined), "--output", str(output), "--teacher", str(model_dir), "--adapter",
                str(adapter), "--batch-size", "3", "--shard-batches", "1", "--dtype", "float32"])
    assert json.loads((output / score.RUN_FILE).read_text())["compute"]["dtype"] == "float32"
    scored = load_from_disk(str(output))
    assert scored.features == SCORED_BATCH_FEATURES and len(scored) == 2

    capsys.readouterr()
    teacher_command.main(["--model", str(model_dir), "--adapter", str(adapter), "--pairs", str(pairs), "--limit", "2",
                          "--device", "cpu", "--dtype", "float32"])
    # on the CPU in float32 (on a GPU the default is bfloat16), as the batches were scored with --dtype float32
    teacher = YesNoTeacher.from_pretrained(str(model_dir), adapter=str(adapter), device="cpu", dtype="float32")
    cat, dog = teacher.probability(["the cat sat", "the dog sat"], ["a cat ran", "a dog ran"], "symmetric").tolist()
    assert capsys.readouterr().out.splitlines() == [f"p(yes)={cat:.3f} gold=5.0 | the cat sat | a cat ran",
                                                    f"p(yes)={dog:.3f} gold=1.0 | the dog sat | a dog ran"]
    assert teacher.settings() == {"max_query_tokens": 6, "max_passage_tokens": 5}
    assert YesNoTeacher.from_pretrained(str(model_dir), adapter=str(adapter), max_query_tokens=9,
                                       device="cpu").settings() == {
        "max_query_tokens": 9, "max_passage_tokens": 5}
    assert YesNoTeacher.from_pretrained(str(model_dir), device="cpu").settings() == {"max_query_tokens": 128,
                                                                                     "max_passage_tokens": 384}
    row = scored[0]
    expected = teacher.score(row["queries"], row["positives"], row["task"])
    assert torch.allclose(torch.tensor(row["teacher_hard_logits"])[:, 0], expected, atol=1e-4)
