"""``mutransfer dashboard``: optuna-dashboard on a sweep's own storage.

The dashboard reads (and, for notes, writes) the storage the workers use, opened the same way
they open it (``storage.open_storage``: the journal's torn-write repair and its lock, or the
database with its reconnects), so it can be browsed while a sweep runs. It is optional
(``pip install "mutransfer[dashboard]"``); a missing package, a sweep with no study yet or a
port in use are said in one line.
"""

from __future__ import annotations

import errno
import importlib.util

from .errors import SweepError
from .storage import open_storage, redact, sweep_studies


def check_available() -> None:
    if importlib.util.find_spec("optuna_dashboard") is None:
        raise SweepError(
            'mutransfer dashboard needs optuna-dashboard: pip install "mutransfer[dashboard]"'
        )


def serve(name: str, url: str, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve the dashboard for sweep ``name`` until Ctrl-C."""
    check_available()
    import optuna_dashboard

    storage = open_storage(url)
    studies = sorted(sweep_studies(storage, name).values())
    if not studies:
        raise SweepError(
            f"no study of sweep {name!r} in {redact(url)}: run `mutransfer sweep` first, or "
            f"pass the storage it used with --storage"
        )
    print(
        f"optuna-dashboard: sweep {name!r} ({len(studies)} studies: {', '.join(studies)}) "
        f"from {redact(url)} at http://{host}:{port}/dashboard/ — Ctrl-C stops it",
        flush=True,
    )
    try:
        optuna_dashboard.run_server(storage, host=host, port=port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise SweepError(f"port {port} on {host} is in use: pass another --port") from None
        raise
    except KeyboardInterrupt:
        pass
