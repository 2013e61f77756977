"""Which kind of model a path or hub id is, and loading it as a scorer (``evaluation.scorers``).

Kinds: ``d2llm`` (a checkpoint whose ``config.json`` has ``model_type: d2llm``), ``sentence-transformers`` (a
folder with ``modules.json``), ``bi-encoder`` (a ``baselines.bi_encoder.BiEncoder`` folder, with ``bi_encoder.json``),
``teacher`` (a ``.gguf`` file or a causal-LM checkpoint, read as a yes/no cross-encoder, optionally with a LoRA
adapter from teacher adaptation).
"""

from __future__ import annotations

import json
import os
from typing import Any

from baselines.bi_encoder import SETTINGS_FILE as BI_ENCODER_FILE
from common.cli_errors import ModelError
from evaluation.scorers import BM25FirstStage, CosineScorer, CrossEncoderScorer, D2LLMScorer, Scorer

MODEL_TYPES = ("d2llm", "sentence-transformers", "bi-encoder", "teacher")


def detect_model_type(name_or_path: str) -> str:
    """One of :data:`MODEL_TYPES`, from the files of a local folder or hub repository."""
    if str(name_or_path).endswith(".gguf"):
        if not os.path.isfile(name_or_path):
            raise ModelError(f"{name_or_path}: no such file")
        return "teacher"
    config = _json_file(name_or_path, "config.json")
    if config.get("model_type") == "d2llm":
        return "d2llm"
    if _json_file(name_or_path, "modules.json"):
        return "sentence-transformers"
    if _json_file(name_or_path, BI_ENCODER_FILE):
        return "bi-encoder"
    if any(name.endswith("ForCausalLM") for name in config.get("architectures") or ()):
        return "teacher"
    raise ModelError(f"{name_or_path}: cannot tell what kind of model this is (config model_type "
                     f"{config.get('model_type')!r}); pass --model-type, one of {MODEL_TYPES}")


def load_d2llm(name_or_path: str, device: str | None = None) -> Any:
    """A D2LLM checkpoint via ``AutoModel`` (remote code); anything else raises :class:`ModelError`."""
    from transformers import AutoModel

    found = _json_file(name_or_path, "config.json").get("model_type")
    if found != "d2llm":
        raise ModelError(f"{name_or_path}: not a D2LLM checkpoint (config.json model_type is {found!r}, "
                         "expected 'd2llm')")
    try:
        model = AutoModel.from_pretrained(name_or_path, trust_remote_code=True)
    except OSError as error:  # a damaged or missing weights file (the remote code's CheckpointError names it)
        raise ModelError(str(error)) from None
    return model.to(device or _default_device()).eval()


def load_scorer(
    name_or_path: str,
    model_type: str = "auto",
    *,
    teacher_adapter: str | None = None,
    language: str = "en",
    batch_size: int = 32,
    rerank_depth: int = 100,
    first_stage: str = "bm25",
    device: str | None = None,
    max_query_tokens: int | None = None,
    max_passage_tokens: int | None = None,
    teacher_dtype: str | None = None,
) -> Scorer:
    """The scorer of a model. Cross-encoders rerank the ``rerank_depth`` best documents of ``first_stage``
    (``bm25``, or the path of a bi-encoder: a D2LLM or sentence-transformers model) and cut each query and
    passage to ``max_query_tokens`` / ``max_passage_tokens`` (None: those the adapter was trained with, recorded
    by ``adapt_teacher``, else the teacher's defaults) and run in ``teacher_dtype`` (``YesNoTeacher.from_pretrained``:
    None is float32 on a CPU)."""
    kind = detect_model_type(name_or_path) if model_type == "auto" else model_type
    if kind not in MODEL_TYPES:
        raise ModelError(f"--model-type must be auto or one of {MODEL_TYPES}, got {kind!r}")
    if teacher_adapter and kind != "teacher":
        raise ModelError(f"--teacher-adapter applies to a teacher, but {name_or_path} is a {kind} model")
    lengths = {key: value for key, value in (("max_query_tokens", max_query_tokens),
                                             ("max_passage_tokens", max_passage_tokens)) if value is not None}
    if lengths and kind != "teacher":
        raise ModelError(f"--max-query-tokens / --max-passage-tokens apply to a teacher, but {name_or_path} is a "
                         f"{kind} model")
    if kind == "d2llm":
        return D2LLMScorer(load_d2llm(name_or_path, device), batch_size)
    if kind == "sentence-transformers":
        from sentence_transformers import SentenceTransformer

        return CosineScorer(SentenceTransformer(name_or_path, device=device or _default_device()), batch_size)
    if kind == "bi-encoder":
        from baselines.bi_encoder import BiEncoder

        return CosineScorer(BiEncoder.from_pretrained(name_or_path).to(device or _default_device()), batch_size)
    from teacher.model import YesNoTeacher

    teacher = YesNoTeacher.from_pretrained(name_or_path, adapter=teacher_adapter, language=language, device=device,
                                           dtype=teacher_dtype, **lengths)
    if first_stage == "bm25":
        retriever = BM25FirstStage(language)
    else:
        retriever = load_scorer(first_stage, batch_size=batch_size, device=device)
        if isinstance(retriever, CrossEncoderScorer):
            raise ModelError(f"--first-stage {first_stage} is a cross-encoder; use bm25 or a bi-encoder")
        retriever.name = first_stage
    return CrossEncoderScorer(teacher, retriever, depth=rerank_depth, batch_size=batch_size)


def _json_file(name_or_path: str, filename: str) -> dict[str, Any]:
    """A JSON file of a local folder or hub repository; ``{}`` if it has none."""
    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, filename)
        if not os.path.isfile(path):
            return {}
    elif os.path.exists(name_or_path) or name_or_path.startswith((".", "/")):
        raise ModelError(f"{name_or_path}: not a model folder (nor a .gguf file)")
    else:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        try:
            path = hf_hub_download(name_or_path, filename)
        except EntryNotFoundError:
            return {}
        except Exception as error:  # noqa: BLE001 - offline, unknown repository, ...
            raise ModelError(f"{name_or_path}: no such folder, and not reachable as a hub model ({error})") from error
    with open(path, encoding="utf-8") as handle:
        try:
            return json.load(handle)
        except json.JSONDecodeError as error:
            raise ModelError(f"{path}: not valid JSON ({error.msg})") from None


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
