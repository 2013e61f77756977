"""Resumable stages: an output is built in a temporary place and renamed into place only when it is complete.

A stage counts as done when its output exists. Because the output appears in one rename after ``build`` returned,
a stage killed midway leaves only its temporary folder (``PARENT/.partial/NAME``), which the next run removes
before it builds the stage again: a half-written output is never taken for a finished one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

PARTIAL_DIR = ".partial"


def partial_path(output: Path) -> Path:
    """Where ``output`` is built: ``PARENT/.partial/NAME`` (same base name, so a model card's title stays right)."""
    return output.parent / PARTIAL_DIR / output.name


def build_once(output: Path, build: Callable[[Path], None]) -> float | None:
    """Build ``output`` unless it exists; returns the seconds ``build`` took, or None when it was done already.

    ``build(partial)`` writes the whole output (a file or a folder) as in ``write_whole``.
    """
    output = Path(output)
    if output.exists():
        return None
    start = time.perf_counter()
    write_whole(output, build)
    return time.perf_counter() - start


def write_whole(output: Path, build: Callable[[Path], None], *, shared_folder: bool = False) -> None:
    """Write ``output`` (a file or a folder) complete or not at all, replacing any older ``output``.

    ``build(partial)`` writes it at ``partial_path(output)``, which is renamed to ``output`` when ``build`` returns
    (a file replaces an older one in that one rename, so readers see the old file or the new one, never none).
    Whatever an earlier, killed build left at ``partial`` is removed first. The ``.partial`` folder is removed
    once empty, unless ``shared_folder``: other processes write beside ``output`` at the same time (each its own
    name), and one must not remove the folder another is about to write in.
    """
    output = Path(output)
    partial = partial_path(output)
    _remove(partial)
    partial.parent.mkdir(parents=True, exist_ok=True)
    build(partial)
    if not partial.exists():
        raise RuntimeError(f"{output} was not written: the build left nothing at {partial}")
    if partial.is_dir() or output.is_dir():  # a rename replaces a file, not a folder
        _remove(output)
    os.replace(partial, output)
    if not shared_folder:
        with contextlib.suppress(OSError):  # not empty: another output's partial is in there
            partial.parent.rmdir()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
