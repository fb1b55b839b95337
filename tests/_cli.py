"""Helper shared by tests that run commands in fresh processes."""

import subprocess


def run(cmd, cwd, env, ok=True) -> str:
    """Run ``cmd`` (a list) in a fresh process; return stdout+stderr, asserting the exit status (0 iff ``ok``)."""
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    text = out.stdout + out.stderr
    assert (out.returncode == 0) == ok, f"{cmd} exited {out.returncode}:\n{text[-4000:]}"
    return text
