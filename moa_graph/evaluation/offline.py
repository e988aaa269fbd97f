"""The offline evaluation demo: a preset on the stand-in whose arms differ for a reason.

`moa-graph eval --offline` starts a `StubServer` with `offline_eval_models()` and evaluates
the `eval-demo` preset of `offline_eval_config(url)` on the bundled `arithmetic` dataset.
What each stand-in model answers is set here, so what the report shows follows from it:

- `solver` and `aggregator` answer by the stand-in's default policy, which works out a
  written expression ("17 * 23") and cannot read words ("six times seven"): right on the
  dataset's eight written sums, wrong on its four word problems;
- `guesser` always replies "The answer is 42." (a fixed `reply`): right once, on the word
  problem whose answer is 42, where the aggregator is wrong;
- `judge` always replies `[[A]]`: a judge that prefers whichever answer it sees first, so
  the position swap turns every verdict of it into a tie (used for prompts without a
  reference answer, `--dataset` of your own).

The stand-in's aggregator does not read the references (it answers from the question), so
offline the `moa` arm ties the aggregator alone at several times its cost: the run tests
the mechanics, not MoA. The prices are illustrative, set on the models so that the report
has costs to show; the latencies give the percentiles something to measure.
"""

from __future__ import annotations

from moa_graph.config import MoAConfig, ModelSpec, load_config
from moa_graph.testing import ModelBehaviour

__all__ = [
    "OFFLINE_EVAL_PRESET",
    "OFFLINE_JUDGE",
    "offline_eval_config",
    "offline_eval_models",
]

OFFLINE_EVAL_PRESET = "eval-demo"
"""Name of the offline evaluation's preset."""

OFFLINE_JUDGE = ModelSpec(
    provider="stub", model="judge", input_cost_per_mtok=1.0, output_cost_per_mtok=4.0
)
"""The offline judge (always `[[A]]`), on the stand-in's provider `stub`."""

_GUESS = "The answer is 42."
# name: (latency s, input and output USD per million tokens), illustrative prices.
_MODELS: dict[str, tuple[float, float, float]] = {
    "solver": (0.05, 0.5, 1.5),
    "guesser": (0.02, 0.05, 0.2),
    "aggregator": (0.08, 3.0, 15.0),
}


def offline_eval_models(*, latency_scale: float = 1.0) -> dict[str, ModelBehaviour]:
    """Stand-in behaviour per model name for the offline evaluation.

    Args:
        latency_scale: Multiplies every model's latency (0: answer at once).
    """
    models = {
        name: ModelBehaviour(
            latency=latency * latency_scale, reply=_GUESS if name == "guesser" else None
        )
        for name, (latency, _, _) in _MODELS.items()
    }
    models[OFFLINE_JUDGE.model] = ModelBehaviour(reply="Answer A reads better. [[A]]")
    return models


def offline_eval_config(base_url: str) -> MoAConfig:
    """The offline evaluation's config: provider `stub` at `base_url`, preset `eval-demo`.

    Its references are `solver`, with `samples: 2` (so there is a Self-MoA arm), and
    `guesser`; its aggregator is `aggregator`.
    """

    def model(name: str, **extra: object) -> dict[str, object]:
        _, input_price, output_price = _MODELS[name]
        return {
            "provider": "stub",
            "model": name,
            "input_cost_per_mtok": input_price,
            "output_cost_per_mtok": output_price,
            **extra,
        }

    return load_config(
        {
            "moa": {
                "default_preset": OFFLINE_EVAL_PRESET,
                "providers": {"stub": {"base_url": base_url}},
                "presets": {
                    OFFLINE_EVAL_PRESET: {
                        "reference_models": [model("solver", samples=2), model("guesser")],
                        "aggregator": model("aggregator"),
                    }
                },
            }
        }
    )
