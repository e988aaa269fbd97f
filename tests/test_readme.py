"""The README's code runs as written: its commands are the ones CI runs, its Python blocks run
offline in a fresh directory, its config examples load.

A block that needs more than a fresh clone with the `test` extra says so on its first line,
`# needs: ...`, and is only compiled. `# needs: pip install 'moa-graph[<extras>]'` naming
extras the `test` extra includes is met here, so such a block runs too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from moa_graph import load_config

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCK_TIMEOUT_S = 180
_FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>\w*)\n(?P<body>.*?)\n(?P=indent)```$", re.S | re.M)
_NEEDS = re.compile(r"^# needs: (?P<what>.+)$")
_EXTRAS_ONLY = re.compile(r"pip install 'moa-graph\[(?P<extras>[\w,-]+)\]'")

# Runs a file as __main__ with every socket outside loopback refused, even one the code
# catches: any attempt makes the run fail at the end.
_LOOPBACK_ONLY = r"""
import ipaddress, runpy, socket, sys

attempts = []

def _loopback(host):
    if host is None or host in ("localhost", b"localhost"):
        return True
    try:
        return ipaddress.ip_address(host.decode() if isinstance(host, bytes) else host).is_loopback
    except ValueError:
        return False

def _guard(event, args):
    if event == "socket.getaddrinfo":
        host = args[0]
    elif event == "socket.connect" and args[0].family in (socket.AF_INET, socket.AF_INET6):
        host = args[1][0]
    else:
        return
    if not _loopback(host):
        attempts.append(f"{event} {host!r}")
        raise OSError(f"README code runs offline: {host!r} is not loopback")

sys.addaudithook(_guard)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
if attempts:
    sys.exit("network use outside loopback: " + ", ".join(attempts))
"""


@dataclass(frozen=True)
class Block:
    """A fenced code block of the README."""

    lang: str
    source: str
    line: int
    section: str
    """The heading it sits under (`##` or `###`)."""

    @property
    def needs(self) -> str | None:
        first = self.source.splitlines()[0] if self.source else ""
        match = _NEEDS.match(first)
        return match["what"] if match else None

    @property
    def id(self) -> str:
        return f"{re.sub(r'[^a-z0-9]+', '-', self.section.lower()).strip('-')}-line{self.line}"


def _blocks(lang: str) -> list[Block]:
    headings = [(m.start(), m[1]) for m in re.finditer(r"^#{2,3} (.+)$", README, flags=re.M)]
    blocks = []
    for fence in _FENCE.finditer(README):
        if fence["lang"] == lang:
            section = next((h for at, h in reversed(headings) if at < fence.start()), "top")
            line = README.count("\n", 0, fence.start()) + 1
            source = textwrap.dedent(fence["body"])
            blocks.append(Block(lang, source, line, section))
    return blocks


def _test_extras() -> set[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    extras = set()
    for requirement in pyproject["project"]["optional-dependencies"]["test"]:
        match = re.fullmatch(r"moa-graph\[(?P<extras>[\w,-]+)\]", requirement)
        if match:
            extras.update(match["extras"].split(","))
    return extras


def _met_here(block: Block) -> bool:
    """No `# needs:`, or only extras this (the `test`) install has."""
    if block.needs is None:
        return True
    match = _EXTRAS_ONLY.fullmatch(block.needs)
    return bool(match) and set(match["extras"].split(",")) <= _test_extras()


def _offline_env(home: Path) -> dict[str, str]:
    """This environment without API keys, moa_graph settings or tracing; a fresh HOME."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.endswith("_API_KEY")
        and not name.startswith(("MOA_GRAPH_", "LANGSMITH_", "LANGCHAIN_", "OPENAI_"))
    }
    home.mkdir(exist_ok=True)
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))
    env.update(XDG_STATE_HOME=str(home / ".state"), LANGSMITH_TRACING="false")
    return env


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run Python `args` in `cwd`, offline: loopback only, no keys, no config found."""
    return subprocess.run(
        [sys.executable, "-c", _LOOPBACK_ONLY, *args],
        cwd=cwd,
        env=_offline_env(cwd / "home"),
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
    )


def _run_source(source: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = cwd / "readme_block.py"
    script.write_text(source, encoding="utf-8")
    return _run([str(script)], cwd)


def _explain(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit status {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"


PYTHON_BLOCKS = _blocks("python")
RUNNABLE = [block for block in PYTHON_BLOCKS if _met_here(block)]
NOT_RUN = [block for block in PYTHON_BLOCKS if not _met_here(block)]


def _bash_blocks() -> list[str]:
    """The bash blocks' commands, without their `# needs:` line."""
    return ["\n".join(b.source.splitlines()[b.needs is not None :]) for b in _blocks("bash")]


