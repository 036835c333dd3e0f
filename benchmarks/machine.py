"""What every benchmark prints first: the command, the machine, and its load at the start."""

from __future__ import annotations

import os
import platform
import shlex
import sys


def machine_facts(extra: str = "") -> str:
    """Three lines: command, machine (CPU, cores, OS, Python, ``extra``), load average."""
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()
    return (f"command: {shlex.join([sys.executable, *sys.argv])}\n"
            f"machine: {cpu}, {os.cpu_count()} logical CPUs, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}{extra}\n"
            f"load average (1/5/15 min) at start: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")
