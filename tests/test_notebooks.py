"""Every notebook in notebooks/ runs top to bottom, offline, without a cell error.

The committed notebooks hold the outputs of such a run; to refresh them after a change:
`.venv/bin/python -m tests.test_notebooks`.
"""

import base64
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 120
# A text each notebook's outputs must show: the behaviour it is there to demonstrate.
EXPECTED = {
    "01_quickstart": ["The result is 391.", "stub:analyst", "5 calls,"],
    "02_compose": [
        "answered by moa",
        "answered by the single model",
        "The result is 391.",
        # MoAMiddleware: the preset's aggregator idles, the agent's model acts; two turns.
        "[('analyst', 1), ('boss', 2), ('builder', 1), ('skeptic', 1)]",
        "'aggregator openai:boss'",
        "The result is 23.",
        "8 messages in the thread",
    ],
    "03_debug": [
        "'type': 'moa_reference'",
        "token:",
        "Prefer write-through",
        "next: ('aggregator',)",
        "aggregator stub:aggregator",  # the timeline's rows
        "tools ",
    ],
    "04_eval": [
        "| `ref:stub:guesser` | stub:guesser alone | 0.21 [0.04, 0.42] | 1 / 3 / 8 |",
        "ref:stub:guesser      score=1.0 outcome=1.0  The answer is 42.",
        "verdicts (guesser first, guesser second): ('A', 'A')",
        "same position in both orders on 2 of 2 pairs",
        "win_rate_vs_cost.png True",
    ],
}
# The pictures each notebook draws (matplotlib, offline): 01 and 02 their graphs, 03 a turn's
# timeline, 04 the evaluation's win rate against cost. Each is a real drawing, small enough
# to commit with the outputs.
PICTURES = {"01_quickstart": 1, "02_compose": 1, "03_debug": 1, "04_eval": 1}
PICTURE_BYTES = (5_000, 60_000)


def execute(path: Path) -> nbformat.NotebookNode:
    """Run a notebook in a fresh kernel of this interpreter; raise on the first cell error."""
    notebook = nbformat.read(path, as_version=4)
    # No kernelspec directories: "python3" is then ipykernel's own spec, which starts
    # `sys.executable` (this venv), whatever kernels the machine has installed.
    kernel = AsyncKernelManager(
        kernel_name="python3",
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[]),
    )
    NotebookClient(
        notebook,
        km=kernel,
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    return notebook


def _outputs(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [output for cell in notebook.cells for output in cell.get("outputs", [])]


def _output_text(notebook: nbformat.NotebookNode) -> str:
    texts = []
    for output in _outputs(notebook):
        texts.append(output.get("text", ""))
        data = output.get("data", {})
        texts.extend(str(value) for kind, value in data.items() if not kind.startswith("image/"))
    return "\n".join(texts)


def _pictures(notebook: nbformat.NotebookNode) -> list[bytes]:
    pngs = [output.get("data", {}).get("image/png") for output in _outputs(notebook)]
    return [base64.b64decode(png) for png in pngs if png]


def test_every_notebook_is_covered():
    assert {path.stem for path in NOTEBOOKS} == set(EXPECTED) == set(PICTURES)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_the_notebook_runs_offline_top_to_bottom(path, monkeypatch):
    monkeypatch.delenv("MOA_NOTEBOOK_REAL_PROVIDERS", raising=False)
    notebook = execute(path)
    text = _output_text(notebook)
    for expected in EXPECTED[path.stem]:
        assert expected in text, f"{path.name}: no output shows {expected!r}"
    assert "Offline: set MOA_NOTEBOOK_REAL_PROVIDERS=1" in text  # the real-provider cell stayed off
    pictures = _pictures(notebook)
    assert len(pictures) == PICTURES[path.stem], f"{path.name}: {len(pictures)} pictures"
    for png in pictures:
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert PICTURE_BYTES[0] < len(png) < PICTURE_BYTES[1], f"{path.name}: {len(png)} bytes"


if __name__ == "__main__":
    for notebook_path in NOTEBOOKS:
        nbformat.write(execute(notebook_path), notebook_path)
        print(f"executed and saved {notebook_path.relative_to(ROOT)}", file=sys.stderr)
