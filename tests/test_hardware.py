"""hardware.py reads the CPU's bf16 features from /proc/cpuinfo (here a file written by the test) and falls back
to PyTorch's own probes where that file is missing or cannot be read."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from common import hardware

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu sse2 avx2 avx512f {extra}
bugs\t\t: spectre_v1

processor\t: 1
flags\t\t: fpu sse2 avx2 avx512f {extra}
"""


@pytest.fixture
def cpuinfo(tmp_path, monkeypatch):
    """Point hardware.CPUINFO at a file of the test; returns a function writing its flags."""
    path = tmp_path / "cpuinfo"
    monkeypatch.setattr(hardware, "CPUINFO", path)

    def write(extra: str) -> Path:
        path.write_text(CPUINFO.format(extra=extra))
        return path

    return write


def _probes(monkeypatch, amx: bool, avx512_bf16: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)


def test_the_flags_line_of_cpuinfo_is_parsed_and_its_bf16_features_make_auto_bfloat16(cpuinfo, monkeypatch):
    _probes(monkeypatch, amx=False, avx512_bf16=False)  # the file decides, not the probes
    cpuinfo("avx512_bf16 amx_tile amx_bf16")
    assert hardware.cpu_flags() == {"fpu", "sse2", "avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}
    level = torch.backends.cpu.get_cpu_capability()
    assert hardware.cpu_capability() == f"{level}+amx_bf16+avx512_bf16"
    assert hardware.fast_bf16("cpu") is True
    choice = hardware.resolve_dtype("auto", "cpu")
    assert (choice.dtype, choice.fast_bf16, choice.cpu_capability) == ("bfloat16", True,
                                                                       f"{level}+amx_bf16+avx512_bf16")


def test_cpuinfo_without_bf16_features_makes_auto_float32_even_where_the_probes_say_yes(cpuinfo, monkeypatch):
    _probes(monkeypatch, amx=True, avx512_bf16=True)
    cpuinfo("")
    assert hardware.cpu_flags() == {"fpu", "sse2", "avx2", "avx512f"}
    assert hardware.cpu_capability() == torch.backends.cpu.get_cpu_capability()
    assert hardware.fast_bf16("cpu") is False and hardware.resolve_dtype("auto", "cpu").dtype == "float32"


def test_a_cpuinfo_without_a_flags_line_gives_no_flags(tmp_path, monkeypatch):
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n")  # an ARM CPU names its features otherwise
    monkeypatch.setattr(hardware, "CPUINFO", path)
    assert hardware.cpu_flags() == set()


@pytest.mark.parametrize("unreadable", ["missing", "a folder"])
def test_a_missing_or_unreadable_cpuinfo_falls_back_to_pytorchs_probes(tmp_path, monkeypatch, unreadable):
    path = tmp_path / "cpuinfo"
    if unreadable == "a folder":
        path.mkdir()  # reading it raises IsADirectoryError, as an unreadable file raises PermissionError
    monkeypatch.setattr(hardware, "CPUINFO", path)
    assert hardware.cpu_flags() == set()
    level = torch.backends.cpu.get_cpu_capability()
    _probes(monkeypatch, amx=False, avx512_bf16=True)
    assert hardware.cpu_capability() == f"{level}+avx512_bf16" and hardware.fast_bf16("cpu") is True
    _probes(monkeypatch, amx=False, avx512_bf16=False)
    assert hardware.cpu_capability() == level and hardware.resolve_dtype("auto", "cpu").dtype == "float32"
