"""A D2LLM checkpoint as an mteb 2.x encoder whose ``similarity`` / ``similarity_pairwise`` are IEM scores.

The IEM has one branch per task kind: retrieval and reranking tasks use ``asymmetric``, every other task type
(STS, pair classification, ...) ``symmetric``. mteb calls ``similarity`` without naming the task, so the
encoder remembers the kind of the task it last encoded for (mteb encodes a task's texts right before scoring
them). Texts encoded as documents get the task's passage instruction, all others its query instruction.

    import mteb
    from evaluation.mteb_encoder import D2LLMEncoder
    mteb.evaluate(D2LLMEncoder.from_pretrained("path/to/checkpoint"), mteb.get_tasks(["STSBenchmark"]))

Needs ``pip install mteb`` (an optional extra of this project).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from mteb.models import ModelMeta
from mteb.models.abs_encoder import AbsEncoder
from mteb.types import PromptType

ASYMMETRIC_TASK_TYPES = ("Retrieval", "Reranking")


def task_kind(task_type: str) -> str:
    """``asymmetric`` for mteb retrieval and reranking task types (``InstructionRetrieval`` too), else
    ``symmetric``."""
    return "asymmetric" if any(kind in task_type for kind in ASYMMETRIC_TASK_TYPES) else "symmetric"


class D2LLMEncoder(AbsEncoder):
    """mteb encoder around a loaded ``D2LLMModel``."""

    def __init__(self, model: Any, name: str = "d2llm/local", revision: str = "local", batch_size: int = 32) -> None:
        self.model = model.eval()
        self.batch_size = batch_size
        self.task = "symmetric"
        self._meta = ModelMeta(
            loader=None, name=name, revision=revision, release_date=None, languages=None,
            n_parameters=sum(p.numel() for p in model.parameters()), memory_usage_mb=None,
            max_tokens=model.config.max_seq_length, embed_dim=model.config.embedding_size, license=None,
            open_weights=True, public_training_code=None, public_training_data=None, framework=["PyTorch"],
            similarity_fn_name=None, use_instructions=bool(model.config.query_instructions), training_datasets=None,
        )

    @classmethod
    def from_pretrained(cls, name_or_path: str, device: str | None = None, **kwargs: Any) -> "D2LLMEncoder":
        from evaluation.models import load_d2llm

        return cls(load_d2llm(name_or_path, device), name=kwargs.pop("name", f"d2llm/{name_or_path}"), **kwargs)

    @property
    def mteb_model_meta(self) -> ModelMeta:
        return self._meta

    def encode(self, inputs, *, task_metadata, hf_split: str, hf_subset: str,
               prompt_type: PromptType | None = None, **kwargs: Any) -> np.ndarray:
        """Embeddings ``[N, D]`` of every text of the batches, with the task kind's instruction."""
        self.task = task_kind(str(task_metadata.type))
        texts = [text for batch in inputs for text in batch["text"]]
        encode = self.model.encode_document if prompt_type == PromptType.document else self.model.encode_query
        return encode(texts, task=self.task, batch_size=kwargs.get("batch_size", self.batch_size),
                      show_progress_bar=kwargs.get("show_progress_bar"))

    @torch.no_grad()
    def similarity(self, embeddings1, embeddings2) -> torch.Tensor:
        """IEM scores of every row of ``embeddings1`` (queries) against every row of ``embeddings2``."""
        return self.model.similarity(_matrix(embeddings1), _matrix(embeddings2), self.task).float().cpu()

    @torch.no_grad()
    def similarity_pairwise(self, embeddings1, embeddings2) -> torch.Tensor:
        """IEM score of each row pair."""
        return self.model.similarity_pairwise(_matrix(embeddings1), _matrix(embeddings2), self.task).float().cpu()


def _matrix(embeddings) -> torch.Tensor:
    embeddings = torch.as_tensor(np.asarray(embeddings) if not isinstance(embeddings, torch.Tensor) else embeddings)
    return embeddings.float()[None] if embeddings.dim() == 1 else embeddings.float()
