"""Config fuzzing: any YAML text or mapping either loads or raises `ConfigError`, quickly."""

import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moa_graph import ConfigError, MoAConfig, load_config

KEYS = [
    "moa",
    "default_preset",
    "presets",
    "providers",
    "review",
    "fast",
    "enabled",
    "reference_models",
    "aggregator",
    "provider",
    "model",
    "temperature",
    "max_tokens",
    "timeout",
    "base_url",
    "api_key_env",
    "api_key",
    "max_retries",
    "input_cost_per_mtok",
    "cache_write_cost_per_mtok",
    "requests_per_second",
    "max_burst",
    "tools",
    "name",
    "x",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["openai", "moa", "custom", "gpt-5.5", "review"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.integers(0, 3)), children, max_size=5),
    ),
    max_leaves=25,
)
FUZZ = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
_DIR = Path(tempfile.mkdtemp(prefix="moa-fuzz-"))


def _loads_or_config_error(source) -> None:
    try:
        config = load_config(source)
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc).strip()
    else:
        assert isinstance(config, MoAConfig)
        assert config.default_preset in config.presets


@FUZZ
@given(VALUES)
def test_any_mapping_under_moa_loads_or_raises_config_error(body):
    _loads_or_config_error({"moa": body})


@FUZZ
@given(VALUES)
def test_any_top_level_value_loads_or_raises_config_error(data):
    if isinstance(data, dict):
        _loads_or_config_error(data)
    else:
        path = _DIR / "value.yaml"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        _loads_or_config_error(path)


@FUZZ
@given(st.text(max_size=300))
def test_any_yaml_text_loads_or_raises_config_error(text):
    path = _DIR / "text.yaml"
    path.write_text(text, encoding="utf-8")
    _loads_or_config_error(path)


@FUZZ
@given(st.text(alphabet="moa:{}[]-,\n &*!|>'\"#%@`0123456789abcdefprsegt_", max_size=200))
def test_yaml_punctuation_soup_loads_or_raises_config_error(text):
    path = _DIR / "soup.yaml"
    path.write_text(text, encoding="utf-8")
    _loads_or_config_error(path)


def test_an_alias_bomb_is_refused_quickly():
    # A few lines of YAML anchors that expand to a billion nodes must not hang validation.
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    lines.append("moa: {presets: {p: {reference_models: *a8, aggregator: *a8}}}")
    path = _DIR / "bomb.yaml"
    path.write_text("\n".join(lines), encoding="utf-8")
    try:
        load_config(path)
    except ConfigError as exc:
        assert str(exc).startswith(f"{path}: ")
    else:
        raise AssertionError("an alias bomb must not load")


def test_binary_garbage_is_a_config_error():
    path = _DIR / "garbage.yaml"
    path.write_bytes(b"\xff\xfe\x00moa\x00\x81")
    try:
        load_config(path)
    except ConfigError as exc:
        assert str(path) in str(exc)
    else:
        raise AssertionError("binary garbage must not load")
