"""Faults injected into real sweeps, and what was kept: the bar is 0 lost and 0 duplicates.

Three kinds of fault, each injected for real into ``mutransfer sweep`` (2 worker processes, a
cheap objective that sleeps so that trials are in flight when the fault hits):

- **kill -9** at random moments: the whole sweep (its process group) or one worker, then the
  same command again, many times over until the grid is done;
- **torn writes**: the sweep runs under a file-size limit (``RLIMIT_FSIZE``, as a full disk
  behaves) cut at a random size, then again with room;
- **database restarts**: the PostgreSQL server is stopped under the running sweep and started
  again after a random pause (``tests/pg_server.py`` starts a throwaway server).

After every fault the finished trials are snapshotted; at the end each must still be there,
finished at the same moment with the same value (0 lost), and every grid point must have
finished exactly once (0 duplicates).

    .venv/bin/python bench/reliability.py           # 20 kills, 5 torn writes, 3 restarts
    .venv/bin/python bench/reliability.py --quick   # 3 kills, 1 torn write, 1 restart
"""

from __future__ import annotations

import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import common
from common import (
    arg_parser,
    command_line,
    machine_info,
    machine_line,
    markdown_table,
    write_results,
)

NAME = "reliability"
ROOT = common.ROOT
GRID = 24  # points per width
WIDTHS = (8, 16)
CLI = [sys.executable, "-m", "mutransfer"]

OBJECTIVE = """
import math, os, time

def objective(params, width, trial):
    time.sleep(float(os.environ.get("BENCH_SLEEP", "1.0")))
    return (math.log2(params["lr"]) + 6) ** 2 + 1.0 / width
"""


def write_sweep(folder: Path, storage: str | None = None) -> Path:
    (folder / "objective.py").write_text(OBJECTIVE)
    lines = [
        "[sweep]",
        'name = "r"',
        f"widths = {list(WIDTHS)}",
        'objective = "objective.py:objective"',
        "heartbeat_interval = 1",
        "grace_period = 3",
    ]
    if storage:
        lines.append(f'storage = "{storage}"')
    lines += ["[sweep.space]", f"lr = {{ log2 = [-{GRID + 1}, -2] }}"]
    path = folder / "sweep.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def start(folder: Path, *, fsize: int | None = None) -> subprocess.Popen[bytes]:
    def limit() -> None:
        os.setsid()
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.Popen(
        [*CLI, "sweep", "sweep.toml", "--workers", "2"],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=limit,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )


def storage_of(folder: Path, url: str | None) -> Any:
    from mutransfer.sweep.storage import open_storage

    return open_storage(url or str(folder / "runs" / "r.journal"))


def snapshot(folder: Path, url: str | None) -> dict[tuple[int, int], tuple[Any, float]]:
    """(width, trial number) → (completion time, value) of every finished trial."""
    import optuna
    from optuna.trial import TrialState

    storage = storage_of(folder, url)
    done = {}
    for width in WIDTHS:
        try:
            study = optuna.load_study(study_name=f"r-w{width}", storage=storage)
        except KeyError:
            continue
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            done[(width, t.number)] = (t.datetime_complete, float(t.value))
    return done


def kept_and_duplicates(
    folder: Path, url: str | None, before: dict[tuple[int, int], tuple[Any, float]]
) -> tuple[int, int, int]:
    """(finished trials lost since ``before``, grid points finished twice, points missing)."""
    import optuna
    from optuna.trial import TrialState

    after = snapshot(folder, url)
    lost = sum(1 for key, value in before.items() if after.get(key) != value)
    storage = storage_of(folder, url)
    duplicates = missing = 0
    for width in WIDTHS:
        study = optuna.load_study(study_name=f"r-w{width}", storage=storage)
        points = Counter(t.params["lr"] for t in study.get_trials(states=(TrialState.COMPLETE,)))
        duplicates += sum(n - 1 for n in points.values() if n > 1)
        missing += GRID - len(points)
    return lost, duplicates, missing


def finish(folder: Path, timeout: float = 600) -> int:
    proc = start(folder)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return -1


def kill_nine(folder: Path, kills: int, rng: random.Random) -> dict[str, Any]:
    write_sweep(folder)
    before: dict[tuple[int, int], tuple[Any, float]] = {}
    targets: Counter[str] = Counter()
    for _ in range(kills):
        proc = start(folder)
        time.sleep(rng.uniform(2.0, 8.0))  # start-up (spawning 2 workers) takes about 3 s
        if proc.poll() is None:
            targets["hit a running sweep"] += 1
            workers = _children(proc.pid)
            if workers and rng.random() < 0.5:
                os.kill(rng.choice(workers), signal.SIGKILL)  # one worker
                targets["one worker"] += 1
                time.sleep(rng.uniform(0.2, 1.0))
            targets["the whole sweep"] += 1
            with _suppress_missing():
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        before.update(snapshot(folder, None))
    code = finish(folder)
    lost, duplicates, missing = kept_and_duplicates(folder, None, before)
    return {
        "fault": f"kill -9 at {kills} random moments (of the whole sweep; of one worker "
        f"first, {targets['one worker']} times)",
        "finished_before_faults": len(before),
        "hits": targets["hit a running sweep"],
        "lost": lost,
        "duplicates": duplicates,
        "missing_after_rerun": missing,
        "final_exit": code,
    }


