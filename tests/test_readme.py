"""The README's newcomer commands are the ones CI and the project actually run."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _bash_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)


def test_ci_runs_the_readmes_test_command():
    test_command = next(b for b in _bash_blocks() if "pytest" in b)
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert test_command in ci_lines


def test_the_readmes_first_command_runs_the_offline_demo():
    first = _bash_blocks()[0]
    assert first.endswith('moa-graph run --offline "What is 17 * 23?"')
    assert "pip install" in first
