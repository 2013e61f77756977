"""How a command ends: bad input as one line and status 2, and the process group closed after success."""

from __future__ import annotations

import pytest
import torch.distributed as dist

from common.cli_errors import ModelError, loading_model, run_command


def test_bad_input_ends_the_command_with_one_line_and_status_2(capsys):
    def main() -> None:
        raise ValueError("data.jsonl: row 3, column 'score':\n not a number")

    with pytest.raises(SystemExit) as ended:
        run_command(main, ValueError)
    assert ended.value.code == 2
    assert capsys.readouterr().err == "error: data.jsonl: row 3, column 'score': not a number\n"


def test_other_errors_keep_their_traceback():
    def main() -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        run_command(main, ValueError)


def test_a_command_that_joined_a_process_group_closes_it_when_done(tmp_path):
    """A launched process must not exit with the gloo group open (it can abort the whole launch)."""
    def main() -> None:
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)

    run_command(main, ValueError)
    assert not dist.is_initialized()


def test_a_model_that_does_not_load_becomes_one_model_error_naming_its_path():
    with pytest.raises(ModelError, match=r"^runs/teacher: does not load as a causal LM \(OSError: no config\.json "
                                         r"here\)$"):
        with loading_model("runs/teacher", "a causal LM"):
            raise OSError("no config.json\n here")
    with pytest.raises(KeyError):  # not a load error: a bug, with its traceback
        with loading_model("runs/teacher", "a causal LM"):
            raise KeyError("bug")
