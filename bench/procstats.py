"""CPU seconds per process group, sampled with psutil around each scenario."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import psutil


def _proc_cpu(proc: psutil.Process) -> float:
    """User + system seconds of a process and of the children it has reaped."""
    try:
        t = proc.cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return 0.0
    return t.user + t.system + t.children_user + t.children_system


def tree_cpu(pid: int) -> float:
    """CPU seconds of *pid* and every live descendant (reaped ones count in their parent)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    return sum(_proc_cpu(p) for p in procs)


def self_cpu() -> float:
    """The bench process: its own CPU and that of the load generators it has reaped (wrk).

    The salt processes are children of this process too, but they are not
    reaped before the end, so they do not count here.
    """
    t = psutil.Process(os.getpid()).cpu_times()
    return t.user + t.system + t.children_user + t.children_system


class CpuMeter:
    """Snapshots of CPU seconds for named groups; ``delta`` gives per-group seconds."""

    def __init__(self, groups: dict[str, Callable[[], float]]) -> None:
        self.groups = groups

    def snapshot(self) -> dict[str, float]:
        snap = {name: fn() for name, fn in self.groups.items()}
        snap["_wall"] = time.monotonic()
        return snap

    @staticmethod
    def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {name: round(after[name] - before[name], 3) for name in before}
