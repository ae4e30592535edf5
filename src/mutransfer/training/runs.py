"""The one way proxy runs are executed and kept: a content-addressed store and a worker pool.

A proxy run is a pure function of its config and data (``training.proxy.train``), so a finished
run is kept once and found again by whoever asks for the same run: the demo, the benchmarks
(which reuse the demo's runs) and the sweeps' built-in objective (``sweep.objective``) all go
through ``RunStore``. What differs is who decides *which* runs: a fixed grid (the demo, the
benchmarks: ``run_all`` below runs the missing ones on a pool) or a search (the sweeps: Optuna
chooses, many workers and machines, pruning). The grid needs no sampler and no database: all it
needs is (1) never to lose or redo a finished run and (2) to keep both cores busy.

Each finished run is one JSON file, written atomically (temporary file + ``os.replace``), named
by a hash of its *full* config and of the exact text it trained on. A re-run with the same
options finds every finished run and computes only the missing ones; a re-run with different
options (steps, batch, another text...) gets different keys, so results are never silently
mixed.

Runs that share their shapes (other learning rates, seeds, init scales...) are trained together
as one stacked model (``training.stacked``) with ``run_all(stacked=True)``: it cuts the
missing runs small enough to gain from it (``stacked.worth_stacking``) into packs
(``plan_packs``, at least one per worker); each pack is one task, and each of its runs is saved
the moment it leaves the pack (at the end, or earlier when it diverges). The store sees what one
run per task gives — the same files under the same keys, losses equal to float32 rounding — so
a grid can be resumed with either path. It is off by default: on a 2-core CPU it gained only
1.03–1.18× (docs/stacked.md), and a chaotic run (an LR near divergence) amplifies the float32
rounding differences over hundreds of steps, so a stacked grid's optimum can differ from one run
per task's in a near-tie — opt in where the speed matters more (small batches, a GPU).

Workers are spawned processes (``ProcessPoolExecutor``, which reports a worker that died instead
of waiting for it forever) with one torch thread each: two such workers give about twice the
throughput of one process using two threads on small models. They ignore Ctrl-C — the parent
terminates them — and a watchdog thread ends a worker whose parent died (``kill -9``), so no
orphan keeps burning a core.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import torch

from ..data import ArrayDataset, TextCorpus
from ..devices import resolve_device
from .proxy import TrainConfig, TrainResult, estimated_step_flops, load_source, train
from .stacked import DEFAULT_MEMORY_BUDGET, plan_packs, train_stacked, worth_stacking

RUN_FORMAT = "mutransfer.demo-run/1"
STEP_OVERHEAD_FLOPS = 1e9
"""Fixed per-step cost (Python, kernel launches) in FLOP-equivalents, measured on a 2-core CPU:
a width-32 GPT step costs as much as 0.5 (idle machine) to 1.5 (busy machine) GFLOP of matmuls
on top of its own FLOPs. Used only to weight the progress bar so that its time estimate holds
for the small runs that come last."""


# ------------------------------------------------------------------------------ identity
def source_fingerprint(source: TextCorpus | ArrayDataset) -> str:
    """A short hash of the exact data a run sees: the same name with other bytes is other data."""
    digest = hashlib.sha1()
    tensors: tuple[torch.Tensor, ...]
    if isinstance(source, TextCorpus):
        tensors = (source.train, source.val)
    else:
        tensors = (source.train_x, source.train_y, source.val_x, source.val_y)
    for tensor in tensors:
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def run_key(config: TrainConfig, fingerprint: str) -> str:
    """Identity of a run: every config field plus the data fingerprint."""
    payload = json.dumps(
        {"format": RUN_FORMAT, "config": config.to_dict(), "data": fingerprint}, sort_keys=True
    )
    return hashlib.sha1(payload.encode()).hexdigest()[:16]


def run_filename(config: TrainConfig, key: str) -> str:
    """Readable and unique: ``mup-w128-lr-7-s0-<key>.json`` (``mup-w64-d16-lr-7-...`` in a depth
    sweep, i.e. when ``base_depth`` is set; width sweeps keep the names they always had)."""
    depth = "" if config.base_depth is None else f"-d{config.depth}"
    lr = f"lr{math.log2(config.lr):g}"
    return f"{config.rules}-w{config.width}{depth}-{lr}-s{config.seed}-{key}.json"


def estimated_cost(config: TrainConfig) -> float:
    """Relative cost of a run (FLOPs plus a per-step overhead), for progress and scheduling.

    The FLOPs are the trainer's own count (``proxy.estimated_step_flops``) on the run's model
    built on the meta device (no memory, no init): 6 · params · tokens for the GPT, the BERT (every
    position is computed, whichever are predicted) and the MLP, the convolutions' per-pixel
    FLOPs for the ResNet.
    """
    return (estimated_step_flops(config) + STEP_OVERHEAD_FLOPS) * config.steps


# ----------------------------------------------------------------------------- storage
class RunStore:
    """A folder of finished runs, one atomically written JSON file per run."""

    def __init__(self, folder: str | os.PathLike[str], fingerprint: str) -> None:
        self.folder = Path(folder)
        self.fingerprint = fingerprint

    def path(self, config: TrainConfig) -> Path:
        return self.folder / run_filename(config, run_key(config, self.fingerprint))

    def load(self, config: TrainConfig) -> dict[str, Any] | None:
        """The stored result of ``config`` (a ``TrainResult.to_dict()``), or None if not run."""
        path = self.path(config)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError):
            return None  # unreadable (e.g. a foreign partial file): run it again
        if record.get("format") != RUN_FORMAT or record.get("config") != config.to_dict():
            return None
        result: dict[str, Any] = record["result"]
        return result

    def save(self, config: TrainConfig, result: TrainResult) -> Path:
        return self.save_dict(config, result.to_dict())

    def save_dict(self, config: TrainConfig, result: dict[str, Any]) -> Path:
        """Keep a finished run (``TrainResult.to_dict()``), atomically."""
        record = {
            "format": RUN_FORMAT,
            "key": run_key(config, self.fingerprint),
            "data": self.fingerprint,
            "config": config.to_dict(),
            "result": result,
        }
        path = self.path(config)
        write_json_atomic(path, record)
        return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()
"""Mode of the files we write: what ``open()`` would give (mkstemp's temporary files are 0600)."""


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that a reader (or a kill -9) never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------- workers
# Per-process state of a worker: the data (loaded once) and where to write results.
_WORKER: dict[str, Any] = {}


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(1)  # the parent died (kill -9): stop instead of running on as an orphan


def _init_worker(
    source: TextCorpus | ArrayDataset | None,
    folder: str,
    fingerprint: str,
    threads: int,
    device: str = "cpu",
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and terminates us
    torch.set_num_threads(threads)
    _WORKER.update(source=source, store=RunStore(folder, fingerprint), device=device)
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()


def _run_in_worker(config_dicts: list[dict[str, Any]], memory_budget: int) -> list[dict[str, Any]]:
    """One task: a single run, or a pack trained as one stacked model (each run saved as soon
    as it leaves the pack)."""
    configs = [TrainConfig.from_dict(c) for c in config_dicts]
    source = _WORKER.get("source")
    if source is None:
        source = _WORKER["source"] = load_source(configs[0])
    store, device = _WORKER["store"], _WORKER["device"]
    return [r.to_dict() for r in _train_task(configs, source, store, memory_budget, device=device)]


def _train_task(
    configs: list[TrainConfig],
    source: TextCorpus | ArrayDataset | None,
    store: RunStore,
    memory_budget: int,
    train_fn: Callable[..., TrainResult] = train,
    device: str | torch.device = "cpu",
) -> list[TrainResult]:
    """Train one task's runs and save each one; one config alone goes to ``train_fn``."""
    if len(configs) == 1:
        result = train_fn(configs[0], source=source, device=device)
        store.save(configs[0], result)
        return [result]

    def save(index: int, result: TrainResult) -> None:
        store.save(configs[index], result)

    return train_stacked(
        configs, source=source, memory_budget=memory_budget, on_result=save, device=device
    )


def _tasks(
    todo: Sequence[TrainConfig], stacked: bool, workers: int, memory_budget: int
) -> list[list[TrainConfig]]:
    """The runs to train, as tasks: packs of runs that share their shapes (``stacked``; only
    runs small enough to gain from it, ``worth_stacking``), the others alone; the most
    expensive first, so that the big ones do not end up alone at the end."""
    small = [c for c in todo if stacked and worth_stacking(c)]
    tasks = [[c] for c in todo if not (stacked and worth_stacking(c))]
    packs, singles = plan_packs(small, memory_budget, workers=max(1, workers))
    tasks += [[small[i] for i in pack] for pack in packs] + [[small[i]] for i in singles]
    return sorted(tasks, key=lambda task: -sum(estimated_cost(c) for c in task))


# ----------------------------------------------------------------------------- running


def run_all(
    configs: Sequence[TrainConfig],
    store: RunStore,
    *,
    source: TextCorpus | ArrayDataset | None = None,
    workers: int = 2,
    threads: int = 1,
    progress: bool = True,
    train_fn: Callable[..., TrainResult] = train,
    stacked: bool = False,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    device: str = "cpu",
) -> dict[TrainConfig, dict[str, Any]]:
    """Results of every config: finished ones from disk, the others computed and saved.

    ``workers >= 2`` runs them in that many spawned processes (largest first, so that the big
    runs do not end up alone at the end); ``workers <= 1`` runs them here, one after the other
    (``train_fn`` replaces the trainer there, e.g. to count calls in tests: then every run is
    trained alone). ``stacked``: train the runs that share their shapes as packs
    (``training.stacked``, ``memory_budget`` bytes per pack); each run is still saved as
    its own file, as soon as it leaves its pack. ``device``: where the runs train, in this
    process and in every worker (``mutransfer.devices``; checked here, before any run).
    Returns a ``TrainResult.to_dict()`` per config.
    """
    device = str(resolve_device(device))  # "auto" resolved once, here
    unique = list(dict.fromkeys(configs))
    results: dict[TrainConfig, dict[str, Any]] = {}
    todo: list[TrainConfig] = []
    for config in unique:
        found = store.load(config)
        if found is None:
            todo.append(config)
        else:
            results[config] = found
    if not todo:
        return results
    todo.sort(key=estimated_cost, reverse=True)
    tasks = _tasks(todo, stacked and train_fn is train, workers, memory_budget)
    bar = _Progress(todo, len(unique) - len(todo)) if progress else None
    try:
        if workers <= 1:
            for task in tasks:
                for config, result in zip(
                    task,
                    _train_task(task, source, store, memory_budget, train_fn, device),
                    strict=True,
                ):
                    results[config] = result.to_dict()
                    if bar is not None:
                        bar.advance(config)
        else:
            _run_pool(tasks, store, source, workers, threads, memory_budget, results, bar, device)
    finally:
        if bar is not None:
            bar.close()
    return results


def _run_pool(
    tasks: Sequence[list[TrainConfig]],
    store: RunStore,
    source: TextCorpus | ArrayDataset | None,
    workers: int,
    threads: int,
    memory_budget: int,
    results: dict[TrainConfig, dict[str, Any]],
    bar: _Progress | None,
    device: str,
) -> None:
    executor = ProcessPoolExecutor(
        max_workers=min(workers, len(tasks)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(source, str(store.folder), store.fingerprint, threads, device),
    )
    try:
        futures = {
            executor.submit(_run_in_worker, [c.to_dict() for c in task], memory_budget): task
            for task in tasks
        }
        for future in as_completed(futures):
            task = futures[future]
            for config, result in zip(task, future.result(), strict=True):
                results[config] = result
                if bar is not None:
                    bar.advance(config)
    except BrokenProcessPool as exc:
        _stop(executor)
        raise RuntimeError(
            "a worker process died (killed, out of memory, or it could not start). If you call "
            "run_demo from a script, put the call under `if __name__ == '__main__':` (workers "
            "are spawned and re-import your script), or pass workers=1. Finished runs are saved."
        ) from exc
    except BaseException:
        _stop(executor)  # Ctrl-C or an error: stop the workers now; finished runs are on disk
        raise
    executor.shutdown(wait=True)


def _stop(executor: ProcessPoolExecutor) -> None:
    """Terminate the workers at once (their current runs are lost, finished ones are saved)."""
    terminate = getattr(executor, "terminate_workers", None)  # public from Python 3.14
    processes = list((getattr(executor, "_processes", None) or {}).values())
    if callable(terminate):
        terminate()
    else:
        for process in processes:
            process.terminate()
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.join(timeout=10)


class _Progress:
    """A tqdm bar weighted by estimated cost (so its time estimate is realistic), counting runs."""

    def __init__(self, todo: Sequence[TrainConfig], already: int) -> None:
        from tqdm.auto import tqdm

        self.done, self.total, self.already = 0, len(todo), already
        self.bar = tqdm(
            total=sum(estimated_cost(c) for c in todo) / 1e9,
            unit="GFLOP",
            file=sys.stderr,
            bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed} elapsed, ~{remaining} left",
            dynamic_ncols=True,
        )
        self._describe()

    def _describe(self) -> None:
        on_disk = f" (+{self.already} on disk)" if self.already else ""
        self.bar.set_description_str(f"runs {self.done}/{self.total}{on_disk}", refresh=False)

    def advance(self, config: TrainConfig) -> None:
        self.done += 1
        self._describe()
        self.bar.update(estimated_cost(config) / 1e9)

    def close(self) -> None:
        self.bar.close()
