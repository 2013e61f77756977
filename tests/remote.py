"""Run Python in a fresh process that cannot import this repository (as a Hub user would)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_isolated(code: str, cwd: Path, block: tuple[str, ...] = ()) -> str:
    """Run ``code`` with cwd ``cwd``, no repo on ``sys.path`` and the modules in ``block`` unimportable.

    Returns stdout; raises ``AssertionError`` with stderr when the process fails.
    """
    prelude = textwrap.dedent(f"""
        import sys
        sys.path = [p for p in sys.path if p not in ("", ".", {str(REPO)!r}, {str(REPO / "tests")!r})]
        from importlib.machinery import PathFinder
        class HidingPathFinder(PathFinder):  # the blocked packages look uninstalled
            @classmethod
            def find_spec(cls, name, path=None, target=None):
                if name.split(".")[0] in {list(block)!r}:
                    return None
                return PathFinder.find_spec(name, path, target)
        sys.meta_path = [HidingPathFinder if f is PathFinder else f for f in sys.meta_path]
        try:
            import modeling_d2llm
        except ImportError:
            pass
        else:
            raise SystemExit("the repository is importable: the check would not be isolated")
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_MODULES_CACHE=str(cwd / "hf_modules"))
    result = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout
