"""Teacher prompts and answer words, per language and task (docs/method.md, section 1).

A prompt is one template with ``{query}`` and ``{passage}`` placeholders, in that order, and the task
instruction *after* the passage: the student encodes query and passage separately, so the teacher must
read them before it is told what to judge. The teacher's relevance is read from the next-token logits of
the first token of the ``yes`` and ``no`` words.

Presets (``PRESETS``): ``spec``, the paper's long instructions (English as written there, Chinese the authors'
``save_logits.py`` ones moved to the end), and ``short``, one-line questions for *adapted* teachers. The long
instruction is most of every pair's tokens (an STS-B pair is 91 tokens, 13 of them the two sentences), so the
short preset scores several times faster; an adapted teacher learns the task from its training pairs, not from the
wording. Other languages or wordings come from a JSON file (``load_prompts``) with the same layout as ``PROMPTS``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from common.schema import TASKS


@dataclass(frozen=True)
class TaskPrompt:
    """One task's template and answer words; ``split`` gives the text before, between and after the inputs."""

    template: str
    yes: str
    no: str

    def __post_init__(self) -> None:
        query_at, passage_at = self.template.find("{query}"), self.template.find("{passage}")
        if query_at < 0 or passage_at < query_at:
            raise ValueError(f"prompt template needs {{query}} before {{passage}}: {self.template!r}")
        if not self.template[passage_at + len("{passage}"):].strip():
            raise ValueError(f"prompt template must end with the task instruction after {{passage}}: {self.template!r}")
        if not self.yes or not self.no or self.yes == self.no:
            raise ValueError(f"prompt needs two different answer words, got yes={self.yes!r} no={self.no!r}")

    def split(self) -> tuple[str, str, str]:
        """``(before query, between query and passage, after passage)``."""
        head, rest = self.template.split("{query}", 1)
        middle, tail = rest.split("{passage}", 1)
        return head, middle, tail

    def format(self, query: str, passage: str) -> str:
        head, middle, tail = self.split()
        return f"{head}{query}{middle}{passage}{tail}"


_EN_SYMMETRIC = (
    "#Q and #P will each describe an event or problem, they may not be related. Based solely on these "
    "descriptions and your understanding of the world, judge whether #P is absolutely correct about the event "
    "in #Q, or whether #Q is absolutely correct about the event or problem in #P, please answer yes or no."
)
_EN_ASYMMETRIC = (
    "#Q will describe a query, #P will describe a passage, they may not be related. Based solely on these "
    "descriptions and your understanding of the world, judge whether #P can correctly answer the question "
    "asked in #Q. Please answer yes or no."
)
_ZH_SYMMETRIC = (
    "#P和#H将分别描述一种事件或问题，它们可能并无关系。仅使用此描述和您对世界的了解，判断#H是不是一个关于#P中的事件"
    "绝对正确的句子，或者#H是不是绝对正确地描述了#P的事件或问题，请回答是或不是，若您不确定，请回答不是。"
)
_ZH_ASYMMETRIC = (
    "#Q将描述一个问题，#A将描述一个网络段落，它们可能并没有关系。仅依据这些描述和您对世界的了解，"
    "判断#A能不能正确地回答#Q中提出的问题，请回答能或不能。"
)

PROMPTS: dict[str, dict[str, TaskPrompt]] = {
    "en": {
        "symmetric": TaskPrompt("#Q: {query}\n#P: {passage}\n" + _EN_SYMMETRIC + "\nAnswer:", " yes", " no"),
        "asymmetric": TaskPrompt("#Q: {query}\n#P: {passage}\n" + _EN_ASYMMETRIC + "\nAnswer:", " yes", " no"),
    },
    "zh": {
        "symmetric": TaskPrompt("#P：{query}\n#H：{passage}\n" + _ZH_SYMMETRIC + "\n回答：", "是", "不是"),
        "asymmetric": TaskPrompt("#Q：{query}\n#A：{passage}\n" + _ZH_ASYMMETRIC + "\n回答：", "能", "不能"),
    },
}


SHORT_PROMPTS: dict[str, dict[str, TaskPrompt]] = {
    "en": {
        "symmetric": TaskPrompt("#Q: {query}\n#P: {passage}\nDo #Q and #P mean the same? Answer:", " yes", " no"),
        "asymmetric": TaskPrompt("#Q: {query}\n#P: {passage}\nDoes #P answer #Q? Answer:", " yes", " no"),
    },
    "zh": {
        "symmetric": TaskPrompt("#P：{query}\n#H：{passage}\n#P和#H意思相同吗？回答：", "是", "不是"),
        "asymmetric": TaskPrompt("#Q：{query}\n#A：{passage}\n#A能回答#Q吗？回答：", "能", "不能"),
    },
}

PRESETS: dict[str, dict[str, dict[str, TaskPrompt]]] = {"spec": PROMPTS, "short": SHORT_PROMPTS}


def load_prompts(path: str | Path | None = None, preset: str = "spec") -> dict[str, dict[str, TaskPrompt]]:
    """The ``preset``'s prompts, updated from a JSON file ``{language: {task: {template, yes, no}}}`` when given."""
    if preset not in PRESETS:
        raise ValueError(f"unknown prompt preset {preset!r}; presets are {sorted(PRESETS)}")
    prompts = {language: dict(tasks) for language, tasks in PRESETS[preset].items()}
    if path is None:
        return prompts
    with open(path, encoding="utf-8") as handle:
        loaded = json.load(handle)
    for language, tasks in loaded.items():
        for task, fields in tasks.items():
            if task not in TASKS:
                raise ValueError(f"{path}: unknown task {task!r} for language {language!r}; tasks are {TASKS}")
            missing = {"template", "yes", "no"} - set(fields)
            if missing:
                raise ValueError(f"{path}: {language}/{task} lacks {sorted(missing)}")
            prompts.setdefault(language, {})[task] = TaskPrompt(fields["template"], fields["yes"], fields["no"])
    return prompts


def prompts_to_json(prompts: dict[str, dict[str, TaskPrompt]]) -> str:
    """The JSON form that ``load_prompts`` reads (saved next to an adapted teacher)."""
    return json.dumps({language: {task: asdict(prompt) for task, prompt in tasks.items()}
                       for language, tasks in prompts.items()}, ensure_ascii=False, indent=2)


def task_prompt(prompts: dict[str, dict[str, TaskPrompt]], language: str, task: str) -> TaskPrompt:
    """The prompt of ``(language, task)``, or an error listing what is configured."""
    try:
        return prompts[language][task]
    except KeyError:
        configured = sorted(f"{lang}/{name}" for lang, tasks in prompts.items() for name in tasks)
        raise KeyError(f"no teacher prompt for language {language!r}, task {task!r}; configured: {configured}; "
                       "add one with a prompts JSON file") from None
