"""Where a sweep's trials live: Optuna storages, and setting up a sweep's studies exactly once.

Three kinds of storage, chosen by the URL:

* a file path (the default, ``runs/<name>.journal``): Optuna's journal file storage. No server,
  safe for many worker processes on one machine, and every write is an appended line, so a killed
  worker never corrupts it.
* ``postgresql://…`` (or ``mysql://…``): a database shared by workers on many machines. Optuna's
  heartbeats run here (``heartbeat_interval``, ``grace_period``): a trial whose worker stopped
  beating is failed and queued again.
* ``sqlite:///…``: a single worker only (SQLite locks the whole file; two workers crash).

A sweep is one study per width (see docs/sweeps.md for why). Studies are created, and grid points
enqueued, by one process under a lock *before* any worker starts: workers started together race to
create a study, and a sampler-driven grid hands the same point to two workers. Enqueuing skips
every point that already has a trial (finished, running, waiting, or failed by diverging), so
re-running the same command resumes rather than repeats.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from .config import SweepSpec
from .errors import SweepError
from .journal import JournalBackend, StorageWriteError, repair_journal
from .trials import ATTR_SPEC, ATTR_WIDTH, RetryLostTrial, point_of, point_taken

if TYPE_CHECKING:
    import optuna

StorageKind = Literal["journal", "sqlite", "database"]
DEFAULT_DIR = "runs"


def default_storage(name: str) -> str:
    """The embedded default: a journal file in ``runs/`` of the current folder."""
    return str(Path(DEFAULT_DIR) / f"{name}.journal")


def storage_url(spec: SweepSpec, override: str | None = None) -> str:
    return override or spec.storage or default_storage(spec.name)


def storage_kind(url: str) -> StorageKind:
    if "://" not in url:
        return "journal"
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme == "sqlite":
        return "sqlite"
    if scheme in ("postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql"):
        return "database"
    raise SweepError(
        f"storage {redact(url)!r}: unknown scheme {scheme!r}; use a journal file path, "
        "postgresql://user@host/db or sqlite:///file.db"
    )


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}{':***' if ':' in creds else ''}@{host}"


def runs_dir(spec: SweepSpec, url: str) -> str:
    """Where the built-in objective keeps its finished runs: beside a journal
    (``runs/<name>.runs`` for ``runs/<name>.journal``), else ``runs/<name>.runs`` here."""
    if spec.runs_dir is not None:
        return spec.runs_dir
    if storage_kind(url) == "journal":
        path = Path(url)
        return str(path.with_name(f"{spec.name}.runs"))
    return str(Path(DEFAULT_DIR) / f"{spec.name}.runs")


def tensorboard_dir(spec: SweepSpec, url: str) -> str | None:
    """Where the trials' TensorBoard curves go (``None``: not written); like ``runs_dir``."""
    if spec.tensorboard is False or spec.tensorboard == "":
        return None
    if isinstance(spec.tensorboard, str):
        return spec.tensorboard
    if storage_kind(url) == "journal":
        return str(Path(url).with_name(f"{spec.name}.tensorboard"))
    return str(Path(DEFAULT_DIR) / f"{spec.name}.tensorboard")


def study_name(name: str, width: int) -> str:
    """One study per width: ``<sweep name>-w<width>``."""
    return f"{name}-w{width}"


def open_storage(
    url: str,
    *,
    heartbeat_interval: int = 10,
    grace_period: int = 30,
    max_retry: int = 3,
    reconnect_timeout: float = 0,
) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url`` (a journal file path, or a database URL)."""
    import optuna

    kind = storage_kind(url)
    if kind == "journal":
        path = Path(url).resolve()
        _make_dir(path.parent, "the sweep's storage")
        note = repair_journal(path)
        if note:
            print(f"note: {note}", file=sys.stderr, flush=True)
        return optuna.storages.JournalStorage(JournalBackend(path))
    shown = redact(url)
    url = database_url(url) if kind == "database" else url

    def connect() -> optuna.storages.BaseStorage:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs={"pool_pre_ping": True} if kind == "database" else None,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=RetryLostTrial(max_retry),
            )

    try:
        return patiently(connect, shown, reconnect_timeout)
    except StorageUnavailable:
        raise
    except Exception as exc:  # unknown database, bad driver, refused login...
        if connection_lost(exc):
            raise SweepError(
                f"cannot reach the database {shown!r}: the server did not answer "
                f"({first_line(exc)}). Is it running, and is the address right?"
            ) from exc
        raise SweepError(f"cannot open storage {shown!r}: {exc}") from exc


class StorageUnavailable(StorageWriteError):
    """A database storage stayed unreachable for the sweep's ``reconnect_timeout``."""


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) is a lost or refused database connection."""
    try:
        from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
    except ImportError:
        return False
    seen: BaseException | None = exc
    for _ in range(8):  # Optuna wraps SQLAlchemy's errors in its own
        if seen is None:
            return False
        if isinstance(seen, OperationalError | InterfaceError | DisconnectionError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (SQLAlchemy's run over many lines)."""
    cause: BaseException = exc
    while cause.__cause__ is not None and not str(cause).strip():
        cause = cause.__cause__
    text = str(cause).strip().splitlines()
    return (text[0] if text else type(cause).__name__)[:160]


