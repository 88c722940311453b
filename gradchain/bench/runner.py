"""Run the benchmark's jobs: one real job over a real broker per configuration.

For each configuration the runner writes a topology over the synthetic data
set, copies in the key pair it generated once per run, starts the learner
(:mod:`.learner_host`) and the node processes (``gradchain swarm`` hosts,
or one ``gradchain node`` process per node with ``hosts = 0``), counts the
job's bytes on the broker, samples CPU and memory, paces the rounds, and
reads the daemons' events back into round latencies and critical paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import tomli_w

from ..crypto import generate_keypair, make_encoding, save_private_key, save_public_key
from ..errors import GradchainError, TransportError
from ..node.broker import BrokerAddress
from ..node.signatures import create_signing_keys
from ..randomisers import ScalarRandomiser
from ..topology import CryptoSettings, Topology, load_topology
from ..topology.generate import LEARNER_ID, write_chain, write_multi, write_tree
from .analysis import (
    count_recovery_events,
    critical_path,
    load_round_timings,
    shape_from_next_hops,
    shape_of,
    summarise_paths,
)
from .processes import ProcessSampler, wait_until_idle
from .traffic import TrafficCounter, delivered_bytes

logger = logging.getLogger(__name__)

#: Seconds added to the round timeout for each hop, on top of 120 s. A node
#: forwards what it has at a share of the timeout that shrinks with its
#: distance from the learner, so a long chain needs a long timeout for its
#: first providers to wait out a slow first round.
TIMEOUT_PER_HOP = 10.0
#: Seconds the runner waits for node processes to exit after the learner.
NODE_EXIT_TIMEOUT = 60.0


@dataclass(frozen=True, kw_only=True)
class Configuration:
    """One job of the grid."""

    kind: str  # "chain", "tree" or "multi"
    #: Fan-out of a tree, or portions (and aggregators) of a multi shape.
    fanout: int | None
    providers: int
    size: int  # gradient length: features of the synthetic data set
    mode: str  # "encrypted" or "plaintext"

    @property
    def topology_name(self) -> str:
        return "chain" if self.kind == "chain" else f"{self.kind}-{self.fanout}"

    @property
    def id(self) -> str:
        return f"{self.topology_name}-n{self.providers}-d{self.size}-{self.mode}"


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """Settings shared by every job of one benchmark run."""

    rounds: int
    warmup: int
    key_bits: int
    hosts: int
    broker: BrokerAddress
    broker_pid: int | None
    work_dir: Path
    link_latency: float | None
    link_bandwidth_mbps: float | None
    seed: int = 0


def obfuscators_per_round(config: Configuration, key_bits: int) -> int:
    """Return the obfuscators the providers of ``config`` need per round together: 0 without encryption."""
    if config.mode != "encrypted":
        return 0
    encoding = make_encoding(CryptoSettings(key_bits=key_bits), config.providers)
    # Benchmark jobs use the default scalar randomiser.
    payload = ScalarRandomiser().payload_length(config.size)
    portions = config.fanout if config.kind == "multi" and config.fanout else 1
    return config.providers * portions * encoding.ciphertext_count(payload)


def rows_for(providers: int) -> int:
    """Return the synthetic data set's rows: three per provider, at least 50; a fifth is held out."""
    return max(50, 3 * providers)


def prepare_keys(work_dir: Path, key_bits: int) -> Path:
    """Generate the learner's DJN key pair once for the run and return its folder."""
    folder = work_dir / f"keys-{key_bits}"
    if not (folder / "learner.key.json").exists():
        public, private = generate_keypair(key_bits, djn=True)
        folder.mkdir(parents=True, exist_ok=True)
        save_private_key(folder / "learner.key.json", private)
        save_public_key(folder / "learner.pub.json", public)
    return folder


