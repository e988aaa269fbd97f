"""Config loading and validation: every problem is a `ConfigError` naming file and key path."""

import textwrap
from pathlib import Path

import pytest
import yaml

from moa_graph import ConfigError, ModelSpec, Preset, load_config

GOOD = """\
moa:
  default_preset: review
  providers:
    local: {base_url: "http://127.0.0.1:8000/v1", api_key_env: LOCAL_KEY}
  presets:
    review:
      enabled: true
      reference_models:
        - {provider: openai, model: gpt-5.5, temperature: 0.7}
        - {provider: openrouter, model: deepseek/deepseek-v4-pro}
      aggregator: {provider: openrouter, model: anthropic/claude-opus-4.8}
    fast:
      reference_models:
        - {provider: local, model: small}
      aggregator: {provider: local, model: big, max_tokens: 512, timeout: 30}
"""


def _write(tmp_path: Path, text: str, name: str = "moa.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _error(source) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(source)
    return str(info.value)


def _minimal(**preset_overrides) -> dict:
    preset = {
        "reference_models": [{"provider": "openai", "model": "a"}],
        "aggregator": {"provider": "openai", "model": "b"},
        **preset_overrides,
    }
    return {"moa": {"presets": {"review": preset}}}


def test_loads_the_documented_example(tmp_path):
    config = load_config(_write(tmp_path, GOOD))
    assert config.default_preset == "review"
    review = config.preset()
    assert review.name == "review" and review.enabled
    assert [m.label for m in review.reference_models] == [
        "openai:gpt-5.5",
        "openrouter:deepseek/deepseek-v4-pro",
    ]
    assert review.reference_models[0].temperature == 0.7
    assert review.aggregator.label == "openrouter:anthropic/claude-opus-4.8"
    assert config.preset("fast").aggregator.max_tokens == 512
    assert config.providers["local"].api_key_env == "LOCAL_KEY"


def test_a_mapping_loads_like_a_file():
    assert load_config(_minimal()).preset("review").aggregator.model == "b"


def test_default_preset_defaults_to_the_first_preset():
    config = _minimal()
    config["moa"]["presets"]["other"] = config["moa"]["presets"]["review"]
    assert load_config(config).default_preset == "review"


def test_missing_key_names_the_file_and_key_path(tmp_path):
    path = _write(
        tmp_path,
        GOOD.replace(
            "aggregator: {provider: openrouter, model: anthropic/claude-opus-4.8}",
            "aggregator: {provider: openrouter}",
        ),
    )
    assert _error(path) == f"{path}: moa.presets.review.aggregator: 'model' is required"


def test_unknown_preset_lists_the_available_ones(tmp_path):
    config = load_config(_write(tmp_path, GOOD))
    with pytest.raises(
        ConfigError, match=r"^MoA preset 'x' not found; available presets: review, fast$"
    ):
        config.preset("x")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"reference_models": [{"provider": "openai", "model": "a", "tempreature": 1}]},
            "moa.presets.review.reference_models[0]: unknown key 'tempreature'",
        ),
        (
            {"reference_models": []},
            "moa.presets.review.reference_models: a preset needs at least one reference model",
        ),
        ({"aggregator": None}, "moa.presets.review.aggregator: must be a mapping"),
        (
            {"reference_models": [{"provider": "moa", "model": "review"}]},
            "moa.presets.review.reference_models[0].provider: provider 'moa' is not allowed",
        ),
        (
            {"aggregator": {"provider": "openai", "model": "b", "temperature": "hot"}},
            "moa.presets.review.aggregator.temperature: Input should be a valid number",
        ),
        ({"enabled": "sometimes"}, "moa.presets.review.enabled: Input should be a valid boolean"),
        ({"name": "other"}, "moa.presets: preset 'review' is named 'other'"),
    ],
)
def test_preset_problems_name_their_key_path(change, expected):
    assert expected in _error(_minimal(**change))


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (
            {"requests_per_second": 0},
            "moa.presets.review.aggregator.requests_per_second: Input should be greater than 0",
        ),
        (
            {"requests_per_second": "fast"},
            "moa.presets.review.aggregator.requests_per_second: Input should be a valid number",
        ),
        (
            {"requests_per_second": 2, "max_burst": 0},
            "moa.presets.review.aggregator.max_burst: Input should be greater than or equal to 1",
        ),
        (
            {"max_burst": 4},
            "moa.presets.review.aggregator: 'max_burst' needs 'requests_per_second'",
        ),
        (
            {"requests_per_secnd": 2},
            "moa.presets.review.aggregator: unknown key 'requests_per_secnd'",
        ),
    ],
)
def test_model_rate_limits_are_validated_with_their_key_path(tmp_path, model, expected):
    preset = yaml.safe_dump(_minimal(aggregator={"provider": "openai", "model": "b", **model}))
    path = _write(tmp_path, preset)
    assert _error(path).startswith(f"{path}: {expected}")


