"""Run the stand-in server in a process of its own, so that it does not share a core (and the
GIL) with the client under test.

    python tests/workers/stub.py '{"models": {...}, "default": {...}, "seed": 0}'

Prints the base URL (with `/v1`) on the first line of stdout once it listens on a free
loopback port, then serves until terminated. Read its counts at `GET /_stub/stats`.
"""

from __future__ import annotations

import asyncio
import json
import sys

from moa_graph.testing.server import serve


def main() -> None:
    options = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    asyncio.run(
        serve(
            port=0,
            models=options.get("models"),
            default=options.get("default"),
            seed=options.get("seed", 0),
            on_ready=lambda url: print(url, flush=True),
        )
    )


if __name__ == "__main__":
    main()