def torn_writes(folder: Path, times: int, rng: random.Random) -> dict[str, Any]:
    write_sweep(folder)
    before: dict[tuple[int, int], tuple[Any, float]] = {}
    hits = 0
    journal = folder / "runs" / "r.journal"
    for _ in range(times):
        size = journal.stat().st_size if journal.exists() else 0
        proc = start(folder, fsize=size + rng.randint(8_000, 40_000))
        hits += proc.wait(timeout=600) != 0  # the limit cut a write and stopped the sweep
        before.update(snapshot(folder, None))
    code = finish(folder)
    lost, duplicates, missing = kept_and_duplicates(folder, None, before)
    side_files = len(list(journal.parent.glob("r.journal.torn-*")))
    return {
        "fault": f"{times} torn journal writes (RLIMIT_FSIZE at random sizes)",
        "finished_before_faults": len(before),
        "hits": hits,
        "lost": lost,
        "duplicates": duplicates,
        "missing_after_rerun": missing,
        "final_exit": code,
        "torn_side_files": side_files,
    }


def db_restarts(folder: Path, restarts: int, rng: random.Random) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "tests"))
    import pg_server

    server = pg_server.own_server()
    try:
        write_sweep(folder, server.url)
        proc = start(folder)
        before: dict[tuple[int, int], tuple[Any, float]] = {}
        deadline = time.time() + 120
        while len(snapshot(folder, server.url)) < 4 and time.time() < deadline:
            time.sleep(0.5)  # the first restart comes once trials have finished
        for _ in range(restarts):
            time.sleep(rng.uniform(3.0, 6.0))
            before.update(snapshot(folder, server.url))
            server.stop()
            time.sleep(rng.uniform(1.0, 5.0))
            server.start()
        code = proc.wait(timeout=600)
        lost, duplicates, missing = kept_and_duplicates(folder, server.url, before)
    finally:
        server.close()
    return {
        "fault": f"{restarts} PostgreSQL restarts under a running 2-worker sweep (1–5 s down)",
        "finished_before_faults": len(before),
        "hits": restarts,
        "lost": lost,
        "duplicates": duplicates,
        "missing_after_rerun": missing,
        "final_exit": code,
    }


def _children(pid: int) -> list[int]:
    """The worker processes of the sweep (children of its main process)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


class _suppress_missing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, *rest: Any) -> bool:
        return kind is ProcessLookupError


def main() -> int:
    parser = arg_parser(__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the random moments")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    counts = (3, 1, 1) if args.quick else (20, 5, 3)
    rows = []
    started = time.time()
    for run, count in zip((kill_nine, torn_writes, db_restarts), counts, strict=True):
        with tempfile.TemporaryDirectory(prefix="mutransfer-reliability-") as tmp:
            print(f"[reliability] {run.__name__} × {count}", flush=True)
            rows.append(run(Path(tmp), count, rng))
            print(f"[reliability] {rows[-1]}", flush=True)
    ok = all(
        r["lost"] == 0 and r["duplicates"] == 0 and r["missing_after_rerun"] == 0 for r in rows
    )
    info = machine_info()
    payload = {
        "quick": args.quick,
        "rows": rows,
        "ok": ok,
        "seconds": round(time.time() - started, 1),
        "command": command_line(),
        "machine": info,
    }
    table = markdown_table(
        [
            "fault injected",
            "faults that hit a running sweep",
            "finished trials before",
            "lost",
            "duplicates",
            "missing after the rerun",
            "final exit",
        ],
        [
            [
                r["fault"],
                r["hits"],
                r["finished_before_faults"],
                r["lost"],
                r["duplicates"],
                r["missing_after_rerun"],
                r["final_exit"],
            ]
            for r in rows
        ],
    )
    markdown = (
        f"## Faults injected into real sweeps\n\n`{payload['command']}` — {machine_line(info)}; "
        f"{payload['seconds']} s.\n\n"
        "A 2-worker `mutransfer sweep` over 2 widths × 24 grid points (each trial sleeps 1 s "
        "so that trials are in flight); after each fault the finished trials are snapshotted, "
        "and the same command is run again at the end. *Lost*: a finished trial whose "
        "completion time or value changed or vanished; *duplicates*: a grid point finished "
        "twice. The bar is 0 and 0.\n\n"
        + table
        + f"\n\n{'All faults: 0 lost, 0 duplicates.' if ok else '**The bar is not met.**'}\n"
    )
    write_results(NAME, payload, markdown, args.out_dir)
    print(markdown)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
