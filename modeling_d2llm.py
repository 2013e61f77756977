"""D2LLM: a decomposed LLM bi-encoder whose PMA pooling and IEM scorer emulate a cross-encoder.

Remote-code file, saved with every checkpoint next to ``configuration_d2llm.py``, ``backbone_d2llm.py`` (backbone
loading) and ``heads_d2llm.py`` (PMA and IEM): module-level imports are torch and transformers only (peft, tqdm and
safetensors are imported lazily where needed), so a checkpoint loads with
``AutoModel.from_pretrained(path, trust_remote_code=True)`` anywhere.

Shapes: N texts of T tokens, backbone width d, k PMA seeds, embedding D = k * d, IEM width h.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PretrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

try:  # inside the dynamic-module package of a saved checkpoint
    from .backbone_d2llm import apply_bidirectional_layers, load_backbone, load_tokenizer, mean_pool, split_gguf_path
    from .configuration_d2llm import D2LLMConfig
    from .heads_d2llm import HEADS_FILE, IEM, PMA, distance_init_, head_state_dict, load_heads, mean_init_, save_heads
except ImportError:  # imported from this repository's root
    from backbone_d2llm import apply_bidirectional_layers, load_backbone, load_tokenizer, mean_pool, split_gguf_path
    from configuration_d2llm import D2LLMConfig
    from heads_d2llm import HEADS_FILE, IEM, PMA, distance_init_, head_state_dict, load_heads, mean_init_, save_heads

ADAPTER_DIR = "backbone_adapter"
PROGRESS_BAR_MIN_BATCHES = 8


@dataclass
class D2LLMOutput(ModelOutput):
    """``embeddings``: the PMA-pooled ``[N, D]`` vectors; ``token_states``: the ``[N, T, d]`` states PMA read."""

    embeddings: torch.Tensor | None = None
    token_states: torch.Tensor | None = None


class D2LLMPreTrainedModel(PreTrainedModel):
    config_class = D2LLMConfig
    base_model_prefix = "d2llm"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = False

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, PMA):  # after its children (apply visits them first)
            if getattr(self.config, "pma_init", "normal") == "mean":
                mean_init_(module)
            else:
                init.normal_(module.seeds, mean=0.0, std=self.config.initializer_range)
        role = getattr(module, "iem_role", None)
        if role is not None and getattr(self.config, "iem_init", "normal") == "distance":
            distance_init_(module, role)


class D2LLMModel(D2LLMPreTrainedModel):
    """Backbone + PMA + IEM. ``forward`` embeds token ids; ``similarity`` scores query/passage embeddings."""

    def __init__(self, config: D2LLMConfig) -> None:
        super().__init__(config)
        self.backbone = apply_bidirectional_layers(self._build_backbone(config.backbone_config),
                                                   config.bidirectional_layers)
        self.pma = (PMA(config.hidden_size, config.pma_num_heads, config.pma_num_seeds, config.pma_layer_norm)
                    if config.pooling == "pma" else None)
        self.iem = IEM(config.embedding_size, config.iem_hidden_size, config.task_names, config.iem_dropout)
        self._tokenizer = None
        self.post_init()

    @staticmethod
    def _build_backbone(backbone_config: PretrainedConfig) -> PreTrainedModel:
        model_class = AutoModel._model_mapping[type(backbone_config)]
        extra = {}
        if _accepts(model_class, "add_pooling_layer", method="__init__"):
            extra["add_pooling_layer"] = False  # BERT-style poolers are unused: keep them out of DDP
        return model_class._from_config(backbone_config, **extra)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_backbone(
        cls,
        name_or_path: str,
        *,
        gguf_file: str | None = None,
        dtype: torch.dtype | str | None = None,
        attn_implementation: str | None = None,
        **config_overrides: Any,
    ) -> "D2LLMModel":
        """Pretrained backbone weights (hub id, folder or ``.gguf`` file) plus fresh PMA and IEM heads.

        ``config_overrides`` go to :class:`D2LLMConfig` (``pma_num_heads``, ``iem_hidden_size``, ...).
        """
        name_or_path, gguf_file = split_gguf_path(name_or_path, gguf_file)
        backbone, tokenizer = load_backbone(AutoModel, name_or_path, gguf_file=gguf_file, dtype=dtype,
                                            attn_implementation=attn_implementation)
        config = D2LLMConfig(backbone_config=backbone.config.to_dict(), **config_overrides)
        with torch.device("meta"):
            model = cls(config)
        model.backbone = apply_bidirectional_layers(backbone, config.bidirectional_layers)
        device = next(backbone.parameters()).device
        for head in (module for module in (model.pma, model.iem) if module is not None):
            head.to_empty(device=device)
            head.apply(model._init_weights)
        model.to(backbone.dtype)
        model.config.backbone_config = backbone.config
        model.config._attn_implementation = backbone.config._attn_implementation
        model.tokenizer = tokenizer
        model._gguf_file = gguf_file
        return model

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any):
        """As ``PreTrainedModel.from_pretrained``; an adapter checkpoint (see ``save_pretrained``) rebuilds
        its base backbone, applies the LoRA adapter and loads the PMA/IEM weights."""
        path = str(pretrained_model_name_or_path)
        adapter_base = _adapter_base(path)
        if adapter_base is None:
            weights = os.path.join(path, "model.safetensors")
            with _naming_damaged_weights(weights if os.path.isfile(weights) else path):
                model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
            model._tokenizer_path = path
            return model
        PeftModel = _peft().PeftModel

        config = D2LLMConfig.from_pretrained(path)
        model = cls.from_backbone(adapter_base["name_or_path"], gguf_file=adapter_base.get("gguf_file"),
                                  dtype=kwargs.get("dtype"), **config.head_settings())
        model.backbone = PeftModel.from_pretrained(model.backbone, os.path.join(path, ADAPTER_DIR))
        with _naming_damaged_weights(os.path.join(path, HEADS_FILE)):
            load_heads(model, os.path.join(path, HEADS_FILE))
        model._tokenizer_path = path
        return model

    # ------------------------------------------------------------------ tokenizer
    @property
    def tokenizer(self):
        """The tokenizer saved with the checkpoint, loaded on first use (never in ``__init__``)."""
        if self._tokenizer is None:
            path = getattr(self, "_tokenizer_path", None) or self.config.name_or_path
            if not path:
                raise ValueError("this model has no tokenizer: set `model.tokenizer = ...` or load a checkpoint "
                                 "saved with one")
            self._tokenizer = load_tokenizer(path, trust_remote_code=True)  # this checkpoint's own folder
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, tokenizer) -> None:
        if tokenizer is not None and tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        self._tokenizer = tokenizer

    # ------------------------------------------------------------------ LoRA
    def enable_lora(
        self,
        r: int = 16,
        lora_alpha: int = 32,
        lora_dropout: float = 0.05,
        target_modules: str | list[str] = "all-linear",
        **lora_kwargs: Any,
    ) -> "D2LLMModel":
        """Wrap the backbone with a peft LoRA adapter; the backbone's own weights are frozen, PMA/IEM train."""
        peft = _peft()
        if self.has_lora:
            raise ValueError("the backbone already carries a LoRA adapter")
        lora = peft.LoraConfig(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=target_modules,
                          **lora_kwargs)
        self.backbone = peft.get_peft_model(self.backbone, lora)
        return self

    @property
    def has_lora(self) -> bool:
        return hasattr(self.backbone, "peft_config")

    def backbone_model(self) -> PreTrainedModel:
        """The transformers backbone, unwrapped from peft if LoRA is on."""
        return self.backbone.get_base_model() if self.has_lora else self.backbone

    def merged_state_dict(self) -> dict[str, torch.Tensor]:
        """State dict with every LoRA delta folded into its base weight, under plain (peft-free) names.

        The module is not changed: ``W' = W + get_delta_weight(adapter)`` is computed per LoRA layer.
        """
        if not self.has_lora:
            return self.state_dict()
        LoraLayer = _peft().tuners.lora.LoraLayer
        adapter = self.backbone.active_adapter
        merged: dict[str, torch.Tensor] = {}
        for name, module in self.backbone.get_base_model().named_modules():
            if isinstance(module, LoraLayer):
                base = module.get_base_layer()
                merged[f"backbone.{name}.weight"] = (base.weight + module.get_delta_weight(adapter)).detach()
                if getattr(base, "bias", None) is not None:
                    merged[f"backbone.{name}.bias"] = base.bias.detach()
        for key, value in self.backbone.get_base_model().state_dict().items():
            if "lora_" in key:
                continue
            plain = "backbone." + key.replace(".base_layer.", ".")
            merged.setdefault(plain, value)
        merged.update(head_state_dict(self))
        return merged

    # ------------------------------------------------------------------ saving
    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, merge_lora: bool = True,
                        state_dict: dict[str, torch.Tensor] | None = None, **kwargs: Any) -> None:
        """Save config, weights, the four remote-code files and the tokenizer.

        With LoRA on: ``merge_lora=True`` writes a plain checkpoint with the adapter folded in (loads without
        peft); ``merge_lora=False`` writes the peft adapter (``backbone_adapter/``), the PMA/IEM weights
        (``heads.safetensors``) and a config naming the base backbone, which ``from_pretrained`` rebuilds.
        """
        os.makedirs(save_directory, exist_ok=True)
        if self.has_lora and not merge_lora:
            self._save_adapter(str(save_directory))
        else:
            if state_dict is None or self.has_lora:
                state_dict = self.merged_state_dict()
            plain = self.backbone
            if self.has_lora:  # save under the unwrapped module tree, whose names match the merged dict
                self.backbone = self.backbone.get_base_model()
            try:
                super().save_pretrained(save_directory, *args, state_dict=state_dict, **kwargs)
            finally:
                self.backbone = plain
        if self._tokenizer is not None:
            self._tokenizer.save_pretrained(save_directory)

    def _save_adapter(self, save_directory: str) -> None:
        base_path = self.backbone_model().config.name_or_path
        if not base_path:
            raise ValueError("adapter checkpoints need a backbone loaded by name or path (see from_backbone)")
        config = self.config.to_dict()
        config["lora_adapter_base"] = {"name_or_path": base_path, "gguf_file": getattr(self, "_gguf_file", None)}
        config["auto_map"] = {"AutoConfig": "configuration_d2llm.D2LLMConfig", "AutoModel": "modeling_d2llm.D2LLMModel"}
        self.backbone.save_pretrained(os.path.join(save_directory, ADAPTER_DIR))
        save_heads(self, os.path.join(save_directory, HEADS_FILE))
        from transformers.dynamic_module_utils import custom_object_save

        custom_object_save(self, save_directory, config=self.config)
        with open(os.path.join(save_directory, "config.json"), "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=2, sort_keys=True, default=str)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        return_token_states: bool = False,
        token_states: torch.Tensor | None = None,
        **backbone_kwargs: Any,
    ) -> D2LLMOutput:
        """Encode ``[N, T]`` token ids (any padding side) into pooled ``[N, D]`` embeddings (PMA, or the mean).

        ``token_states [N, T, d]``: the pooled layer's states computed elsewhere (a token-state cache); the
        backbone is then skipped and only the pooling runs.
        """
        reference = next((x for x in (token_states, input_ids, inputs_embeds) if x is not None), None)
        if reference is None:
            raise ValueError("pass input_ids, inputs_embeds or token_states")
        if attention_mask is None:
            attention_mask = torch.ones(reference.shape[:2], dtype=torch.long, device=reference.device)
        states = token_states.to(self.dtype) if token_states is not None else self.backbone_states(
            input_ids, attention_mask, inputs_embeds, **backbone_kwargs)
        embeddings = self.pma(states, attention_mask) if self.pma is not None else mean_pool(states, attention_mask)
        if self.config.normalize_embeddings:
            embeddings = F.normalize(embeddings, dim=-1)
        return D2LLMOutput(embeddings=embeddings, token_states=states if return_token_states else None)

    def backbone_states(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor,
                        inputs_embeds: torch.Tensor | None = None, **backbone_kwargs: Any) -> torch.Tensor:
        """``[N, T, d]`` states of the layer PMA reads (``pooling_layer``)."""
        backbone = self.backbone_model()
        if "position_ids" not in backbone_kwargs and _accepts(backbone, "position_ids"):
            # positions count real tokens only, so left padding does not shift them
            backbone_kwargs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        if _accepts(backbone, "use_cache"):
            backbone_kwargs.setdefault("use_cache", False)
        layer = self.config.pooling_layer
        outputs = self.backbone(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                                output_hidden_states=layer != -1, **backbone_kwargs)
        return outputs.last_hidden_state if layer == -1 else outputs.hidden_states[layer]

    # ------------------------------------------------------------------ scoring
    def score(
        self, query_embeddings: torch.Tensor, passage_embeddings: torch.Tensor, task: str = "asymmetric"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """IEM logits and branch vectors ``(z [...], y_S [..., h])`` of broadcastable ``[..., D]`` pairs."""
        return self.iem(query_embeddings, passage_embeddings, task)

    def similarity_pairwise(
        self, embeddings1: torch.Tensor, embeddings2: torch.Tensor, task: str = "asymmetric"
    ) -> torch.Tensor:
        """IEM logit of each row pair: ``[N, D], [N, D] -> [N]``."""
        embeddings1, embeddings2 = _as_tensor(embeddings1), _as_tensor(embeddings2)
        if embeddings1.shape != embeddings2.shape or embeddings1.dim() != 2:
            raise ValueError(f"similarity_pairwise needs two [N, D] tensors of one shape, got "
                             f"{tuple(embeddings1.shape)} and {tuple(embeddings2.shape)}")
        device = self.iem.first.weight.device
        return self.iem(embeddings1.to(device), embeddings2.to(device), task)[0]

    def similarity(
        self,
        query_embeddings: torch.Tensor,
        passage_embeddings: torch.Tensor,
        task: str = "asymmetric",
        *,
        passage_projections: torch.Tensor | None = None,
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        """IEM logits of every query against every passage: ``[Nq, D], [Np, D] -> [Nq, Np]``.

        Uses the split first layer: ``relu(W1q y_q + b1 + W1p y_p)`` with ``W1p y_p`` computed once per
        passage (or passed in as ``passage_projections [Np, h]``), in passage chunks of at most
        ``chunk_size`` (default: about 2**22 hidden activations per chunk) so memory stays bounded.
        """
        query_embeddings = _as_tensor(query_embeddings)
        if query_embeddings.dim() != 2:
            raise ValueError(f"query embeddings must be [Nq, D], got {tuple(query_embeddings.shape)}")
        device = self.iem.first.weight.device
        queries = self.iem.project_query(query_embeddings.to(device))
        if passage_projections is None:
            passage_embeddings = _as_tensor(passage_embeddings)
            if passage_embeddings.dim() != 2:
                raise ValueError(f"passage embeddings must be [Np, D], got {tuple(passage_embeddings.shape)}")
            passage_projections = self.iem.project_passage(passage_embeddings.to(device))
        return self.iem.similarity(queries, passage_projections.to(device), task, chunk_size=chunk_size)

    def project_passages(self, passage_embeddings: torch.Tensor) -> torch.Tensor:
        """``W1p y_p`` for a corpus, to cache next to its embeddings (``similarity(passage_projections=...)``)."""
        return self.iem.project_passage(_as_tensor(passage_embeddings).to(self.iem.first.weight.device))

    # ------------------------------------------------------------------ text API
    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenize with dynamic padding and the model's ``max_seq_length``."""
        return self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.config.max_seq_length,
                              return_tensors="pt")

    @torch.no_grad()
    def encode(
        self,
        texts: str | Sequence[str],
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        convert_to_tensor: bool = False,
        convert_to_numpy: bool = True,
        instruction: str = "",
    ):
        """Embed texts into ``[N, D]`` (numpy by default, as sentence-transformers does).

        Batches are formed by descending length; the result is in the input's order. A single string gives a
        ``[D]`` vector. ``show_progress_bar=None`` shows a bar when there are many batches.
        """
        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        for position, text in enumerate(items):
            if not isinstance(text, str):
                raise TypeError(f"texts[{position}] is {type(text).__name__}, expected str")
            if not text.strip():
                raise ValueError(f"texts[{position}] is empty")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        order = sorted(range(len(items)), key=lambda i: -len(items[i]))
        starts = range(0, len(order), batch_size)
        if show_progress_bar is None:
            show_progress_bar = len(starts) >= PROGRESS_BAR_MIN_BATCHES
        if show_progress_bar:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="Encoding", unit="batch")
        device = next(self.parameters()).device
        embeddings = torch.empty(len(items), self.config.embedding_size, dtype=torch.float32)
        was_training = self.training
        self.eval()
        try:
            for start in starts:
                index = order[start : start + batch_size]
                batch = self.tokenize([instruction + items[i] for i in index])
                batch = {key: value.to(device) for key, value in batch.items()}
                embeddings[index] = self(**batch).embeddings.float().cpu()
        finally:
            self.train(was_training)
        if single:
            embeddings = embeddings[0]
        if convert_to_tensor or not convert_to_numpy:
            return embeddings
        return embeddings.numpy()

    def encode_query(self, texts: str | Sequence[str], task: str = "asymmetric", **kwargs: Any):
        """``encode`` with the task's query instruction (``config.query_instructions``)."""
        self.iem.task_branch(task)
        return self.encode(texts, instruction=self.config.query_instructions.get(task, ""), **kwargs)

    def encode_document(self, texts: str | Sequence[str], task: str = "asymmetric", **kwargs: Any):
        """``encode`` with the task's passage instruction (``config.passage_instructions``)."""
        self.iem.task_branch(task)
        return self.encode(texts, instruction=self.config.passage_instructions.get(task, ""), **kwargs)

    def rank(self, query: str, passages: Sequence[str], task: str = "asymmetric", top_k: int | None = None,
             **encode_kwargs: Any) -> list[tuple[int, float]]:
        """``(passage index, score)`` pairs for one query, best first."""
        query_embedding = self.encode_query([query], task=task, convert_to_tensor=True, **encode_kwargs)
        passage_embeddings = self.encode_document(passages, task=task, convert_to_tensor=True, **encode_kwargs)
        with torch.no_grad():
            scores = self.similarity(query_embedding, passage_embeddings, task=task)[0].float().cpu()
        top = torch.argsort(scores, descending=True)[: top_k or len(passages)]
        return [(int(i), float(scores[i])) for i in top]


