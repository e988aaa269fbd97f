"""Run the stand-in server in a process of its own, so that it does not share a core (and the
GIL) with the client under test, and so that a test can freeze it.

    python tests/workers/stub.py '{"models": {...}, "default": {...}, "seed": 0}'

Prints the base URL (with `/v1`) on the first line of stdout once it listens on a free
loopback port, then serves until terminated. Read its counts at `GET /_stub/stats`.

`StubProcess` runs it from a test: `freeze()` (SIGSTOP) holds every answer in flight, however
long the test takes meanwhile, and `thaw()` lets them go, each after what is left of its
latency. That is how a test makes "a reference is still running" last exactly as long as
it needs, with no race against the load of the machine.
"""

from __future__ import annotations

import asyncio
import json
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from moa_graph.testing.server import serve


class StubProcess:
    """This script in a child process, with the given per-model behaviour."""

    def __init__(self, models: dict[str, Any]) -> None:
        argv = [sys.executable, str(Path(__file__).resolve()), json.dumps({"models": models})]
        self._process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], 30)
        if not ready:
            self.stop()
            raise RuntimeError("the stand-in did not start within 30 s")
        self.url = self._process.stdout.readline().strip()

    def stats(self) -> dict[str, int]:
        """Requests received per model name (not while frozen)."""
        response = httpx.get(self.url.removesuffix("/v1") + "/_stub/stats", timeout=10)
        return dict(response.raise_for_status().json()["requests"])

    def freeze(self) -> None:
        """Stop the process: requests in flight wait, unanswered, until `thaw`."""
        self._process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Let the process go on."""
        self._process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """End the process (frozen or not)."""
        self._process.kill()
        self._process.wait()


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