def write_job(config: Configuration, settings: RunSettings, keys: Path) -> Topology:
    """Write the configuration's topology, data files, key files and fault plan, and return the loaded topology."""
    job_dir = settings.work_dir / "jobs" / config.id
    if job_dir.exists():
        shutil.rmtree(job_dir)

    hops = shape_of(config.kind, config.providers, config.fanout).hops
    common: dict[str, Any] = {
        "job_id": f"bench-{config.id}",
        "rounds": settings.warmup + settings.rounds,
        # Only rounds end the job, so every configuration runs the same number.
        "tolerance": 0.0,
        "min_contributors": min(3, config.providers),
        "key_bits": settings.key_bits,
        "seed": settings.seed,
        "learning_rate": 0.05,
        "round_timeout": 120.0 + TIMEOUT_PER_HOP * hops,
    }
    dataset = f"synthetic:{config.size}x{rows_for(config.providers)}"
    if config.kind == "chain":
        path = write_chain(job_dir, dataset, config.providers, **common)
    elif config.kind == "multi":
        assert config.fanout is not None
        path = write_multi(
            job_dir, dataset, config.providers, config.fanout, aggregators=config.fanout, **common
        )
    else:
        assert config.fanout is not None
        path = write_tree(job_dir, dataset, config.providers, config.fanout, **common)
    if config.mode == "plaintext":
        _set_crypto(path, encryption=False, insecure=True)

    (job_dir / "keys").mkdir(exist_ok=True)
    for name in ("learner.key.json", "learner.pub.json"):
        shutil.copy2(keys / name, job_dir / "keys" / name)
    create_signing_keys(load_topology(path))
    if settings.link_latency is not None or settings.link_bandwidth_mbps is not None:
        _write_link_plan(job_dir / "link.toml", settings)
    return load_topology(path)


def _set_crypto(path: Path, **values: Any) -> None:
    header = "".join(line + "\n" for line in path.read_text().splitlines() if line.startswith("#"))
    document = tomllib.loads(path.read_text())
    document["crypto"].update(values)
    path.write_text(header + "\n" + tomli_w.dumps(document))


def _write_link_plan(path: Path, settings: RunSettings) -> None:
    fault: dict[str, Any] = {"kind": "link", "node": "*"}
    if settings.link_latency is not None:
        fault["latency"] = settings.link_latency
    if settings.link_bandwidth_mbps is not None:
        fault["bandwidth_mbps"] = settings.link_bandwidth_mbps
    path.write_text(tomli_w.dumps({"faults": [fault]}))