class CheckpointError(OSError):
    """A checkpoint's weights file that cannot be read (truncated, damaged); the message names the file."""


@contextlib.contextmanager
def _naming_damaged_weights(file: str):
    """Re-raise safetensors' errors (whose messages name no file) as a ``CheckpointError`` naming ``file``."""
    try:
        yield
    except Exception as error:
        from safetensors import SafetensorError

        if not isinstance(error, SafetensorError):
            raise
        raise CheckpointError(f"{file}: cannot read the weights ({error}): the file is damaged or was not fully "
                              "written") from None


def _adapter_base(path: str) -> dict | None:
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        return None
    with open(config_file, encoding="utf-8") as handle:
        return json.load(handle).get("lora_adapter_base")


def _accepts(function_owner: Any, argument: str, method: str = "forward") -> bool:
    """Whether ``function_owner.<method>`` takes ``argument`` by name."""
    import inspect

    return argument in inspect.signature(getattr(function_owner, method)).parameters


def _peft():
    """peft, imported on first LoRA use (inside ``try`` so that loading a merged checkpoint never needs it)."""
    try:
        import peft
        import peft.tuners.lora
    except ImportError as error:
        raise ImportError("LoRA needs peft: pip install 'peft>=0.17'") from error
    return peft


def _as_tensor(values: Any) -> torch.Tensor:
    return values if isinstance(values, torch.Tensor) else torch.as_tensor(values)


D2LLMConfig.register_for_auto_class()
D2LLMModel.register_for_auto_class("AutoModel")

__all__ = ["D2LLMModel", "D2LLMPreTrainedModel", "D2LLMOutput", "PMA", "IEM", "CheckpointError"]
