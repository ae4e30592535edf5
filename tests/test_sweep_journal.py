"""A sweep journal survives failed writes: a full disk, a file-size limit, torn bytes.

The fault is injected for real: the sweep runs under ``RLIMIT_FSIZE`` (``ulimit -f``), so the
kernel cuts its journal writes short exactly as a full disk does. Nothing may claim "saved" for
a record that is not there, the journal must stay readable, and the same command resumes.
"""

from __future__ import annotations

import json
import resource
import subprocess
from pathlib import Path

from mutransfer.sweep.journal import RECORD_START, repair_journal
from test_sweep_support import CLI, assert_full_grid_once, env_for, setup_sweep, studies

WIDTHS = [8, 16]


def _run(tmp_path: Path, *args: str, fsize: int | None = None) -> tuple[int, str]:
    def limit() -> None:
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    proc = subprocess.run(
        [*CLI, *args],
        cwd=tmp_path,
        env=env_for(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
        preexec_fn=limit,
    )
    return proc.returncode, proc.stdout


def journal(tmp_path: Path) -> Path:
    return tmp_path / "runs" / "w.journal"


def test_a_write_cut_short_is_undone_reported_and_resumed(tmp_path: Path) -> None:
    setup_sweep(tmp_path, WIDTHS)
    code, out = _run(tmp_path, "sweep", "sweep.toml", fsize=15 * 1024)  # `ulimit -f 15`
    assert code != 0
    assert "could not write to the sweep's journal" in out and "File too large" in out, out
    assert "finished trials are saved" not in out
    data = journal(tmp_path).read_bytes()
    assert data.endswith(b"\n")  # the failed record was taken back: no torn line
    finished = sum(len(s.trials) for s in studies(tmp_path, WIDTHS).values())
    assert finished > 0

    code, out = _run(tmp_path, "sweep", "sweep.toml")  # the same command, with space again
    assert code == 0, out
    assert_full_grid_once(tmp_path, WIDTHS)
    code, out = _run(tmp_path, "report", "sweep.toml", "--out", "report")
    assert code == 0, out


def finished_sweep(tmp_path: Path) -> bytes:
    setup_sweep(tmp_path, WIDTHS)
    code, out = _run(tmp_path, "sweep", "sweep.toml")
    assert code == 0, out
    return journal(tmp_path).read_bytes()


def test_a_torn_tail_is_set_aside_in_a_side_file_and_report_and_transfer_work(
    tmp_path: Path,
) -> None:
    data = finished_sweep(tmp_path)
    journal(tmp_path).write_bytes(data[:-37])  # bytes cut from the end of a finished journal
    code, out = _run(tmp_path, "report", "sweep.toml", "--out", "report")
    assert code == 0, out
    assert out.count("repaired the sweep journal") == 1, out
    side = list(journal(tmp_path).parent.glob("w.journal.torn-*"))
    assert len(side) == 1
    last_line_start = data[:-1].rfind(b"\n") + 1
    assert side[0].read_bytes() == data[last_line_start:-37]  # exactly the torn bytes
    assert journal(tmp_path).read_bytes() == data[:last_line_start]  # every complete record
    code, out = _run(tmp_path, "transfer", "sweep.toml", "--to-width", "32", "--out", "t")
    assert code == 0, out


def test_a_journal_damaged_by_an_append_after_a_torn_line_is_recovered(tmp_path: Path) -> None:
    """What older versions left behind: the next record appended on the torn line."""
    data = finished_sweep(tmp_path)
    lines = data.splitlines(keepends=True)
    damaged = b"".join(lines[:-3]) + lines[-3][:20] + b"".join(lines[-2:])
    journal(tmp_path).write_bytes(damaged)
    note = repair_journal(journal(tmp_path))
    assert note is not None and "recovering 1 record" in note
    repaired = journal(tmp_path).read_bytes().splitlines(keepends=True)
    assert repaired == lines[:-3] + lines[-2:]  # only the torn record is gone
    assert all(line.startswith(RECORD_START) and json.loads(line) for line in repaired)
    assert repair_journal(journal(tmp_path)) is None  # nothing left to do


def test_a_storage_folder_that_cannot_be_made_is_one_clear_line(tmp_path: Path) -> None:
    """A file where the folder should be (as root, permissions would not stop the write)."""
    setup_sweep(tmp_path, WIDTHS)
    (tmp_path / "taken").write_text("a file, not a folder")
    code, out = _run(tmp_path, "sweep", "sweep.toml", "--storage", "taken/sub/w.journal")
    assert code == 2, out
    assert "Traceback" not in out
    assert "cannot create the folder of the sweep's storage" in out, out