async def run_configuration(
    config: Configuration, settings: RunSettings, keys: Path
) -> dict[str, Any]:
    """Run one configuration's job and return its figures."""
    topology = write_job(config, settings, keys)
    job_dir = topology.path.parent
    events = job_dir / "events"
    logs = job_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    plan = job_dir / "link.toml" if (job_dir / "link.toml").exists() else None
    started = time.monotonic()

    counter = TrafficCounter(settings.broker, topology.job.id)
    await counter.start()
    sampler = ProcessSampler()
    if settings.broker_pid is not None:
        sampler.watch(settings.broker_pid, "broker")
    sampler.start()
    nodes = _NodeProcesses(topology, settings, events, logs, plan)
    learner: asyncio.subprocess.Process | None = None
    settle_waits: list[float] = []
    settle_timeouts = 0
    try:
        await nodes.start(sampler)
        learner = await asyncio.create_subprocess_exec(
            *_python(
                "-m",
                "gradchain.bench.learner_host",
                str(topology.path),
                "--broker",
                settings.broker.url,
                "--results",
                str(job_dir / "results"),
                "--events",
                str(events),
                "--log-file",
                str(logs / f"{LEARNER_ID}.log"),
                "--paced",
            ),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=_environment(),
        )
        sampler.watch(learner.pid, "learner")
        assert learner.stdout is not None and learner.stdin is not None
        node_pids = nodes.pids()
        while True:
            line = await learner.stdout.readline()
            if not line:
                break
            if not line.startswith(b"ready"):
                continue
            waited, idle = await wait_until_idle(sampler, [*node_pids, learner.pid])
            settle_waits.append(waited)
            settle_timeouts += 0 if idle else 1
            learner.stdin.write(b"go\n")
            await learner.stdin.drain()
        code = await learner.wait()
        if code != 0:
            raise GradchainError(
                f"{config.id}: the learner exited with status {code}; see {logs / (LEARNER_ID + '.log')}"
            )
        await nodes.wait(NODE_EXIT_TIMEOUT)
    finally:
        if learner is not None and learner.returncode is None:
            learner.kill()
            await learner.wait()
        await nodes.stop()
        await sampler.stop()
        await counter.stop()

    return _figures(
        config,
        settings,
        topology,
        events,
        counter,
        sampler,
        {
            "seconds": round(time.monotonic() - started, 2),
            "settle_wait_s_median": round(sorted(settle_waits)[len(settle_waits) // 2], 3)
            if settle_waits
            else 0.0,
            "settle_timeouts": settle_timeouts,
        },
    )


def _figures(
    config: Configuration,
    settings: RunSettings,
    topology: Topology,
    events: Path,
    counter: TrafficCounter,
    sampler: ProcessSampler,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Join the events, traffic and process samples of a finished job into its figures."""
    timings = load_round_timings(events)
    # A repeated round gets a new number, so the measured rounds are the
    # completed ones after the warm-up, whatever their numbers.
    completed = [
        path
        for number in sorted(timings)
        if (path := critical_path(number, timings[number], LEARNER_ID))
    ]
    paths = completed[settings.warmup :]
    if not paths:
        raise GradchainError(
            f"{config.id}: no measured round completed; see {events.parent / 'logs'}"
        )
    summary = summarise_paths(paths)
    next_hops = {node_id: topology.successor_of(node_id) for node_id in topology.nodes}
    shape = shape_from_next_hops(
        next_hops, topology.providers[0], len(topology.nodes) - len(topology.providers)
    )
    first = timings[paths[0].round][LEARNER_ID]["start_at"]
    last = timings[paths[-1].round][LEARNER_ID]["completed_at"]
    traffic = [counter.round_summary(path.round) for path in paths]
    published = sorted(entry["bytes"] for entry in traffic)
    delivered = sorted(delivered_bytes(entry, len(topology.nodes)) for entry in traffic)
    encoding = make_encoding(topology.crypto, len(topology.providers))
    return {
        "id": config.id,
        "topology": config.topology_name,
        "kind": config.kind,
        "fanout": config.fanout,
        "providers": config.providers,
        "aggregators": shape.aggregators,
        "nodes": len(topology.nodes),
        "size": config.size,
        "mode": config.mode,
        "hops": topology.hops(),
        "extra_inputs": shape.extra_inputs,
        "ciphertexts_per_contribution": encoding.ciphertext_count(
            topology.randomiser.payload_length(topology.job.features)
        ),
        "rounds_measured": len(paths),
        "complete_rounds": sum(1 for path in paths if path.contributors == config.providers),
        **summary,
        "broker": {
            "published_bytes_per_round": published[len(published) // 2],
            "delivered_bytes_per_round": delivered[len(delivered) // 2],
            "by_type_last_round": traffic[-1]["by_type"],
        },
        "processes": sampler.summary((first, last), len(paths)),
        "recovery_events": count_recovery_events(events, [path.round for path in paths]),
        **extra,
    }


class _NodeProcesses:
    """The node processes of one job: ``hosts`` swarm hosts, or one process per node when ``hosts`` is 0."""

    def __init__(
        self, topology: Topology, settings: RunSettings, events: Path, logs: Path, plan: Path | None
    ) -> None:
        self.topology = topology
        self.settings = settings
        self.events = events
        self.logs = logs
        self.plan = plan
        self.processes: list[asyncio.subprocess.Process] = []
        self._log_files: list[IO[bytes]] = []

    async def start(self, sampler: ProcessSampler) -> None:
        common = [
            str(self.topology.path),
            "--broker",
            self.settings.broker.url,
            "--events",
            str(self.events),
            "--log-level",
            "WARNING",
        ]
        if self.plan is not None:
            common += ["--faults", str(self.plan)]
        groups: list[tuple[str, list[str], int]]
        if self.settings.hosts == 0:
            groups = [
                (node_id, ["node", "--id", node_id, *common], 1) for node_id in self.topology.nodes
            ]
        else:
            hosts = min(self.settings.hosts, len(self.topology.nodes))
            groups = [
                (
                    f"host{index}",
                    ["swarm", *common, "--host-index", str(index), "--hosts", str(hosts)],
                    len(list(self.topology.nodes)[index::hosts]),
                )
                for index in range(hosts)
            ]
        for name, arguments, count in groups:
            log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
            self._log_files.append(log)
            process = await asyncio.create_subprocess_exec(
                *_python("-m", "gradchain", *arguments),
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=_environment(),
            )
            self.processes.append(process)
            sampler.watch(process.pid, "node" if self.settings.hosts == 0 else "host", count)

    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    async def wait(self, timeout: float) -> None:
        """Wait for the node processes to exit; raise TransportError when one failed."""
        try:
            codes = await asyncio.wait_for(
                asyncio.gather(*(process.wait() for process in self.processes)), timeout
            )
        except TimeoutError:
            logger.warning(
                "node processes of %s did not exit within %g s; killing them",
                self.topology.job.id,
                timeout,
            )
            return
        failed = [code for code in codes if code != 0]
        if failed:
            raise TransportError(
                f"{len(failed)} node processes of {self.topology.job.id} exited with errors; see {self.logs}"
            )

    async def stop(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.kill()
                with contextlib.suppress(ProcessLookupError):
                    await process.wait()
        for log in self._log_files:
            log.close()


def _python(*arguments: str) -> list[str]:
    return [sys.executable, *arguments]


def _environment() -> dict[str, str]:
    return dict(os.environ, PYTHONUNBUFFERED="1")
