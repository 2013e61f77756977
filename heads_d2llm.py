"""D2LLM's two heads on the backbone: PMA pooling and the IEM scorer, with their two start-ups (``pma_init="mean"``,
``iem_init="distance"``) and ``head_state_dict``.

Remote-code file, saved with every checkpoint next to ``modeling_d2llm.py``: module-level imports are torch and
transformers only.

Shapes: N texts of T tokens, backbone width d, k PMA seeds, embedding D = k * d, IEM width h.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init


class PMA(nn.Module):
    """Pooling by multi-head attention (Set Transformer's MAB with learned seeds as queries).

    ``H = LN0(S + MHA(S, X, X))``, ``y = LN1(H + relu(W_o H))``; padded positions are masked out of the keys,
    so left, right and no padding give the same output.
    """

    def __init__(self, hidden_size: int, num_heads: int, num_seeds: int = 1, layer_norm: bool = True) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"pma_num_heads={num_heads} must divide the backbone hidden size {hidden_size}")
        self.seeds = nn.Parameter(torch.empty(1, num_seeds, hidden_size))
        self.attention = nn.MultiheadAttention(hidden_size, num_heads, batch_first=True)
        self.norm0 = nn.LayerNorm(hidden_size) if layer_norm else nn.Identity()
        self.norm1 = nn.LayerNorm(hidden_size) if layer_norm else nn.Identity()
        self.output = nn.Linear(hidden_size, hidden_size)

    def forward(self, token_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``token_states [N, T, d]``, ``attention_mask [N, T]`` (1 = token) -> ``[N, k * d]``."""
        if attention_mask.shape != token_states.shape[:2]:
            raise ValueError(f"attention_mask {tuple(attention_mask.shape)} does not match states "
                             f"{tuple(token_states.shape[:2])}")
        keep = attention_mask.bool()
        if not keep.any(dim=1).all():
            raise ValueError("every sequence needs at least one unmasked token")
        # Padded states may hold anything (even NaN from fully masked causal rows): zero them.
        states = token_states.masked_fill(~keep.unsqueeze(-1), 0.0)
        seeds = self.seeds.to(states.dtype).expand(states.shape[0], -1, -1)
        attended, _ = self.attention(seeds, states, states, key_padding_mask=~keep, need_weights=False)
        pooled = self.norm0(seeds + attended)
        pooled = self.norm1(pooled + F.relu(self.output(pooled)))
        return pooled.flatten(1)


class IEM(nn.Module):
    """Interaction emulation module: an MLP on ``[y_q ; y_p]`` with one branch per task.

    ``f1 = relu(W1 [y_q ; y_p] + b1)``, ``y_S = relu(W_t f1 + b_t)``, ``z = w_o . y_S + b_o``.
    ``W1`` is stored whole (``first``) and used split: ``W1 [y_q ; y_p] = W1q y_q + W1p y_p``, so the passage
    half is computed once per passage.
    """

    def __init__(self, embedding_size: int, hidden_size: int, task_names: Sequence[str], dropout: float = 0.0) -> None:
        super().__init__()
        self.embedding_size = embedding_size
        self.task_names = list(task_names)
        self.first = nn.Linear(2 * embedding_size, hidden_size)
        self.branches = nn.ModuleDict({name: nn.Linear(hidden_size, hidden_size) for name in self.task_names})
        self.output = nn.Linear(hidden_size, 1)
        self.first.iem_role, self.output.iem_role = "first", "output"  # read by D2LLMPreTrainedModel._init_weights
        for branch in self.branches.values():
            branch.iem_role = "branch"
        self.dropout = nn.Dropout(dropout)

    def task_branch(self, task: str) -> nn.Linear:
        if task not in self.branches:
            raise ValueError(f"unknown task {task!r}; known tasks: {self.task_names}")
        return self.branches[task]

    def _check(self, embeddings: torch.Tensor, name: str) -> None:
        if embeddings.shape[-1] != self.embedding_size:
            raise ValueError(f"{name} have size {embeddings.shape[-1]} in their last dimension; "
                             f"this model's embeddings have size {self.embedding_size}")

    def project_query(self, query_embeddings: torch.Tensor) -> torch.Tensor:
        """``W1q y_q + b1``: ``[..., D] -> [..., h]``."""
        self._check(query_embeddings, "query embeddings")
        weight = self.first.weight[:, : self.embedding_size]
        return F.linear(query_embeddings.to(weight.dtype), weight, self.first.bias)

    def project_passage(self, passage_embeddings: torch.Tensor) -> torch.Tensor:
        """``W1p y_p``: ``[..., D] -> [..., h]`` (pre-computable for a corpus)."""
        self._check(passage_embeddings, "passage embeddings")
        weight = self.first.weight[:, self.embedding_size :]
        return F.linear(passage_embeddings.to(weight.dtype), weight)

    def head(self, pre_activation: torch.Tensor, task: str) -> tuple[torch.Tensor, torch.Tensor]:
        """From ``W1 [y_q ; y_p] + b1`` to ``(z [...], y_S [..., h])``."""
        branch = self.task_branch(task)
        features = F.relu(branch(self.dropout(F.relu(pre_activation))))
        return self.output(self.dropout(features)).squeeze(-1), features

    def similarity(
        self, query_projections: torch.Tensor, passage_projections: torch.Tensor, task: str,
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        """All-pairs logits ``[Nq, Np]`` from ``project_query`` ``[Nq, h]`` and ``project_passage`` ``[Np, h]``.

        Passages go in chunks of ``chunk_size`` (default: about 2**22 hidden activations per chunk), so memory
        stays bounded; per pair the cost is one add, the ``h x h`` branch and the output layer.
        """
        self.task_branch(task)
        passages = passage_projections.to(query_projections.dtype)
        if chunk_size is None:
            chunk_size = max(1, (1 << 22) // max(1, query_projections.numel()))
        scores = [
            self.head(query_projections[:, None, :] + passages[None, start : start + chunk_size, :], task)[0]
            for start in range(0, passages.shape[0], chunk_size)
        ]
        return torch.cat(scores, dim=1) if scores else query_projections.new_zeros(query_projections.shape[0], 0)

    def forward(
        self, query_embeddings: torch.Tensor, passage_embeddings: torch.Tensor, task: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores of broadcastable ``[..., D]`` pairs: ``(z [...], y_S [..., h])``."""
        self.task_branch(task)
        return self.head(self.project_query(query_embeddings) + self.project_passage(passage_embeddings), task)


def mean_init_(pma: PMA) -> None:
    """Start a PMA as the masked mean (``D2LLMConfig.pma_init = "mean"``): zero seeds, so every query is the
    in-projection bias (zero) and attention is uniform over the unmasked tokens; identity value and attention-output
    projections, zero biases; feed-forward ``W_o = 0`` with bias ``c = 0.01`` (every unit active, so ``W_o`` gets
    gradients; ``LN1`` removes the constant). Then ``y = LN1(LN0(mean_t x_t))``, or ``mean_t x_t + c`` without the
    layer norms."""
    attention = pma.attention
    size = attention.embed_dim
    init.zeros_(pma.seeds)
    in_proj = attention.in_proj_weight.detach().clone()  # copied whole: init.* leaves loaded weights alone
    in_proj[2 * size:] = torch.eye(size, dtype=in_proj.dtype, device=in_proj.device)
    init.copy_(attention.in_proj_weight, in_proj)
    init.eye_(attention.out_proj.weight)
    for parameter in (attention.in_proj_bias, attention.out_proj.bias, pma.output.weight):
        init.zeros_(parameter)
    init.constant_(pma.output.bias, 0.01)


def distance_init_(layer: nn.Linear, role: str) -> None:
    """Start an IEM layer so that the whole IEM scores by distance (``D2LLMConfig.iem_init = "distance"``).

    ``first``: ``W1 = [[A, -A], [-A, A]]``, ``b1 = 0`` with ``A ~ N(0, 1/D) [h/2, D]``, so
    ``f1 = [relu(A(y_q - y_p)) ; relu(A(y_p - y_q))]`` (``|A(y_q - y_p)|`` split by sign); each ``branch``:
    ``W_t = I``, ``b_t = 0`` (``y_S = f1``); ``output``: ``w_o = -sqrt(pi/2) * 2/h``, ``b_o = 0``. Then
    ``z = -sqrt(pi/2) * mean_i |A(y_q - y_p)|_i``, whose expectation over A is ``-||y_q - y_p|| / sqrt(D)``.
    """
    if role == "first":
        hidden, twice_embedding = layer.weight.shape
        half = torch.randn(hidden // 2, twice_embedding // 2, device=layer.weight.device,
                           dtype=torch.float32) / (twice_embedding // 2) ** 0.5
        weight = torch.cat([torch.cat([half, -half], dim=1), torch.cat([-half, half], dim=1)], dim=0)
        init.copy_(layer.weight, weight.to(layer.weight.dtype))
    elif role == "branch":
        init.eye_(layer.weight)
    elif role == "output":
        init.constant_(layer.weight, -(torch.pi / 2) ** 0.5 * 2.0 / layer.weight.shape[1])
    else:
        raise ValueError(f"unknown IEM layer role {role!r}")
    init.zeros_(layer.bias)


def head_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The PMA and IEM weights of a D2LLM model (every state-dict entry outside ``backbone.``), detached and
    contiguous, under their state-dict names."""
    return {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()
            if not name.startswith("backbone.")}


HEADS_FILE = "heads.safetensors"


def save_heads(model: nn.Module, path: str) -> None:
    """Write ``head_state_dict(model)`` to the safetensors file ``path``."""
    from safetensors.torch import save_file

    save_file(head_state_dict(model), path)


def load_heads(model: nn.Module, path: str) -> None:
    """Load the PMA and IEM weights of the safetensors file ``path`` into ``model``; ``ValueError`` naming the file
    when it lacks any of them (written for another model)."""
    from safetensors.torch import load_file

    heads = load_file(path)
    missing = sorted(set(head_state_dict(model)) - set(heads))
    if missing:
        raise ValueError(f"{path} lacks {missing[:3]}: it was written for another model")
    model.load_state_dict(heads, strict=False)
