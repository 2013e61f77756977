"""Resumable stages: an output is built in a temporary place and renamed into place only when it is complete.

A stage counts as done when its output exists and, where the caller gives the settings it builds with, when the
output was built with those same settings. The settings are recorded as JSON next to the output, in
``PARENT/NAME.settings.json`` (``settings_path``): the old record is removed before a new output is renamed into
place and the new one is written (itself by a rename) right after, so an output whose record is missing, or was
written for other settings, is built again and never taken for done.

Because the output appears in one rename after ``build`` returned, a stage killed midway leaves only its temporary
folder (``PARENT/.partial/NAME``), which the next run removes before it builds the stage again: a half-written
output is never taken for a finished one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

PARTIAL_DIR = ".partial"
SETTINGS_SUFFIX = ".settings.json"


def partial_path(output: Path) -> Path:
    """Where ``output`` is built: ``PARENT/.partial/NAME`` (same base name, so a model card's title stays right)."""
    return output.parent / PARTIAL_DIR / output.name


def settings_path(output: Path) -> Path:
    """Where the settings ``output`` was built with are recorded: ``PARENT/NAME.settings.json``."""
    return output.parent / f"{output.name}{SETTINGS_SUFFIX}"


def recorded_settings(output: Path) -> Any:
    """The settings recorded for ``output`` (None where the output or its record is missing)."""
    output = Path(output)
    record = settings_path(output)
    if not output.exists() or not record.exists():
        return None
    return json.loads(record.read_text())


def is_built_with(output: Path, settings: Mapping[str, Any]) -> bool:
    """True when ``output`` exists and was built with ``settings`` (compared as JSON)."""
    return recorded_settings(output) == json.loads(json.dumps(settings))


def build_once(output: Path, build: Callable[[Path], None], settings: Mapping[str, Any] | None = None
               ) -> float | None:
    """Build ``output`` unless it is done; returns the seconds ``build`` took, or None when it was done already.

    Done: ``output`` exists and, when ``settings`` is given, was built with them (``is_built_with``); the new
    settings are recorded. ``build(partial)`` writes the whole output (a file or a folder) as in ``write_whole``.
    """
    output = Path(output)
    if output.exists() and (settings is None or is_built_with(output, settings)):
        return None
    start = time.perf_counter()
    write_whole(output, build, settings)
    return time.perf_counter() - start


def write_whole(output: Path, build: Callable[[Path], None], settings: Mapping[str, Any] | None = None, *,
                shared_folder: bool = False) -> None:
    """Write ``output`` (a file or a folder) complete or not at all, replacing any older ``output``.

    ``build(partial)`` writes it at ``partial_path(output)``, which is renamed to ``output`` when ``build`` returns
    (a file replaces an older one in that one rename, so readers see the old file or the new one, never none).
    Whatever an earlier, killed build left at ``partial`` is removed first. ``settings``, when given, are recorded
    at ``settings_path(output)``; an older record is removed in any case. The ``.partial`` folder is removed
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
    record = settings_path(output)
    record.unlink(missing_ok=True)
    if partial.is_dir() or output.is_dir():  # a rename replaces a file, not a folder
        _remove(output)
    os.replace(partial, output)
    if settings is not None:
        temporary = partial.parent / f"{record.name}.tmp"
        temporary.write_text(json.dumps(settings, indent=2, sort_keys=True))
        os.replace(temporary, record)
    if not shared_folder:
        with contextlib.suppress(OSError):  # not empty: another output's partial is in there
            partial.parent.rmdir()


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON at ``path``, written whole or not at all (``write_whole``)."""
    write_whole(Path(path), lambda partial: partial.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n",
                                                               encoding="utf-8"))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
