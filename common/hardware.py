"""Which dtype the running hardware computes fastest, decided at run time, never guessed.

bfloat16 pays off on GPUs that support it and on CPUs with AMX (``amx_bf16``) or AVX512-BF16 (``avx512_bf16``):
there bf16 matrix products run at about twice the fp32 rate. On a CPU without them (AVX2 only, say) bf16 is
emulated and runs several times *slower* than fp32, so ``auto`` means float32 there.

``resolve_dtype("auto" | "float32" | "bfloat16", device)`` returns the dtype and a record of the decision (the
CPU capability it was made on); asking for bfloat16 where it is slow is allowed but logged as a warning.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

DTYPE_CHOICES = ("auto", "float32", "bfloat16")
_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags() -> set[str]:
    """The CPU feature flags of ``CPUINFO`` (empty where the file is missing or cannot be read)."""
    try:
        text = CPUINFO.read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_capability() -> str:
    """PyTorch's kernel level (``AVX2``, ``AVX512``, ...) plus the bf16 features found, e.g. ``AVX512+avx512_bf16``."""
    level = torch.backends.cpu.get_cpu_capability()
    flags = cpu_flags()
    found = [flag for flag in _BF16_CPU_FLAGS if flag in flags]
    if not flags:  # no /proc/cpuinfo (macOS, ...): ask PyTorch's own probes
        probes = {"amx_bf16": "_is_amx_tile_supported", "avx512_bf16": "_is_avx512_bf16_supported"}
        found = [flag for flag, probe in probes.items() if getattr(torch.cpu, probe, lambda: False)()]
    return "+".join([level, *found])


def fast_bf16(device: str | torch.device = "cpu") -> bool:
    """True where bfloat16 matrix products run faster than float32 on ``device``: a CUDA GPU with bf16 support, a
    CPU with AMX or AVX512-BF16. The one place this is decided (teacher dtype, training, search, benchmarks)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return any(flag in cpu_capability() for flag in _BF16_CPU_FLAGS)
    return False


@dataclass(frozen=True)
class DtypeChoice:
    """The dtype a run computes in, and what it was chosen on (recorded next to the run's outputs)."""

    dtype: str
    requested: str
    device: str
    cpu_capability: str
    fast_bf16: bool

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def to_dict(self) -> dict[str, str | bool]:
        return asdict(self)


def resolve_dtype(requested: str, device: str | torch.device = "cpu") -> DtypeChoice:
    """``auto``: bfloat16 where ``fast_bf16(device)``, else float32; an explicit dtype is kept (a slow one warned)."""
    if requested not in DTYPE_CHOICES:
        raise ValueError(f"dtype must be one of {DTYPE_CHOICES}, got {requested!r}")
    device = torch.device(device)
    fast = fast_bf16(device)
    dtype = ("bfloat16" if fast else "float32") if requested == "auto" else requested
    choice = DtypeChoice(dtype, requested, str(device), cpu_capability(), fast)
    if dtype == "bfloat16" and not fast:
        logger.warning("bfloat16 requested on %s (%s), which has no fast bf16 path: expect it to run slower than "
                       "float32", device, choice.cpu_capability)
    logger.info("compute dtype %s (requested %s) on %s, CPU %s", dtype, requested, device, choice.cpu_capability)
    return choice
