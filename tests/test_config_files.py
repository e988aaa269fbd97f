"""Reading a config file: a regular file under the size cap only; hostile YAML is a `ConfigError`.

Each problem ends promptly as one line naming the file, never as a hang, an exhausted memory
or another exception type.
"""

import os
import textwrap
from pathlib import Path

import pytest

from moa_graph import ConfigError, load_config
from moa_graph.config import MAX_CONFIG_BYTES

PRESET = """\
moa:
  presets:
    p:
      reference_models: [{provider: openai, model: gpt-5.5}]
      aggregator: {provider: openai, model: %s}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "moa.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert len(message.splitlines()) == 1
    return message


@pytest.mark.timeout(10)
def test_a_fifo_is_refused_at_once_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "moa.yaml"
    os.mkfifo(fifo)
    assert _error(fifo) == f"{fifo}: not a regular file (a FIFO)"


@pytest.mark.timeout(10)
@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero here")
def test_an_endless_device_is_refused_without_reading_it():
    assert _error(Path("/dev/zero")) == "/dev/zero: not a regular file (a character device)"


def test_a_directory_is_refused(tmp_path):
    assert _error(tmp_path) == f"{tmp_path}: not a regular file (a directory)"


def test_a_file_over_the_size_cap_is_refused(tmp_path):
    text = PRESET % "big" + "#" * MAX_CONFIG_BYTES + "\n"
    path = _write(tmp_path, text)
    assert _error(path) == f"{path}: config file is larger than {MAX_CONFIG_BYTES} bytes"


def test_a_file_of_exactly_the_size_cap_loads(tmp_path):
    head = PRESET % "big"
    path = _write(tmp_path, head + "#" * (MAX_CONFIG_BYTES - len(head) - 1) + "\n")
    assert path.stat().st_size == MAX_CONFIG_BYTES
    assert load_config(path).preset().aggregator.model == "big"


@pytest.mark.timeout(10)
def test_deeply_nested_brackets_are_a_yaml_error_not_a_recursion_error(tmp_path):
    path = _write(tmp_path, "moa: " + "[" * 20_000 + "]" * 20_000 + "\n")
    assert (
        _error(path) == f"{path}: invalid YAML at line 1, column 55: nested deeper than 50 levels"
    )


def test_a_date_like_value_stays_a_string(tmp_path):
    # The SafeLoader would make 2026-13-45 a date and raise ValueError (month 13).
    path = _write(tmp_path, PRESET % "2026-13-45")
    assert load_config(path).preset().aggregator.model == "2026-13-45"


def test_an_explicit_impossible_timestamp_is_a_config_error(tmp_path):
    message = _error(_write(tmp_path, PRESET % "!!timestamp 2026-13-45"))
    assert "invalid YAML: ValueError: month must be in 1..12" in message


@pytest.mark.timeout(10)
def test_a_five_thousand_digit_integer_is_a_yaml_error_at_its_line(tmp_path):
    path = _write(tmp_path, PRESET % "m" + "      max_tokens: " + "9" * 5_000 + "\n")
    assert _error(path) == (
        f"{path}: invalid YAML at line 6, column 19: integer of 5000 characters is too long"
    )


def test_a_key_with_a_line_break_gives_a_one_line_error(tmp_path):
    path = _write(tmp_path, '"evil\\nkey": 1\n')
    assert _error(path) == f"{path}: evil key: unknown key (the config lives under 'moa')"


def test_text_that_is_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "moa.yaml"
    path.write_bytes(b"moa: \xff\n")
    assert _error(path) == f"{path}: not UTF-8 text (byte 5)"
