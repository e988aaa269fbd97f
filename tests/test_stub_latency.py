"""The stand-in's heavy-tailed latency: `latency: {lognormal: {median, sigma}}` per model."""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from pathlib import Path

import httpx
import pytest
from langchain_openai import ChatOpenAI

from moa_graph.errors import ConfigError
from moa_graph.testing._stub_behaviour import LogNormal, StubState
from moa_graph.testing.server import ModelBehaviour, StubServer, load_stub_config

TAIL = {"latency": {"lognormal": {"median": 2.0, "sigma": 0.7}}}


def _delays(seed: int, count: int, behaviour: dict | None = None) -> list[float]:
    """The delays the server would wait out for `count` requests to model `tail`."""
    state = StubState(models={"tail": behaviour or TAIL}, default=None, seed=seed)
    return [state.admit("tail", {}).delay for _ in range(count)]


def test_lognormal_draws_centre_on_the_median_with_the_configured_spread() -> None:
    delays = _delays(seed=3, count=4000)
    logs = [math.log(d) for d in delays]
    assert 1.8 < statistics.median(delays) < 2.2
    assert 0.63 < statistics.stdev(logs) < 0.77
    # A long right tail: the 99th percentile sits about exp(2.33 * 0.7) = 5.1x the median.
    ordered = sorted(delays)
    p99 = ordered[int(0.99 * len(ordered))]
    assert 3.8 < p99 / statistics.median(delays) < 6.5
    assert min(delays) > 0


def test_lognormal_percentile_matches_the_draws() -> None:
    shape = LogNormal(median=2.0, sigma=0.7)
    ordered = sorted(_delays(seed=5, count=4000))
    assert shape.percentile(50) == pytest.approx(2.0)
    assert ordered[int(0.9 * len(ordered))] == pytest.approx(shape.percentile(90), rel=0.1)


def test_the_same_seed_draws_the_same_latencies_and_another_seed_others() -> None:
    assert _delays(seed=11, count=50) == _delays(seed=11, count=50)
    assert _delays(seed=11, count=50) != _delays(seed=12, count=50)


def test_sigma_zero_is_the_median_every_time() -> None:
    fixed = {"latency": {"lognormal": {"median": 0.25, "sigma": 0}}}
    assert _delays(seed=0, count=20, behaviour=fixed) == [pytest.approx(0.25)] * 20


@pytest.mark.parametrize(
    ("latency", "message"),
    [
        ({"lognormal": {"median": 0, "sigma": 0.5}}, "lognormal.median"),
        ({"lognormal": {"median": 1.0}}, "lognormal.sigma: Field required"),
        ({"lognormal": {"median": 1.0, "sigma": -0.1}}, "lognormal.sigma"),
        ({"lognormal": {"median": 1.0, "sigma": 0.5, "p99": 3}}, "lognormal.p99"),
        ({"normal": {"median": 1.0, "sigma": 0.5}}, "lognormal: Field required"),
    ],
)
def test_a_bad_distribution_is_refused_naming_its_key(latency: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelBehaviour(latency=latency)


def test_the_behaviour_file_reads_a_lognormal_and_names_the_key_path_of_a_bad_one(
    tmp_path: Path,
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("models:\n  tail:\n    latency: {lognormal: {median: 2, sigma: 0.7}}\n")
    models, _ = load_stub_config(good)
    assert models["tail"] == ModelBehaviour(**TAIL)
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  tail:\n    latency: {lognormal: {median: -2, sigma: 0.7}}\n")
    with pytest.raises(ConfigError, match=r"models\.tail\.latency: lognormal\.median"):
        load_stub_config(bad)


@pytest.mark.asyncio
async def test_the_server_waits_out_each_drawn_latency() -> None:
    # median 50 ms, sigma 1: the seeded draws for 30 requests span ~10 ms to ~0.4 s.
    spread = {"latency": {"lognormal": {"median": 0.05, "sigma": 1.0}}}
    drawn = sorted(_delays(seed=4, count=30, behaviour=spread))
    with StubServer(models={"tail": spread}, seed=4) as url:
        llm = ChatOpenAI(model="tail", base_url=url, api_key="test", max_retries=0)

        async def timed(i: int) -> float:
            started = time.monotonic()
            await llm.ainvoke(f"q{i}")
            return time.monotonic() - started

        measured = sorted(await asyncio.gather(*(timed(i) for i in range(30))))
    # Each request waits at least its own draw; the fastest and slowest stay apart.
    assert measured[0] >= drawn[0]
    assert measured[-1] >= drawn[-1]
    assert measured[-1] > 4 * measured[0]
    assert measured[-1] < drawn[-1] + 1.0


def test_the_control_endpoint_takes_a_lognormal_and_refuses_a_bad_one() -> None:
    with StubServer() as url:
        root = url.removesuffix("/v1")
        ok = httpx.post(f"{root}/_stub/config", json={"models": {"tail": TAIL}})
        bad = httpx.post(
            f"{root}/_stub/config",
            json={"models": {"tail": {"latency": {"lognormal": {"median": 1}}}}},
        )
        models = httpx.get(f"{url}/models").json()
    assert ok.status_code == 200
    assert bad.status_code == 400
    assert "lognormal.sigma" in bad.text
    assert [m["id"] for m in models["data"]] == ["tail"]
