"""CPU time and peak memory of the benchmark's processes, sampled with psutil.

:class:`ProcessSampler` reads each watched process's user + system CPU
seconds every ``interval`` seconds, and its peak resident set size from
``VmHWM`` in ``/proc/PID/status`` (the kernel's high-water mark, so no peak
between samples is missed) or, where that file does not exist, from the
largest sampled RSS. A process's last sample is at most ``interval``
seconds before it exits, so CPU time spent in that gap is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

#: Seconds between samples.
SAMPLE_INTERVAL = 0.1


@dataclass
class ProcessRecord:
    """Samples of one watched process."""

    pid: int
    role: str
    nodes: int
    #: (Unix time, CPU seconds) pairs, oldest first.
    samples: list[tuple[float, float]] = field(default_factory=list)
    peak_rss_bytes: int = 0

    def cpu_at(self, when: float) -> float:
        """Return the CPU seconds of the last sample at or before ``when``, 0 before the first."""
        value = 0.0
        for sampled_at, cpu in self.samples:
            if sampled_at > when:
                break
            value = cpu
        return value

    @property
    def cpu_seconds(self) -> float:
        return self.samples[-1][1] if self.samples else 0.0


class ProcessSampler:
    """Samples CPU time and peak memory of the processes it watches, in the background."""

    def __init__(self, interval: float = SAMPLE_INTERVAL) -> None:
        self.interval = interval
        self.records: dict[int, ProcessRecord] = {}
        self._handles: dict[int, psutil.Process] = {}
        self._task: asyncio.Task[None] | None = None

    def watch(self, pid: int, role: str, nodes: int = 0) -> None:
        """Start sampling ``pid``; ``role`` is learner, host, node or broker; ``nodes`` counts the nodes it runs."""
        with contextlib.suppress(psutil.Error):
            self._handles[pid] = psutil.Process(pid)
            self.records[pid] = ProcessRecord(pid=pid, role=role, nodes=nodes)
            self._sample(pid)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="bench-sampler")

    async def stop(self) -> None:
        """Take a last sample of the processes still running and stop sampling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for pid in list(self._handles):
            self._sample(pid)

    async def _run(self) -> None:
        while True:
            for pid in list(self._handles):
                self._sample(pid)
            await asyncio.sleep(self.interval)

    def _sample(self, pid: int) -> None:
        handle = self._handles[pid]
        record = self.records[pid]
        try:
            with handle.oneshot():
                times = handle.cpu_times()
                rss = handle.memory_info().rss
        except psutil.Error:
            del self._handles[pid]  # the process has exited
            return
        record.samples.append((time.time(), times.user + times.system))
        record.peak_rss_bytes = max(record.peak_rss_bytes, rss, _high_water_mark(pid))

    def cpu_seconds(self, pids: list[int]) -> float:
        """Return the CPU seconds of ``pids`` at their latest samples, summed."""
        return sum(self.records[pid].cpu_seconds for pid in pids if pid in self.records)

    def summary(self, window: tuple[float, float] | None, rounds: int) -> dict[str, Any]:
        """Summarise CPU seconds and peak memory per role, and per node for node-hosting processes.

        ``window`` is (start, end) Unix time of the measured rounds; CPU
        seconds per round are the CPU spent in it divided by ``rounds``.
        """
        roles: dict[str, dict[str, Any]] = {}
        for record in self.records.values():
            entry = roles.setdefault(
                record.role,
                {
                    "processes": 0,
                    "nodes": 0,
                    "cpu_s": 0.0,
                    "cpu_s_per_round": 0.0,
                    "peak_rss_mb_max": 0.0,
                },
            )
            entry["processes"] += 1
            entry["nodes"] += record.nodes
            entry["cpu_s"] += record.cpu_seconds
            if window is not None and rounds > 0:
                spent = record.cpu_at(window[1]) - record.cpu_at(window[0])
                entry["cpu_s_per_round"] += spent / rounds
            entry["peak_rss_mb_max"] = max(entry["peak_rss_mb_max"], record.peak_rss_bytes / 2**20)
        node_records = [record for record in self.records.values() if record.nodes > 0]
        nodes = sum(record.nodes for record in node_records)
        per_node = {
            "cpu_s": sum(record.cpu_seconds for record in node_records) / max(nodes, 1),
            "peak_rss_mb": sum(record.peak_rss_bytes for record in node_records)
            / 2**20
            / max(nodes, 1),
        }
        for entry in roles.values():
            entry["cpu_s"] = round(entry["cpu_s"], 3)
            entry["cpu_s_per_round"] = round(entry["cpu_s_per_round"], 3)
            entry["peak_rss_mb_max"] = round(entry["peak_rss_mb_max"], 1)
        return {
            "roles": roles,
            "per_node": {name: round(value, 3) for name, value in per_node.items()},
            "per_node_is_average": any(record.nodes > 1 for record in node_records),
        }


def _high_water_mark(pid: int) -> int:
    """Return VmHWM of ``pid`` in bytes, or 0 where /proc does not provide it."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


async def wait_until_idle(
    sampler: ProcessSampler,
    pids: list[int],
    *,
    busy_fraction: float = 0.1,
    window: float = 0.3,
    timeout: float = 300.0,
) -> tuple[float, bool]:
    """Wait until ``pids`` together use less than ``busy_fraction`` of one core over ``window`` seconds.

    Returns the seconds waited and whether the processes went idle before ``timeout``.
    """
    started = time.monotonic()
    last = sampler.cpu_seconds(pids)
    while time.monotonic() - started < timeout:
        await asyncio.sleep(window)
        now = sampler.cpu_seconds(pids)
        if now - last < busy_fraction * window:
            return time.monotonic() - started, True
        last = now
    return time.monotonic() - started, False
