"""Evaluation datasets: a JSONL file of prompts, each optionally with a reference answer.

One JSON object per line:

    {"id": "mul-1", "prompt": "What is 17 * 23?", "reference": "391"}

`prompt` is required (a non-empty string); `id` (a string or an integer, default: the line
number) and `reference` (a string or a number, the expected answer) are optional. Blank lines
are skipped. Any other key, a repeated id, a line that is not a JSON object or a file that is
not UTF-8 is a `DatasetError` naming the file and the line.

The package ships `arithmetic`, a dozen small questions made for the offline demo
(`bundled_dataset()`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "BUNDLED_DATASETS",
    "MAX_DATASET_BYTES",
    "Dataset",
    "DatasetError",
    "EvalItem",
    "bundled_dataset",
    "load_dataset",
]

BUNDLED_DATASETS = ("arithmetic",)
"""Datasets shipped in `moa_graph/evaluation/data/`, by name."""

MAX_DATASET_BYTES = 64 * 1024 * 1024
"""Largest dataset file `load_dataset` reads (64 MiB)."""

_KEYS = ("id", "prompt", "reference")


class DatasetError(ValueError):
    """A dataset problem; the message names the file and the line, e.g. `data.jsonl:3: ...`."""


@dataclass(frozen=True)
class EvalItem:
    """One prompt of a dataset."""

    id: str
    """Unique within its dataset (the line number when the file gives none)."""
    prompt: str
    """What every arm is asked, as the user's only message."""
    reference: str | None = None
    """The expected answer; None: the arms are compared by the pairwise judge."""


@dataclass(frozen=True)
class Dataset:
    """A named list of prompts.

    Example:
        >>> Dataset("mine", (EvalItem("1", "What is 2 + 3?", "5"),)).has_references
        True
    """

    name: str
    items: tuple[EvalItem, ...]
    source: str | None = None
    """The file it was read from (None: built in code)."""

    @property
    def has_references(self) -> bool:
        """Whether every item has a reference answer (then no judge is needed)."""
        return all(item.reference is not None for item in self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[EvalItem]:
        return iter(self.items)

    @classmethod
    def of(cls, items: Iterable[EvalItem | Mapping[str, Any]], *, name: str = "dataset") -> Dataset:
        """A dataset built in code, from items or mappings of the JSONL shape.

        Raises:
            DatasetError: As `load_dataset` would for the same records (`name:N` for item N).
        """
        parsed = [
            (
                number,
                item if isinstance(item, EvalItem) else _item(item, number, f"{name}:{number}"),
            )
            for number, item in enumerate(items, start=1)
        ]
        return _checked(name, parsed, source=None, where=name)


def load_dataset(path: str | os.PathLike[str]) -> Dataset:
    """Read a JSONL dataset file.

    Args:
        path: The file; its name without the extension becomes the dataset's name.

    Returns:
        The dataset, items in file order.

    Raises:
        DatasetError: The file cannot be read, is too large, is not UTF-8, or a line is not a
            valid item; the message names the file and the line.

    Example:
        >>> load_dataset("questions.jsonl").items[0].prompt  # doctest: +SKIP
        'What is 17 * 23?'
    """
    source = Path(path)
    try:
        if source.stat().st_size > MAX_DATASET_BYTES:
            raise DatasetError(f"{source}: larger than {MAX_DATASET_BYTES} bytes")
        raw = source.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{source}: cannot read the dataset: {exc.strerror or exc}") from None
    return _parse(raw, name=source.stem, source=str(source))


def bundled_dataset(name: str = "arithmetic") -> Dataset:
    """A dataset shipped with the package (`BUNDLED_DATASETS`).

    Raises:
        DatasetError: No bundled dataset has that name.
    """
    if name not in BUNDLED_DATASETS:
        raise DatasetError(
            f"no bundled dataset {name!r}; bundled datasets: {', '.join(BUNDLED_DATASETS)}"
        )
    raw = resources.files("moa_graph.evaluation").joinpath(f"data/{name}.jsonl").read_bytes()
    return _parse(raw, name=name, source=f"moa_graph/evaluation/data/{name}.jsonl")


def _parse(raw: bytes, *, name: str, source: str) -> Dataset:
    items: list[tuple[int, EvalItem]] = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        where = f"{source}:{number}"
        try:
            text = line.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{where}: not UTF-8 text (byte {exc.start + 1})") from None
        if not text:
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where}: not valid JSON: {exc.msg} (column {exc.colno})") from None
        items.append((number, _item(record, number, where)))
    return _checked(name, items, source=source, where=source)


def _item(record: Any, number: int, where: str) -> EvalItem:
    if not isinstance(record, Mapping):
        raise DatasetError(f"{where}: expected a JSON object with 'prompt', got {_kind(record)}")
    unknown = sorted(set(record) - set(_KEYS))
    if unknown:
        raise DatasetError(f"{where}: unknown key {unknown[0]!r} (expected {', '.join(_KEYS)})")
    prompt = record.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        problem = "is required" if prompt is None else "must be a non-empty string"
        raise DatasetError(f"{where}: 'prompt' {problem}")
    reference = record.get("reference")
    return EvalItem(
        id=_text(record.get("id", number), "id", where),
        prompt=prompt,
        reference=None if reference is None else _text(reference, "reference", where),
    )


def _text(value: Any, key: str, where: str) -> str:
    # A number is taken as written ("391"); a bool is not a number here.
    if isinstance(value, str) or (isinstance(value, int | float) and not isinstance(value, bool)):
        return str(value)
    raise DatasetError(f"{where}: {key!r} must be a string or a number, got {_kind(value)}")


def _checked(
    name: str, items: list[tuple[int, EvalItem]], *, source: str | None, where: str
) -> Dataset:
    if not items:
        raise DatasetError(f"{where}: the dataset has no items")
    first: dict[str, int] = {}
    for number, item in items:
        if item.id in first:
            raise DatasetError(
                f"{where}:{number}: id {item.id!r} appears twice (first on line {first[item.id]})"
            )
        first[item.id] = number
    return Dataset(name=name, items=tuple(item for _, item in items), source=source)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )
