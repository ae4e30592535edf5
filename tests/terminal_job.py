"""Start a command the way a terminal starts a job, so a test can press Ctrl-C on it.

A shell that runs a script in the background (``make test &``, ``nohup .ci/run &``) starts it
with SIGINT ignored, and every child inherits that: Python then installs no KeyboardInterrupt
handler and a test's SIGINT is silently dropped. A job started from a terminal has the default
disposition; the child gets it back here before it runs.
"""

from __future__ import annotations

import signal
import subprocess
from typing import Any


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_job(args: list[str], **kwargs: Any) -> subprocess.Popen[str]:
    """``Popen`` in its own process group (a test can signal all of it) with SIGINT default."""
    return subprocess.Popen(args, start_new_session=True, preexec_fn=_default_sigint, **kwargs)
