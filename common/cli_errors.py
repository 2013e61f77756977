"""How every command ends on bad input: one line on stderr, exit status 2, never a traceback."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

BAD_INPUT_STATUS = 2


class ModelError(ValueError):
    """A model that cannot be used as asked (not a model folder, damaged weights, the wrong kind); the message
    names the path and what was found."""


@contextlib.contextmanager
def loading_model(path: str, kind: str) -> Iterator[None]:
    """Turn the load errors of transformers and peft (``OSError``, ``ValueError``: not a model folder, no weights,
    an unknown repository) raised inside into one ``ModelError``: ``PATH: does not load as KIND (cause)``."""
    try:
        yield
    except (OSError, ValueError) as error:
        cause = " ".join(str(error).split())[:300]
        raise ModelError(f"{path}: does not load as {kind} ({type(error).__name__}: {cause})") from error


def report_bad_input(error: BaseException) -> int:
    """Print ``error: MESSAGE`` (the message on one line) on stderr; returns the exit status, 2."""
    message = " ".join(str(error).split())
    print(f"error: {message}", file=sys.stderr)
    return BAD_INPUT_STATUS


def close_process_group() -> None:
    """Under a multi-process launch, wait for every process, then close the process group.

    A process that exits while another still holds the gloo group open can abort ("terminate called without an
    active exception", SIGABRT) and take the launch down with it. Without torch.distributed in use: nothing.
    """
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.barrier()
        distributed.destroy_process_group()


def run_command(main: Callable[[], object], *bad_input: type[Exception]) -> None:
    """Run a command's ``main``, then close the process group of a multi-process launch; an error of the
    ``bad_input`` kinds (whose messages name the file, row and column) ends the process with ``error: MESSAGE``
    on one line and status 2. Other errors are bugs: they keep their traceback."""
    try:
        main()
    except bad_input as error:
        sys.exit(report_bad_input(error))
    close_process_group()
