"""Run one MoA turn, or resume an interrupted one, in a process of its own.

    python tests/workers/turn.py --stub URL --store URL --thread ID --message TEXT
    python tests/workers/turn.py --stub URL --store URL --thread ID --resume

The graph talks to the stand-in at `--stub` (references `alpha` and `beta`, aggregator `boss`)
and persists the thread through `open_sync_checkpointer(--store)`; it runs with the
synchronous `invoke`, as a plain script would. Prints the final state as one JSON object:
`pid`, `messages` (`type`, `content`) and `references`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from langchain_core.messages import HumanMessage

from moa_graph import build_moa_graph
from moa_graph.persistence import open_sync_checkpointer


def stub_config(url: str, *, api_key_env: str | None = None, **aggregator: Any) -> dict[str, Any]:
    """The preset `demo` on the stand-in at `url`: references `alpha` and `beta` (which do not
    retry) and the aggregator `boss` (with `aggregator` options)."""

    def reference(model: str) -> dict[str, Any]:
        return {"provider": "stub", "model": model, "timeout": 60, "max_retries": 0}

    provider = {"base_url": url} | ({"api_key_env": api_key_env} if api_key_env else {})
    return {
        "moa": {
            "providers": {"stub": provider},
            "presets": {
                "demo": {
                    "reference_models": [reference("alpha"), reference("beta")],
                    "aggregator": {"provider": "stub", "model": "boss", **aggregator},
                }
            },
        }
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stub", required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--thread", required=True)
    turn = parser.add_mutually_exclusive_group(required=True)
    turn.add_argument("--message")
    turn.add_argument("--resume", action="store_true")
    args = parser.parse_args()

    thread = {"configurable": {"thread_id": args.thread}}
    request = None if args.resume else {"messages": [HumanMessage(args.message)]}
    with open_sync_checkpointer(args.store) as saver:
        graph = build_moa_graph("demo", config=stub_config(args.stub)).compile(checkpointer=saver)
        state = graph.invoke(request, thread)
    json.dump(
        {
            "pid": os.getpid(),
            "messages": [{"type": m.type, "content": m.content} for m in state["messages"]],
            "references": state["references"],
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
