"""The wheel ships the license and the metadata pyproject.toml claims.

The wheel is built offline from a copy of the sources, with setuptools' build hook called
directly (no build isolation, so nothing is downloaded; the repository is left untouched).
"""

import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from email.message import Message
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HOME = "https://github.com/moa-graph/moa-graph"
DIST_INFO = "moa_graph-0.1.0.dist-info"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "moa_graph", source / "moa_graph", ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    build = "import sys, setuptools.build_meta as b; print(b.build_wheel(sys.argv[1]))"
    done = subprocess.run(
        [sys.executable, "-c", build, str(out)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    name = done.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(out / name) as built:
        yield built


def _metadata(wheel: zipfile.ZipFile) -> Message:
    return Parser().parsestr(wheel.read(f"{DIST_INFO}/METADATA").decode())


def test_the_wheel_ships_the_mit_license_of_the_repository(wheel: zipfile.ZipFile) -> None:
    shipped = wheel.read(f"{DIST_INFO}/licenses/LICENSE")
    assert shipped == (ROOT / "LICENSE").read_bytes()
    text = shipped.decode()
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 the moa_graph authors" in text
    assert "Permission is hereby granted, free of charge" in text


def test_the_metadata_names_the_license_and_its_file(wheel: zipfile.ZipFile) -> None:
    metadata = _metadata(wheel)
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert not [c for c in metadata.get_all("Classifier", []) if c.startswith("License ::")]


def test_the_metadata_names_the_authors_and_the_project_urls(wheel: zipfile.ZipFile) -> None:
    metadata = _metadata(wheel)
    assert metadata["Author"] == "the moa_graph authors"
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL", []))
    assert urls == {"Homepage": HOME, "Repository": HOME, "Issues": f"{HOME}/issues"}


def test_the_classifiers_claim_what_the_wheel_is(wheel: zipfile.ZipFile) -> None:
    metadata = _metadata(wheel)
    classifiers = metadata.get_all("Classifier", [])
    assert "Typing :: Typed" in classifiers and "moa_graph/py.typed" in wheel.namelist()
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert metadata["Requires-Python"] == ">=3.11"
    assert {"langgraph", "mixture-of-agents"} <= set(metadata["Keywords"].split(","))


def test_the_wheel_ships_the_package_alone(wheel: zipfile.ZipFile) -> None:
    top_level = {name.split("/", 1)[0] for name in wheel.namelist()}
    assert top_level == {"moa_graph", DIST_INFO}