@pytest.mark.parametrize(
    ("provider", "expected"),
    [
        ({"requests_per_second": -1}, "moa.providers.openai.requests_per_second: Input should"),
        ({"max_burst": 3}, "moa.providers.openai: 'max_burst' needs 'requests_per_second'"),
        ({"max_burst": 1.5, "requests_per_second": 1}, "moa.providers.openai.max_burst: Input"),
    ],
)
def test_provider_rate_limits_are_validated_with_their_key_path(tmp_path, provider, expected):
    config = _minimal()
    config["moa"]["providers"] = {"openai": provider}
    path = _write(tmp_path, yaml.safe_dump(config))
    assert _error(path).startswith(f"{path}: {expected}")


def test_rate_limits_load():
    config = _minimal(
        aggregator={"provider": "openai", "model": "b", "requests_per_second": 0.5, "max_burst": 2}
    )
    config["moa"]["providers"] = {"openai": {"requests_per_second": 10}}
    loaded = load_config(config)
    assert loaded.preset().aggregator.requests_per_second == 0.5
    assert loaded.preset().aggregator.max_burst == 2
    assert loaded.providers["openai"].requests_per_second == 10


def test_a_literal_api_key_is_refused_and_not_echoed():
    config = _minimal(aggregator={"provider": "openai", "model": "b", "api_key": "sk-live-123"})
    message = _error(config)
    assert message.startswith("moa.presets.review.aggregator: 'api_key' is not allowed")
    assert "api_key_env" in message
    assert "sk-live-123" not in message


def test_a_literal_api_key_on_a_provider_is_refused():
    config = _minimal()
    config["moa"]["providers"] = {"local": {"base_url": "http://x", "api_key": "secret-value"}}
    message = _error(config)
    assert message.startswith("moa.providers.local: 'api_key' is not allowed")
    assert "secret-value" not in message


def test_default_preset_must_name_a_preset():
    config = _minimal()
    config["moa"]["default_preset"] = "nope"
    assert _error(config) == (
        "moa.default_preset: 'nope' names no preset; available presets: review"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "moa: the config must be a mapping with a 'moa' key"),
        ("- a list\n", "moa: the config must be a mapping with a 'moa' key"),
        ("other: 1\n", "other: unknown key (the config lives under 'moa')"),
        ("moa: 3\n", "moa: must be a mapping"),
        ("moa:\n  presets: {}\n", "moa.presets: Dictionary should have at least 1 item"),
        ("moa: {}\n", "moa: 'presets' is required"),
    ],
)
def test_file_shape_problems(tmp_path, text, expected):
    path = _write(tmp_path, text)
    assert _error(path).startswith(f"{path}: {expected}")


def test_invalid_yaml_names_the_line(tmp_path):
    path = _write(tmp_path, "moa:\n  presets: [unclosed\n")
    assert _error(path).startswith(f"{path}: invalid YAML at line 3")


def test_a_missing_file_is_a_config_error(tmp_path):
    assert _error(tmp_path / "absent.yaml") == f"{tmp_path / 'absent.yaml'}: config file not found"


def test_discovery_prefers_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, GOOD)  # ./moa.yaml
    other = _write(
        tmp_path, GOOD.replace("default_preset: review", "default_preset: fast"), name="env.yaml"
    )
    monkeypatch.setenv("MOA_GRAPH_CONFIG", str(other))
    assert load_config().default_preset == "fast"
    monkeypatch.delenv("MOA_GRAPH_CONFIG")
    assert load_config().default_preset == "review"


