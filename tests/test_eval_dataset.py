"""Evaluation datasets: the JSONL format, its errors (naming file and line), the bundled set."""

import pytest

from moa_graph.evaluation import Dataset, DatasetError, EvalItem, bundled_dataset, load_dataset


def _write(tmp_path, text, name="questions.jsonl", mode="w"):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_a_jsonl_file_loads_in_order_with_optional_ids_and_references(tmp_path):
    path = _write(
        tmp_path,
        '{"id": "a", "prompt": "What is 2 + 3?", "reference": 5}\n\n{"prompt": "Say hello."}\n',
    )
    dataset = load_dataset(path)
    assert dataset.name == "questions"
    assert dataset.items == (
        EvalItem(id="a", prompt="What is 2 + 3?", reference="5"),
        EvalItem(id="3", prompt="Say hello.", reference=None),  # its line number
    )
    assert not dataset.has_references


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"prompt": "ok"}\n{"prompt": "broken"\n', r"questions\.jsonl:2: not valid JSON"),
        ('{"prompt": "ok"}\n["a list"]\n', r"questions\.jsonl:2: expected a JSON object"),
        ('{"reference": "5"}\n', r"questions\.jsonl:1: 'prompt' is required"),
        ('{"prompt": "  "}\n', r"questions\.jsonl:1: 'prompt' must be a non-empty string"),
        ('{"prompt": "q", "answer": "5"}\n', r"questions\.jsonl:1: unknown key 'answer'"),
        ('{"prompt": "q", "reference": ["5"]}\n', r"questions\.jsonl:1: 'reference' must be"),
        ('{"prompt": "q", "id": true}\n', r"questions\.jsonl:1: 'id' must be"),
        (
            '{"id": 1, "prompt": "q"}\n{"id": "x", "prompt": "r"}\n{"id": "1", "prompt": "s"}\n',
            r"questions\.jsonl:3: id '1' appears twice \(first on line 1\)",
        ),
        ("\n\n", r"questions\.jsonl: the dataset has no items"),
    ],
)
def test_a_bad_line_is_an_error_naming_the_file_and_the_line(tmp_path, text, message):
    with pytest.raises(DatasetError, match=message):
        load_dataset(_write(tmp_path, text))


def test_a_file_that_is_not_utf8_names_the_line(tmp_path):
    path = _write(tmp_path, b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(DatasetError, match=r"questions\.jsonl:2: not UTF-8"):
        load_dataset(path)


def test_a_missing_file_is_one_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match=r"nope\.jsonl: cannot read the dataset"):
        load_dataset(tmp_path / "nope.jsonl")


def test_a_dataset_built_in_code_is_checked_like_a_file():
    dataset = Dataset.of([{"prompt": "What is 2 + 3?", "reference": "5"}], name="mine")
    assert dataset.items[0] == EvalItem(id="1", prompt="What is 2 + 3?", reference="5")
    with pytest.raises(DatasetError, match="mine:2: 'prompt' is required"):
        Dataset.of([{"prompt": "a"}, {"id": "b"}], name="mine")


def test_the_bundled_arithmetic_set_has_a_dozen_referenced_prompts():
    dataset = bundled_dataset()
    assert dataset.name == "arithmetic"
    assert len(dataset) == 12
    assert dataset.has_references
    assert len({item.id for item in dataset}) == 12
    with pytest.raises(DatasetError, match="bundled datasets: arithmetic"):
        bundled_dataset("trivia")