def test_ci_runs_the_readmes_test_command():
    test_command = next(b for b in _bash_blocks() if "pytest" in b)
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert test_command in ci_lines


def test_the_readmes_first_command_runs_the_offline_demo():
    first = _bash_blocks()[0]
    assert first.endswith('moa-graph run --offline "What is 17 * 23?"')
    assert "pip install" in first


@pytest.mark.timeout(BLOCK_TIMEOUT_S + 60)
@pytest.mark.parametrize("block", RUNNABLE, ids=[block.id for block in RUNNABLE])
def test_the_python_block_runs_offline_as_written(block, tmp_path):
    done = _run_source(block.source, tmp_path)
    assert done.returncode == 0, f"README.md line {block.line} ({block.section}): {_explain(done)}"


@pytest.mark.parametrize("block", NOT_RUN, ids=[block.id for block in NOT_RUN])
def test_a_block_needing_more_than_a_clone_still_compiles(block):
    compile(block.source, f"README.md line {block.line}", "exec")


@pytest.mark.parametrize(
    "section",
    [
        "Python quickstart",
        "As a chat model",
        "As create_agent middleware",
        "Composing it into larger agents",
    ],
)
def test_the_newcomer_sections_show_code_that_runs_offline(section):
    assert any(block.section == section for block in RUNNABLE), f"{section}: no block runs here"


def test_only_the_real_provider_quickstart_is_left_unrun():
    assert len(PYTHON_BLOCKS) >= 6, "the README's Python blocks are no longer found"
    assert [block.section for block in NOT_RUN] == ["Python quickstart"], [b.id for b in NOT_RUN]
    assert "API_KEY" in str(NOT_RUN[0].needs)


@pytest.mark.timeout(BLOCK_TIMEOUT_S + 60)
@pytest.mark.parametrize(
    "module", sorted(set(re.findall(r"python -m (moa_graph\.examples\.\w+)", README)))
)
def test_the_examples_the_readme_names_run_offline_and_show_something(module, tmp_path):
    done = _run_source(
        f"import runpy\nrunpy.run_module({module!r}, run_name='__main__')\n", tmp_path
    )
    assert done.returncode == 0, _explain(done)
    assert done.stdout.strip(), f"python -m {module} printed nothing"


def test_the_readmes_config_examples_load():
    configs = [yaml.safe_load(block.source) for block in _blocks("yaml")]
    assert len(configs) >= 3
    for config in configs:
        assert load_config(config).presets


def test_a_block_that_reaches_past_loopback_fails_even_when_it_catches_the_error(tmp_path):
    source = textwrap.dedent(
        """
        import socket
        try:
            socket.create_connection(("203.0.113.7", 443), timeout=1)
        except OSError as exc:
            print("caught", exc)
        """
    )
    done = _run_source(source, tmp_path)
    assert done.returncode != 0
    assert "network use outside loopback: socket.getaddrinfo '203.0.113.7'" in done.stderr


def test_a_block_that_raises_fails(tmp_path):
    done = _run_source("raise RuntimeError('broken snippet')\n", tmp_path)
    assert done.returncode != 0
    assert "RuntimeError: broken snippet" in done.stderr
