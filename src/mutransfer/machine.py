"""The machine a number was measured on, for the records the demo and the benchmarks write.

A training time or a step overhead means little without the processor it ran on, and
``platform.processor()`` is empty on most Linux systems: the readable name is in
``/proc/cpuinfo``. One helper, so the demo's summary and every benchmark name the CPU alike.
"""

from __future__ import annotations

import platform


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo``), else whatever ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
