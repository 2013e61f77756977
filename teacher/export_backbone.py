"""Unpack a causal LM (a ``.gguf`` file, a folder or a Hub id) once into a plain folder: later stages load it in
seconds, not ~30 s each.

    python -m teacher.export_backbone SOURCE OUTPUT_FOLDER
"""

from __future__ import annotations

import sys
from pathlib import Path


def export_backbone(source: str, target: str | Path) -> None:
    """``load_backbone(AutoModelForCausalLM, source)``, saved with its tokenizer to ``target``."""
    from transformers import AutoModelForCausalLM

    from backbone_d2llm import load_backbone

    model, tokenizer = load_backbone(AutoModelForCausalLM, source)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)


def main(argv: list[str] | None = None) -> None:
    arguments = sys.argv[1:] if argv is None else argv
    if len(arguments) != 2:
        raise SystemExit("usage: python -m teacher.export_backbone SOURCE OUTPUT_FOLDER")
    export_backbone(arguments[0], arguments[1])


if __name__ == "__main__":
    from common.cli_errors import run_command

    run_command(main, OSError)  # transformers' "not a model" is an OSError, FileNotFoundError one too
