"""The teacher: a causal LM read as a yes/no cross-encoder (docs/method.md, section 1).

``YesNoTeacher.score`` returns the next-token logits ``[l_yes, l_no]`` after the prompt
``query -> passage -> task instruction``; with ``return_features`` also the last layer's hidden state at
the final prompt token. Pairs are sorted by length and batched with dynamic left padding (explicit position
ids, so a pair scores the same whatever it is batched with, up to float rounding), and the language-model
head runs at the last position only (``logits_to_keep=1``).

Command line (a quick look at a teacher on a few pairs of a JSONL file)::

    python -m teacher.model --model PATH_OR_GGUF [--adapter DIR] --pairs FILE.jsonl --task symmetric
        [--device cpu|cuda] [--dtype auto|float32|bfloat16]

A ``--model`` or ``--adapter`` that does not load ends it with exit status 2 and one line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from backbone_d2llm import default_attn_implementation, load_tokenizer, split_gguf_path
from common.cli_errors import ModelError, loading_model
from common.hardware import DTYPE_CHOICES, DtypeChoice, resolve_dtype
from teacher.prompts import PRESETS, TaskPrompt, load_prompts, prompts_to_json, task_prompt

PROMPTS_FILE = "teacher_prompts.json"
"""Saved next to a LoRA adapter by ``adapt_teacher``: the prompts it was trained with."""
SETTINGS_FILE = "teacher_settings.json"
"""Saved next to a LoRA adapter by ``adapt_teacher``: the token limits it was trained with (``settings()``)."""


class YesNoTeacher:
    """A causal LM and its tokenizer, scoring (query, passage) pairs with a per-language, per-task prompt.

    ``max_query_tokens`` / ``max_passage_tokens`` truncate each text separately, so the instruction at the end
    of the prompt is never cut.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        language: str = "en",
        prompts: dict[str, dict[str, TaskPrompt]] | None = None,
        max_query_tokens: int = 128,
        max_passage_tokens: int = 384,
        compute: DtypeChoice | None = None,
    ) -> None:
        if not tokenizer.is_fast:
            raise ValueError("YesNoTeacher needs a fast tokenizer (it truncates texts by token offsets)")
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; set one (load_tokenizer uses EOS)")
        self.model = model
        self.tokenizer = tokenizer
        self.language = language
        self.prompts = prompts if prompts is not None else load_prompts()
        self.max_query_tokens = max_query_tokens
        self.max_passage_tokens = max_passage_tokens
        self.compute = compute
        self._special_prefix = _special_prefix(tokenizer)

    def settings(self) -> dict[str, int]:
        """The constructor options an adapter trained on this teacher should be scored with."""
        return {"max_query_tokens": self.max_query_tokens, "max_passage_tokens": self.max_passage_tokens}

    def save_prompts(self, folder: str | Path) -> None:
        """Write ``PROMPTS_FILE`` and ``SETTINGS_FILE`` into ``folder``: with them beside an adapter (the final one
        or any training checkpoint), ``from_pretrained(..., adapter=folder)`` scores as the adapter was trained."""
        (Path(folder) / PROMPTS_FILE).write_text(prompts_to_json(self.prompts), encoding="utf-8")
        (Path(folder) / SETTINGS_FILE).write_text(json.dumps(self.settings(), indent=2), encoding="utf-8")

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        *,
        gguf_file: str | None = None,
        adapter: str | None = None,
        language: str = "en",
        dtype: torch.dtype | str | None = None,
        device: str | torch.device | None = None,
        prompts: dict[str, dict[str, TaskPrompt]] | None = None,
        prompt_preset: str | None = None,
        merge_adapter: bool = True,
        **kwargs,
    ) -> "YesNoTeacher":
        """A hub id, a folder or a ``.gguf`` path, optionally with a peft LoRA folder from ``adapt_teacher``.

        ``dtype``: ``"auto"`` (bfloat16 where the hardware is fast at it, ``common.hardware.resolve_dtype``),
        ``"float32"``, ``"bfloat16"`` or a torch dtype; None keeps the old default (bfloat16 on a GPU, float32 on a
        CPU). On a CPU, bfloat16 means float32 weights under bfloat16 autocast (``forward``), which tracks float32
        scores far more closely than bfloat16 weights. The adapter is merged for speed unless
        ``merge_adapter=False`` (to train it further). ``kwargs`` go to the constructor (``max_query_tokens``,
        ``max_passage_tokens``; None means the default). The adapter's saved prompts and token limits are used
        unless ``prompts``, ``prompt_preset`` (``teacher.prompts.PRESETS``) or the limit is given; an adapter
        folder without them (``PROMPTS_FILE``, ``SETTINGS_FILE``) raises ``FileNotFoundError`` naming the file. A
        model folder written by ``teacher.adapt --method full`` holds the same two files, used the same way. A model
        or adapter that does not load (not a model folder, missing or damaged weights) raises ``ModelError``
        naming it.
        """
        name_or_path, gguf_file = split_gguf_path(name_or_path, gguf_file)
        saved = adapter_files(adapter) if adapter is not None else _full_model_files(name_or_path)
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if dtype is None:
            dtype = "bfloat16" if device.type == "cuda" else "float32"
        if isinstance(dtype, torch.dtype):
            dtype = str(dtype).removeprefix("torch.")
        compute = resolve_dtype(dtype, device)
        weights_dtype = torch.float32 if device.type == "cpu" else compute.torch_dtype
        if prompts is None and prompt_preset is not None:
            prompts = load_prompts(preset=prompt_preset)
        load_kwargs = {"dtype": weights_dtype, "attn_implementation": default_attn_implementation()}
        if gguf_file:
            load_kwargs["gguf_file"] = gguf_file
        with loading_model(name_or_path, "a causal LM (a model folder, .gguf file or hub id)"):
            tokenizer = load_tokenizer(name_or_path, gguf_file=gguf_file)
            model = AutoModelForCausalLM.from_pretrained(name_or_path, **load_kwargs).to(device)
        if adapter is not None:
            from peft import PeftModel

            with loading_model(adapter, "a peft adapter of this model"):
                model = PeftModel.from_pretrained(model, adapter, is_trainable=not merge_adapter)
            if merge_adapter:
                model = model.merge_and_unload()
        if saved is not None:
            saved_prompts, saved_settings = saved
            if prompts is None:
                prompts = load_prompts(saved_prompts)
            for key, value in json.loads(saved_settings.read_text(encoding="utf-8")).items():
                if kwargs.get(key) is None:
                    kwargs[key] = value
        model.eval()
        kwargs = {key: value for key, value in kwargs.items() if value is not None}
        return cls(model, tokenizer, language=language, prompts=prompts, compute=compute, **kwargs)

    # ------------------------------------------------------------------ inputs
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def answer_ids(self, task: str, language: str | None = None) -> tuple[int, int]:
        """Token ids of the first token of the yes and the no word of ``(language, task)``."""
        prompt = task_prompt(self.prompts, language or self.language, task)
        yes, no = (self.tokenizer.encode(word, add_special_tokens=False) for word in (prompt.yes, prompt.no))
        if not yes or not no or yes[0] == no[0]:
            raise ValueError(f"answer words {prompt.yes!r} / {prompt.no!r} need different first tokens, got "
                             f"{yes} / {no}; choose other words in the prompts file")
        return yes[0], no[0]

    def encode_pairs(
        self, queries: Sequence[str], passages: Sequence[str], task: str, language: str | None = None
    ) -> list[list[int]]:
        """Token ids of each prompt: special prefix (BOS, if the tokenizer adds one) + the filled template."""
        if len(queries) != len(passages):
            raise ValueError(f"{len(queries)} queries but {len(passages)} passages")
        prompt = task_prompt(self.prompts, language or self.language, task)
        short_queries = self._truncate(queries, self.max_query_tokens)
        short_passages = self._truncate(passages, self.max_passage_tokens)
        texts = [prompt.format(short_queries[q], short_passages[p]) for q, p in zip(queries, passages)]
        encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [self._special_prefix + ids for ids in encoded]

    def _truncate(self, texts: Sequence[str], max_tokens: int) -> dict[str, str]:
        """Each distinct text cut after its ``max_tokens``-th token (exactly, by character offsets)."""
        unique = list(dict.fromkeys(texts))
        offsets = self.tokenizer(unique, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        return {text: text if len(spans) <= max_tokens else text[: spans[max_tokens - 1][1]]
                for text, spans in zip(unique, offsets)}

    def collate(self, sequences: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        """Left-padded ``input_ids``, ``attention_mask`` and ``position_ids`` (counting real tokens only)."""
        width = max(len(ids) for ids in sequences)
        input_ids = torch.full((len(sequences), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, ids in enumerate(sequences):
            input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids):] = 1
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        device = self.device
        return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device),
                "position_ids": position_ids.to(device)}

    # ------------------------------------------------------------------ forward
    def forward(
        self, batch: dict[str, torch.Tensor], answer_ids: torch.Tensor, return_features: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Differentiable ``[b, 2]`` answer logits (``answer_ids`` ``[b, 2]`` or ``[2]``) and final-token states.

        In bfloat16 (``compute``) the decoder runs in bf16 but the two answer rows of the LM head are applied to the
        final state in float32: rounding each logit to bf16 (steps of 1/16 near 10) would swamp ``l_yes - l_no``.
        """
        answer_ids = answer_ids.to(self.device)
        if self._float32_answer_head():
            with self.autocast():
                hidden = self.model.get_decoder()(**batch, use_cache=False).last_hidden_state[:, -1, :]
            head = self.model.get_output_embeddings()
            weight = head.weight[answer_ids].float()  # [2, d] or [b, 2, d]
            logits = hidden.float() @ weight.T if weight.dim() == 2 else torch.einsum("bd,bkd->bk", hidden.float(),
                                                                                      weight)
            if head.bias is not None:
                logits = logits + head.bias[answer_ids].float()
            return logits, hidden if return_features else None
        with self.autocast():
            output = self.model(**batch, logits_to_keep=1, output_hidden_states=return_features, use_cache=False)
        last = output.logits[:, -1, :]
        logits = last[:, answer_ids] if answer_ids.dim() == 1 else last.gather(1, answer_ids)
        features = output.hidden_states[-1][:, -1, :] if return_features else None
        return logits, features

    def _float32_answer_head(self) -> bool:
        """bf16 compute and a plain linear LM head (no logit soft-capping or scaling the model would apply)."""
        config = self.model.config.get_text_config()
        plain = not getattr(config, "final_logit_softcapping", None) and getattr(config, "logit_scale", None) is None
        head = self.model.get_output_embeddings()
        return (self.compute is not None and self.compute.dtype == "bfloat16" and plain
                and isinstance(head, torch.nn.Linear))

    def autocast(self) -> contextlib.AbstractContextManager:
        """bfloat16 autocast where the compute dtype is bfloat16 but the weights are float32 (the CPU path); else
        nothing (an enclosing autocast stays in force)."""
        weights = next(self.model.parameters()).dtype
        if self.compute is not None and self.compute.dtype == "bfloat16" and weights == torch.float32:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def score(
        self,
        queries: Sequence[str],
        passages: Sequence[str],
        task: str,
        *,
        language: str | None = None,
        batch_size: int = 16,
        return_features: bool = False,
        show_progress: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``[N, 2]`` float32 ``[l_yes, l_no]`` logits in input order (and ``[N, hidden]`` final-token states)."""
        sequences = self.encode_pairs(queries, passages, task, language)
        answer_ids = torch.tensor(self.answer_ids(task, language))
        logits = torch.empty(len(sequences), 2)
        hidden_size = self.model.config.get_text_config().hidden_size
        features = torch.empty(len(sequences), hidden_size) if return_features else None
        for indices in tqdm(length_sorted_batches(sequences, batch_size), desc="teacher", unit="batch",
                            disable=not show_progress):
            batch_logits, batch_features = self.forward(
                self.collate([sequences[i] for i in indices]), answer_ids, return_features)
            logits[indices] = batch_logits.float().cpu()
            if return_features:
                features[indices] = batch_features.float().cpu()
        return (logits, features) if return_features else logits

    def probability(
        self, queries: Sequence[str], passages: Sequence[str], task: str, *, temperature: float = 1.0, **kwargs
    ) -> torch.Tensor:
        """``p(yes) = softmax([l_yes, l_no] / temperature)[0]`` per pair; ``kwargs`` as in ``score``."""
        return yes_probability(self.score(queries, passages, task, **kwargs), temperature)


def adapter_files(adapter: str | Path) -> tuple[Path, Path]:
    """The prompts and settings files that ``teacher.adapt`` saves next to an adapter; a missing one is an error
    (scoring with default prompts or token limits instead of the trained ones would go unnoticed)."""
    files = Path(adapter) / PROMPTS_FILE, Path(adapter) / SETTINGS_FILE
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: a teacher adapter folder written by python -m teacher.adapt "
                                    "holds the prompts and token limits it was trained with")
    return files


