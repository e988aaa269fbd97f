"""The starter config `moa-graph init` writes, and what it tells a newcomer to do next.

`STARTER_CONFIG` is a commented `moa.yaml` with two presets: `review` on real providers
(OpenAI and OpenRouter, each key read from its environment variable, never from the file)
and `offline` on the bundled stand-in server (`moa-graph stub-server`), which needs no key.

Example:
    >>> path = write_starter("moa.yaml")  # doctest: +SKIP
    >>> print(next_steps(path))  # doctest: +SKIP
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from moa_graph.config import CONFIG_ENV_VAR

__all__ = [
    "STARTER_CONFIG",
    "STARTER_FILE",
    "STARTER_KEY_VARS",
    "StarterExistsError",
    "next_steps",
    "write_starter",
]

STARTER_FILE = "moa.yaml"
"""Where `moa-graph init` writes by default: the file config discovery finds in `.`."""

STARTER_KEY_VARS = ("OPENAI_API_KEY", "OPENROUTER_API_KEY")
"""The variables the `review` preset of `STARTER_CONFIG` reads its keys from."""

_STAND_IN_URL = "http://127.0.0.1:8765/v1"
"""Where `moa-graph stub-server` listens by default."""

STARTER_CONFIG = f"""\
# moa.yaml: Mixture-of-Agents presets for moa-graph (written by `moa-graph init`).
#
# A preset names reference models, which answer each question in parallel, and an
# aggregator, which reads their answers as private advice and gives the final answer
# (calling tools if it needs to). Every key is in README.md, "Config reference".
#
# Keys never go in this file: each provider reads its key from an environment variable
# (openai: OPENAI_API_KEY, openrouter: OPENROUTER_API_KEY, ...), and `api_key_env` on a
# provider or a model names another one.
moa:
  default_preset: review          # the preset `moa-graph run` uses without --preset

  providers:                      # OpenAI-compatible endpoints besides the built-in ones
    standin: {{base_url: "{_STAND_IN_URL}"}}   # `moa-graph stub-server`; no key
    # mine: {{base_url: "https://llm.example.com/v1", api_key_env: MINE_API_KEY}}

  presets:
    review:                       # real models: export the two keys above first
      reference_models:           # asked in parallel; their answers are labelled in this order
        - {{provider: openai, model: gpt-5.5, temperature: 0.7}}
        - {{provider: openrouter, model: deepseek/deepseek-v4-pro}}
      aggregator: {{provider: openrouter, model: anthropic/claude-opus-4.8}}

    offline:                      # the stand-in: no network, no keys, canned answers
      reference_models:
        - {{provider: standin, model: analyst}}
        - {{provider: standin, model: skeptic}}
        - {{provider: standin, model: builder}}
      aggregator: {{provider: standin, model: aggregator}}
"""
"""The commented starter `moa.yaml`; it loads with `load_config` as it is."""


class StarterExistsError(FileExistsError):
    """The target file exists and `force` was not given: nothing was written."""


def write_starter(path: str | os.PathLike[str] = STARTER_FILE, *, force: bool = False) -> Path:
    """Write `STARTER_CONFIG` to `path` (a directory gets a `moa.yaml` inside it).

    Args:
        path: The file to write, or an existing directory to write `moa.yaml` into.
        force: Overwrite an existing file instead of refusing.

    Returns:
        The file written.

    Raises:
        StarterExistsError: The file exists and `force` is false.
        OSError: The file cannot be written (e.g. its directory does not exist).
    """
    target = Path(path)
    if target.is_dir():
        target = target / STARTER_FILE
    try:  # "x": an existing file is refused atomically, never truncated
        with target.open("w" if force else "x", encoding="utf-8") as file:
            file.write(STARTER_CONFIG)
    except FileExistsError:
        raise StarterExistsError(f"{target} already exists: pass --force to overwrite it") from None
    return target


def next_steps(path: Path) -> str:
    """What to do after `write_starter(path)`: the keys to export and the commands to run."""
    # Without --config, `run` finds ./moa.yaml only when $MOA_GRAPH_CONFIG names no file.
    found = path.resolve() == Path(STARTER_FILE).resolve() and not os.environ.get(CONFIG_ENV_VAR)
    config = "" if found else f" --config {shlex.quote(str(path))}"
    exports = [
        f"  export {name}=..." + ("   # already set" if os.environ.get(name) else "")
        for name in STARTER_KEY_VARS
    ]
    return "\n".join(
        [
            f"wrote {path}: preset review (OpenAI and OpenRouter models) and preset offline "
            "(the stand-in server)",
            "",
            "Run review with your own keys:",
            *exports,
            f'  moa-graph run{config} "Review this plan: ..."',
            "",
            "Or with no keys, on the stand-in server:",
            "  moa-graph stub-server &    # the stand-in, on 127.0.0.1:8765",
            f'  moa-graph run{config} --preset offline "What is 17 * 23?"',
            "",
            'No config at all: moa-graph run --offline "What is 17 * 23?"',
        ]
    )