def test_discovery_falls_back_to_the_user_config(tmp_path, monkeypatch):
    home = tmp_path / "home"
    user_config = home / ".config" / "moa-graph"
    user_config.mkdir(parents=True)
    _write(user_config, GOOD, name="config.yaml")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("MOA_GRAPH_CONFIG", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert load_config().source == str(user_config / "config.yaml")


def test_discovery_honours_xdg_config_home(tmp_path, monkeypatch):
    home_config = tmp_path / "home" / ".config" / "moa-graph"
    home_config.mkdir(parents=True)
    _write(home_config, GOOD, name="config.yaml")
    xdg_config = tmp_path / "xdg" / "moa-graph"
    xdg_config.mkdir(parents=True)
    _write(
        xdg_config, GOOD.replace("default_preset: review", "default_preset: fast"), "config.yaml"
    )
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("MOA_GRAPH_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    config = load_config()
    assert config.source == str(xdg_config / "config.yaml")
    assert config.default_preset == "fast"


def test_a_relative_xdg_config_home_is_ignored(tmp_path, monkeypatch):
    user_config = tmp_path / "home" / ".config" / "moa-graph"
    user_config.mkdir(parents=True)
    _write(user_config, GOOD, name="config.yaml")
    (tmp_path / "rel" / "moa-graph").mkdir(parents=True)
    _write(tmp_path / "rel" / "moa-graph", GOOD, name="config.yaml")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", "rel")  # the XDG spec: relative paths are invalid
    monkeypatch.delenv("MOA_GRAPH_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert load_config().source == str(user_config / "config.yaml")


def test_discovery_without_any_config_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("MOA_GRAPH_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    message = _error(None)
    assert "MOA_GRAPH_CONFIG" in message and "./moa.yaml" in message
    assert str(tmp_path / "xdg" / "moa-graph" / "config.yaml") in message


def test_specs_built_in_code_check_types_only():
    # A model_factory can serve any provider, so code-built specs are not held to file rules.
    preset = Preset(
        name="p",
        reference_models=[ModelSpec(provider="moa", model="inner")],
        aggregator=ModelSpec(provider="anything", model="m"),
    )
    assert preset.reference_models[0].label == "moa:inner"
    with pytest.raises(ValueError):
        ModelSpec(provider="openai", model="m", temperature="hot")


# -- tools: -------------------------------------------------------------------------------


def test_a_bad_tool_path_names_the_file_and_key_path(tmp_path):
    path = _write(
        tmp_path,
        GOOD.replace(
            "aggregator: {provider: openrouter, model: anthropic/claude-opus-4.8}",
            "aggregator: {provider: openrouter, model: anthropic/claude-opus-4.8}\n"
            "      tools: ['moa_graph.tools:calculator', 'x.y:z']",
        ),
    )
    assert _error(path) == (
        f"{path}: moa.presets.review.tools[1]: cannot import 'x.y:z': "
        "ModuleNotFoundError: No module named 'x'"
    )


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("moa_graph.tools", "'moa_graph.tools' is not an import path; write it as"),
        ("moa_graph.tools:nope", "cannot import 'moa_graph.tools:nope': AttributeError"),
        (
            "moa_graph.tools:_MAX_CHARS",
            "'moa_graph.tools:_MAX_CHARS' is not a tool or a function (got int)",
        ),
    ],
)
def test_top_level_tool_problems_name_their_key_path(entry, expected):
    config = _minimal()
    config["moa"]["tools"] = [entry]
    assert _error(config).startswith(f"moa.tools[0]: {expected}")


def test_a_presets_tools_win_over_the_top_level_ones():
    config = _minimal(tools=["moa_graph.tools:evaluate_arithmetic"])
    config["moa"]["tools"] = ["moa_graph.tools:calculator"]
    config["moa"]["presets"]["plain"] = {**config["moa"]["presets"]["review"], "tools": None}
    config["moa"]["presets"]["none"] = {**config["moa"]["presets"]["review"], "tools": []}
    loaded = load_config(config)
    # A plain function is wrapped as a tool named after it.
    assert [t.name for t in loaded.preset_tools("review")] == ["evaluate_arithmetic"]
    assert [t.name for t in loaded.preset_tools("plain")] == ["calculator"]
    assert loaded.preset_tools("none") == []


def test_no_tools_key_anywhere_means_none():
    assert load_config(_minimal()).preset_tools() is None