def _full_model_files(folder: str) -> tuple[Path, Path] | None:
    """The prompts and settings files in a model folder that ``teacher.adapt --method full`` wrote, if both are
    there (a plain causal LM has neither)."""
    files = Path(folder) / PROMPTS_FILE, Path(folder) / SETTINGS_FILE
    return files if all(path.is_file() for path in files) else None


def yes_probability(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """The two-way softmax of ``[..., 2]`` yes/no logits, probability of yes."""
    return torch.softmax(logits.float() / temperature, dim=-1)[..., 0]


def add_teacher_cost_arguments(parser: argparse.ArgumentParser) -> None:
    """``--dtype`` and ``--prompt-preset``, shared by the commands that run the teacher."""
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto",
                        help="auto: bfloat16 on GPUs and on CPUs with AMX or AVX512-BF16, float32 elsewhere")
    parser.add_argument("--prompt-preset", choices=sorted(PRESETS), default=None,
                        help="teacher prompts (default: the adapter's, else spec); short: one-line questions, "
                             "for adapted teachers")


def length_sorted_batches(sequences: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Index batches of similar lengths, longest first (a memory error shows up at once, not at the end)."""
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def _special_prefix(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The special tokens the tokenizer puts before a text (BOS); those it appends would end the prompt."""
    plain = tokenizer.encode("a", add_special_tokens=False)
    full = tokenizer.encode("a")
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return full[:start]
    return []


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="hub id, folder or .gguf file of a causal LM")
    parser.add_argument("--adapter", help="LoRA folder written by teacher.adapt")
    parser.add_argument("--pairs", required=True, help="JSONL with sentence1, sentence2 (and score/label)")
    parser.add_argument("--task", default="symmetric", choices=("symmetric", "asymmetric"))
    parser.add_argument("--language", default="en")
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, help="default: bfloat16 on a GPU, float32 on a CPU")
    args = parser.parse_args(argv)
    with open(args.pairs, encoding="utf-8") as handle:
        rows = [json.loads(line) for line, _ in zip(handle, range(args.limit))]
    teacher = YesNoTeacher.from_pretrained(args.model, adapter=args.adapter, language=args.language,
                                           device=args.device, dtype=args.dtype)
    probabilities = teacher.probability([r["sentence1"] for r in rows], [r["sentence2"] for r in rows], args.task,
                                        batch_size=args.batch_size)
    for row, probability in zip(rows, probabilities.tolist()):
        gold = row.get("score", row.get("label", ""))
        print(f"p(yes)={probability:.3f} gold={gold} | {row['sentence1'][:60]} | {row['sentence2'][:60]}")


if __name__ == "__main__":
    from common.cli_errors import run_command

    run_command(main, ModelError, FileNotFoundError)