T = TypeVar("T")


def patiently(
    action: Callable[[], T],
    where: str,
    timeout: float,
    *,
    first_error: BaseException | None = None,
) -> T:
    """``action()``, retried with backoff (1, 2, 4 … 15 s) while the database at ``where`` is
    unreachable, for at most ``timeout`` seconds; then ``StorageUnavailable``.

    A server restarted under a sweep (maintenance, a crash, a failover) costs a pause, not the
    sweep. Other errors pass through at once.
    """
    deadline = time.monotonic() + timeout
    delay = 1.0
    last = first_error
    while True:
        if last is not None:
            if time.monotonic() >= deadline:
                raise StorageUnavailable(
                    f"the sweep's database {where} could not be reached for {timeout:g} s "
                    f"({first_line(last)}). Every trial finished before is kept there; when "
                    "the server is back, run the same command to resume."
                ) from last
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(2 * delay, 15.0)
        try:
            return action()
        except Exception as exc:
            if not connection_lost(exc):
                raise
            if timeout <= 0:
                raise
            last = exc


def _make_dir(folder: Path, what: str) -> None:
    """Create ``folder`` or say in one line why it cannot be (read-only, a file in the way)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SweepError(f"cannot create the folder of {what}, {folder}: {exc.strerror}") from None
    if not os.access(folder, os.W_OK):
        raise SweepError(
            f"the folder of {what}, {folder}, is not writable; pass another location "
            "(--storage PATH, or sweep.storage in the config)"
        )


def database_url(url: str) -> str:
    """Name the PostgreSQL driver explicitly: ``postgresql://`` means psycopg2 in SQLAlchemy
    2.0 but psycopg 3 in 2.1, so a bare URL breaks with whichever one is not installed."""
    import importlib.util

    scheme, rest = url.split("://", 1)
    if scheme not in ("postgresql", "postgres"):
        return url
    for module, driver in (("psycopg2", "psycopg2"), ("psycopg", "psycopg")):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{driver}://{rest}"
    raise SweepError(
        "PostgreSQL storage needs a driver: pip install psycopg2-binary "
        "(or pip install 'mutransfer[postgres]')"
    )


@contextlib.contextmanager
def setup_lock(url: str) -> Iterator[None]:
    """Serialise sweep set-up across processes (and, for PostgreSQL, across machines)."""
    kind = storage_kind(url)
    if kind == "journal":
        import fcntl

        lock_path = Path(url).with_name(Path(url).name + ".setup.lock")
        _make_dir(lock_path.parent, "the sweep's storage")
        with open(lock_path, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return
    if kind == "database" and url.split("://", 1)[0].split("+", 1)[0] in ("postgresql", "postgres"):
        import sqlalchemy

        key = int.from_bytes(hashlib.sha1(b"mutransfer-sweep-setup").digest()[:7], "big")
        engine = sqlalchemy.create_engine(database_url(url), poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
                try:
                    yield
                finally:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        finally:
            engine.dispose()
        return
    yield  # SQLite: single worker; MySQL: document "start one worker first"


def setup_studies(
    spec: SweepSpec, storage: optuna.storages.BaseStorage, url: str
) -> dict[int, optuna.Study]:
    """Create every width's study once and enqueue its missing grid points (under a lock);
    for the independent search, the points its current stage still needs."""
    import optuna

    studies: dict[int, optuna.Study] = {}
    with setup_lock(url):
        for width in spec.widths:
            name = study_name(spec.name, width)
            study = optuna.create_study(
                storage=storage, study_name=name, direction="minimize", load_if_exists=True
            )
            _check_compatible(study, spec)
            study.set_user_attr(ATTR_SPEC, spec.to_dict())
            study.set_user_attr(ATTR_WIDTH, width)
            if spec.strategy == "independent":
                from .stages import enqueue_stage

                enqueue_stage(study, spec, width, rerun=True)
            elif spec.sampler == "grid":
                enqueue_missing(study, spec, width)
            studies[width] = study
    return studies


def _check_compatible(study: optuna.Study, spec: SweepSpec) -> None:
    """Resuming with other seeds or trainer options would mix incomparable losses."""
    old = study.user_attrs.get(ATTR_SPEC)
    if not old:
        return
    new = spec.to_dict()
    _check_space_unchanged(study.study_name, old.get("space") or {}, new.get("space") or {})
    for key in ("seeds", "train"):
        if old.get(key) != new.get(key):
            raise SweepError(
                f"study {study.study_name!r} was run with {key} = {old.get(key)!r}, not "
                f"{new.get(key)!r}: its losses would not be comparable. Give the sweep a new "
                "name (sweep.name), or restore the old setting to resume it."
            )


def _check_space_unchanged(study: str, old: dict[str, Any], new: dict[str, Any]) -> None:
    """A hyperparameter's kind and its listed values cannot change within a study: Optuna
    refuses the new distribution ("dynamic value space") on every rerun. A range may change."""
    for name in sorted(set(old) & set(new)):
        before, after = old[name], new[name]
        kind_before = (
            "values" if "values" in before else "integer" if before.get("integer") else "range"
        )
        kind_after = (
            "values" if "values" in after else "integer" if after.get("integer") else "range"
        )
        changed = kind_before != kind_after or before.get("values") != after.get("values")
        if changed:
            raise SweepError(
                f"study {study!r}: the search space of {name!r} changed "
                f"({_dim_text(before)} → {_dim_text(after)}), and a study cannot change the "
                "values a hyperparameter takes. Give the sweep a new name (sweep.name) to start "
                "a new study with this space, or restore the old space to resume."
            )


def _dim_text(dim: dict[str, Any]) -> str:
    if "values" in dim:
        return f"values {dim['values']}"
    kind = "integers" if dim.get("integer") else "numbers"
    return f"{kind} {dim.get('low')}…{dim.get('high')}"


def enqueue_missing(study: optuna.Study, spec: SweepSpec, width: int) -> int:
    """Enqueue each grid point that has no trial yet; returns how many were added."""
    taken = {_key(point_of(t)) for t in study.get_trials(deepcopy=False) if point_taken(t)}
    added = 0
    for point in spec.space.grid():
        if _key(point) not in taken:
            study.enqueue_trial(point, user_attrs={ATTR_WIDTH: width})
            added += 1
    return added


def _key(point: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(point.items()))


def sweep_studies(storage: optuna.storages.BaseStorage, name: str) -> dict[int, str]:
    """``{width: study name}`` of the sweep ``name`` in an open storage, by width (empty when
    there is none): studies are recognised by the sweep config stored with them."""
    import optuna

    found: dict[int, str] = {}
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        attrs = summary.user_attrs
        spec = attrs.get(ATTR_SPEC)
        if spec and spec.get("name") == name and isinstance(attrs.get(ATTR_WIDTH), int):
            found[int(attrs[ATTR_WIDTH])] = summary.study_name
    return dict(sorted(found.items()))


def find_sweep_studies(url: str, name: str) -> dict[int, str]:
    """``{width: study name}`` of the sweep ``name`` in the storage at ``url``."""
    import optuna

    if storage_kind(url) == "journal" and not Path(url).is_file():
        raise SweepError(
            f"no sweep storage at {url!r}; pass --storage URL, or the sweep's config file "
            "(run the sweep first with `mutransfer sweep CONFIG.toml`)"
        )
    storage = open_storage(url)
    found = sweep_studies(storage, name)
    if not found:
        names = sorted(
            {
                s.user_attrs[ATTR_SPEC]["name"]
                for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
                if s.user_attrs.get(ATTR_SPEC)
            }
        )
        known = f"; sweeps there: {', '.join(names)}" if names else "; it holds no sweep"
        raise SweepError(f"no sweep named {name!r} in storage {redact(url)!r}{known}")
    return dict(sorted(found.items()))


def worker_env() -> dict[str, str]:
    """Environment for worker processes: one thread each (N workers share N cores)."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = "1"
    return env
