"""Helpers shared by tests that run the project's commands: in fresh processes, or a script of scripts/ in-process."""

import importlib.util
import subprocess
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def run(cmd, cwd, env, ok=True) -> str:
    """Run ``cmd`` (a list) in a fresh process; return stdout+stderr, asserting the exit status (0 iff ``ok``)."""
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    text = out.stdout + out.stderr
    assert (out.returncode == 0) == ok, f"{cmd} exited {out.returncode}:\n{text[-4000:]}"
    return text


def load_script(name: str):
    """scripts/<name>.py imported as a module (the scripts are not installed), e.g. to call its ``main`` in-process."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
