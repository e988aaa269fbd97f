"""Every notebook in notebooks/ runs top to bottom, offline, without a cell error.

The committed notebooks hold the outputs of such a run; to refresh them after a change:
`.venv/bin/python -m tests.test_notebooks`.
"""

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
    "01_quickstart": ["The result is 391.", "stub:analyst", "5 calls,", "```mermaid"],
    "02_compose": ["answered by moa", "answered by the single model", "The result is 391."],
    "03_debug": [
        "'type': 'moa_reference'",
        "token:",
        "Prefer write-through",
        "next: ('aggregator',)",
    ],
}


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


def _output_text(notebook: nbformat.NotebookNode) -> str:
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", ""))
            texts.extend(str(value) for value in output.get("data", {}).values())
    return "\n".join(texts)


def test_every_notebook_is_covered():
    assert {path.stem for path in NOTEBOOKS} == set(EXPECTED)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_the_notebook_runs_offline_top_to_bottom(path, monkeypatch):
    monkeypatch.delenv("MOA_NOTEBOOK_REAL_PROVIDERS", raising=False)
    notebook = execute(path)
    text = _output_text(notebook)
    for expected in EXPECTED[path.stem]:
        assert expected in text, f"{path.name}: no output shows {expected!r}"
    assert "Offline: set MOA_NOTEBOOK_REAL_PROVIDERS=1" in text  # the real-provider cell stayed off


if __name__ == "__main__":
    for notebook_path in NOTEBOOKS:
        nbformat.write(execute(notebook_path), notebook_path)
        print(f"executed and saved {notebook_path.relative_to(ROOT)}", file=sys.stderr)
