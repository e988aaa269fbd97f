"""A throwaway PostgreSQL server on loopback, for the tests and for CI. Standard library only.

    python3 tests/workers/pgserver.py start DIR    # prints postgresql://postgres@127.0.0.1:PORT/moa_test
    python3 tests/workers/pgserver.py restart DIR  # stops it and starts it again, same port
    python3 tests/workers/pgserver.py stop DIR     # stops the server and removes DIR

DIR holds the data directory, the unix socket and the server log. Authentication is `trust`,
and the server listens on 127.0.0.1 only. Durability is off (`fsync=off`): it starts in about
a second and the data is thrown away. PostgreSQL refuses to run as root, so as root `initdb`
and the server run as the `postgres` user, which then owns DIR.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

DATABASE = "moa_test"
_SERVER_OPTIONS = (
    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
    "-c shared_buffers=16MB -c max_connections=100"
)
_START_TIMEOUT_S = 30
_PORT_ATTEMPTS = 3


class PostgresUnavailable(RuntimeError):
    """PostgreSQL is not installed, or the throwaway server could not be started."""


def bin_dir() -> Path:
    """The newest `/usr/lib/postgresql/<version>/bin` with `initdb`, else the one on PATH."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.parent.name)],
    )
    if candidates:
        return candidates[-1].parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise PostgresUnavailable(
        "initdb not found in /usr/lib/postgresql/*/bin or on PATH "
        "(install PostgreSQL: apt-get install postgresql)"
    )


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    if shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--", *argv]
    return ["su", "-s", "/bin/sh", "postgres", "-c", shlex.join(argv)]


def _run(argv: list[str], *, what: str) -> None:
    # From `/`: the server user may not be allowed into the caller's working directory.
    done = subprocess.run(
        _as_server_user(argv), cwd="/", capture_output=True, text=True, timeout=_START_TIMEOUT_S * 2
    )
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise PostgresUnavailable(f"{what} failed (exit {done.returncode}): {' | '.join(output)}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(base: Path) -> str:
    """Create a cluster in `base` (an empty directory), start it, create `moa_test`.

    Returns:
        The URL of the `moa_test` database.

    Raises:
        PostgresUnavailable: With the reason (the end of the server log when it would not start).
    """
    binaries = bin_dir()
    if os.geteuid() == 0:
        try:
            server_user = pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresUnavailable("running as root, but there is no 'postgres' user") from None
        os.chown(base, server_user.pw_uid, server_user.pw_gid)
    data = base / "data"
    initdb = ["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"]
    _run([str(binaries / "initdb"), "-D", str(data), *initdb], what="initdb")
    port = _start_server(binaries, base)
    (base / "port").write_text(str(port))
    createdb = ["-h", "127.0.0.1", "-p", str(port), "-U", "postgres", DATABASE]
    _run([str(binaries / "createdb"), *createdb], what="createdb")
    return f"postgresql://postgres@127.0.0.1:{port}/{DATABASE}"


def _start_server(binaries: Path, base: Path, port: int | None = None) -> int:
    """Start the cluster in `base/data` on `port`, else a free loopback port; return the port."""
    log = base / "server.log"
    failure: PostgresUnavailable | None = None
    for _ in range(1 if port else _PORT_ATTEMPTS):
        port = port or _free_port()
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {base} {_SERVER_OPTIONS}"
        pg_ctl = ["-D", str(base / "data"), "-l", str(log), "-w", "-t", str(_START_TIMEOUT_S)]
        try:
            _run([str(binaries / "pg_ctl"), *pg_ctl, "-o", options, "start"], what="pg_ctl start")
            return port
        except PostgresUnavailable as exc:
            failure = exc  # most likely the port was taken meanwhile: try another
    tail = log.read_text(errors="replace").splitlines()[-5:] if log.exists() else []
    raise PostgresUnavailable(f"{failure} | server log: {' | '.join(tail)}")


def halt(base: Path) -> None:
    """Stop the server started in `base` as a restart would (sessions are cut), keeping its data."""
    pg_ctl = ["-D", str(base / "data"), "-m", "fast", "-w", "-t", str(_START_TIMEOUT_S), "stop"]
    _run([str(bin_dir() / "pg_ctl"), *pg_ctl], what="pg_ctl stop")


def start_again(base: Path) -> None:
    """Start the server `halt` stopped, on the same port (clients reconnect to the same URL)."""
    _start_server(bin_dir(), base, int((base / "port").read_text()))


def restart(base: Path) -> None:
    """Restart the server started in `base` on the same port: every session is cut."""
    halt(base)
    start_again(base)


def stop(base: Path) -> None:
    """Stop the server started in `base` (if it runs) and remove `base`."""
    data = base / "data"
    if (data / "postmaster.pid").exists():
        with contextlib.suppress(PostgresUnavailable, OSError, subprocess.SubprocessError):
            _run(
                [str(bin_dir() / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                what="pg_ctl stop",
            )
    shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str]) -> int:
    """`start DIR` prints the URL; `restart DIR`; `stop DIR`. Errors: one line, exit status 1."""
    if len(argv) != 2 or argv[0] not in {"start", "restart", "stop"}:
        print("usage: pgserver.py start|restart|stop DIR", file=sys.stderr)
        return 2
    command, base = argv[0], Path(argv[1])
    if command == "stop":
        stop(base)
        return 0
    try:
        if command == "restart":
            restart(base)
        else:
            print(start(base))
    except (PostgresUnavailable, OSError, subprocess.SubprocessError) as exc:
        print(f"pgserver: cannot start PostgreSQL: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
