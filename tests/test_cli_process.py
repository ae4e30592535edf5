"""What the ``mutransfer`` command sets up for its own process before any command runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mutransfer import cli

THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _run_main(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as exc:  # --help ends argparse with SystemExit(0)
        return int(exc.code or 0)


def test_the_command_line_turns_on_huge_pages(monkeypatch, capsys) -> None:
    monkeypatch.delenv(cli.HUGE_PAGES_VARIABLE, raising=False)
    assert _run_main(["--help"]) == 0
    assert os.environ[cli.HUGE_PAGES_VARIABLE] == "1"


def test_a_users_own_huge_pages_setting_is_kept(monkeypatch, capsys) -> None:
    monkeypatch.setenv(cli.HUGE_PAGES_VARIABLE, "0")
    assert _run_main(["--help"]) == 0
    assert os.environ[cli.HUGE_PAGES_VARIABLE] == "0"


HUGE_PAGES_PROBE = """
import mutransfer.cli
mutransfer.cli.prefer_huge_pages()  # what main() does first, after importing the package
import torch
buffer = torch.empty(16 * 2**20 // 4)
buffer.fill_(1.0)
with open("/proc/self/smaps_rollup", encoding="utf-8") as fh:
    print(next(int(line.split()[1]) for line in fh if line.startswith("AnonHugePages")))
"""


@pytest.mark.skipif(
    not THP_SETTING.exists() or "[never]" in THP_SETTING.read_text(),
    reason="this kernel has transparent huge pages off: torch's setting cannot take effect",
)
def test_importing_the_package_leaves_torch_free_to_use_huge_pages() -> None:
    """torch reads the variable at its first buffer of 2 MiB: no import may allocate one."""
    env = {k: v for k, v in os.environ.items() if k != cli.HUGE_PAGES_VARIABLE}
    probe = [sys.executable, "-c", HUGE_PAGES_PROBE]
    with_cli = subprocess.run(probe, env=env, capture_output=True, text=True, check=True)
    env[cli.HUGE_PAGES_VARIABLE] = "0"
    without = subprocess.run(probe, env=env, capture_output=True, text=True, check=True)
    assert int(with_cli.stdout) >= 8 * 1024  # kB of the 16 MiB buffer in huge pages
    assert int(without.stdout) == 0
