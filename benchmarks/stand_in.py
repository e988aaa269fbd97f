"""The stand-in server in a process of its own, and the harness's handle on it.

Started as `python -m moa_graph.cli stub-server --port 0 --config FILE`, which prints
`stand-in server on http://127.0.0.1:PORT/v1 ...` first; the harness then drives it through
its control endpoints (`/_stub/config`, `/_stub/reset`, `/_stub/stats`, `/_stub/requests`)
and reads its CPU time from /proc, so the server's work is measured apart from the client's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["StandIn", "process_cpu_seconds"]

_READY = re.compile(r"stand-in server on (http://\S+/v1)")
_START_TIMEOUT_S = 30.0


class StandIn:
    """The stand-in server process: start, reconfigure, read its counters, stop.

    Example:
        >>> with StandIn() as stand_in:  # doctest: +SKIP
        ...     stand_in.configure({"ref0": {"latency": 0.2}})
        ...     url = stand_in.url
    """

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self._workdir = Path(tempfile.mkdtemp(prefix="moa-bench-stub-"))
        self.url = ""

    def __enter__(self) -> StandIn:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        """Process id of the server."""
        assert self._process is not None, "the stand-in is not running"
        return self._process.pid

    def start(self) -> str:
        """Start the server process and return its base URL (with `/v1`)."""
        config = self._workdir / "stub.yaml"
        config.write_text("default: {latency: 0}\n", encoding="utf-8")
        log = (self._workdir / "stderr.log").open("w", encoding="utf-8")
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "moa_graph.cli",
                "stub-server",
                "--port",
                "0",
                "--config",
                str(config),
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        line = _first_line(self._process, _START_TIMEOUT_S)
        match = _READY.search(line)
        if match is None:
            self.stop()
            errors = (self._workdir / "stderr.log").read_text(encoding="utf-8")[-2000:]
            raise RuntimeError(f"the stand-in did not start: {line!r} {errors}")
        self.url = match.group(1)
        return self.url

    def stop(self) -> None:
        """Stop the server process (no-op when stopped)."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def configure(
        self, models: Mapping[str, Mapping[str, Any]], *, default: Mapping[str, Any] | None = None
    ) -> None:
        """Replace the behaviour table: latency (and the rest) per model name."""
        body = {"models": dict(models), "default": dict(default or {"latency": 0}), "replace": True}
        self._call("POST", "/_stub/config", body)

    def reset(self) -> None:
        """Forget request counts and recorded requests."""
        self._call("POST", "/_stub/reset", {})

    def stats(self) -> dict[str, Any]:
        """`{"requests": {model: n}, "total": n, "disconnects": {model: n}}`."""
        stats: dict[str, Any] = self._call("GET", "/_stub/stats")
        return stats

    def requests(self, model: str) -> list[dict[str, Any]]:
        """The request bodies the server received for `model`, oldest first (last 200)."""
        recorded: list[dict[str, Any]] = self._call("GET", f"/_stub/requests?model={model}")[
            "requests"
        ]
        return recorded

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server process has used so far."""
        return process_cpu_seconds(self.pid)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url.removesuffix("/v1") + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` (Linux /proc; 0.0 where unavailable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _first_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The process's first stdout line, or "" when it prints none within `timeout`."""
    lines: list[str] = []
    assert process.stdout is not None
    stdout = process.stdout
    reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return lines[0] if lines else ""
