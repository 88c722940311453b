"""Shared pieces of the integration tests: running jobs and recording the wire."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from gradchain.crypto.signkeys import load_sealing_key, seal_private_key_path
from gradchain.node.broker import BrokerAddress
from gradchain.protocol import Message, decode
from gradchain.protocol.sealing import parse_sealed, unseal_payload
from gradchain.protocol.signing import unwrap
from gradchain.protocol.topics import job_wildcard
from gradchain.topology import Topology

#: Seconds a whole small job may take before the test gives up, before scaling.
JOB_TIMEOUT = 240.0


@dataclass
class JobOutcome:
    returncode: int
    stdout: str
    stderr: str
    results: Path

    @property
    def metrics(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.results / "metrics.json").read_text())
        return data

    def explain(self) -> str:
        logs = []
        for log in sorted((self.results / "logs").glob("*.log")):
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            logs.append(f"--- {log.name}\n{tail}")
        return (
            f"exit {self.returncode}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}\n"
            + "\n".join(logs)
        )


async def run_cli(
    args: Sequence[str], *, timeout: float, cwd: Path | None = None
) -> tuple[int, str, str]:
    """Run ``python -m gradchain ARGS`` and return its exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gradchain",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        stdout, stderr = await process.communicate()
        return (
            -1,
            stdout.decode(errors="replace"),
            stderr.decode(errors="replace") + "\n(timed out)",
        )
    assert process.returncode is not None
    return process.returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace")


async def run_job(
    topology: Path, results: Path, *, broker: BrokerAddress | None, timeout: float
) -> JobOutcome:
    """Run ``gradchain run`` on ``topology``, on ``broker`` or on the embedded one."""
    args = ["run", str(topology), "--results", str(results)]
    if broker is not None:
        args += ["--broker", broker.url]
    code, stdout, stderr = await run_cli(args, timeout=timeout)
    return JobOutcome(returncode=code, stdout=stdout, stderr=stderr, results=results)


@dataclass
class WireRecording:
    """Every (topic, payload) the broker delivered on a job's topics."""

    messages: list[tuple[str, bytes]] = field(default_factory=list)


@asynccontextmanager
async def record_wire(broker: BrokerAddress, job: str) -> AsyncIterator[WireRecording]:
    """Subscribe to every topic of ``job`` and record what passes until the block ends."""
    recording = WireRecording()
    async with aiomqtt.Client(
        broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V311, identifier="wire-audit"
    ) as client:
        await client.subscribe(job_wildcard(job), qos=1)

        async def collect() -> None:
            async for message in client.messages:
                payload = message.payload
                assert isinstance(payload, bytes | bytearray)
                recording.messages.append((message.topic.value, bytes(payload)))

        task = asyncio.create_task(collect())
        try:
            yield recording
        finally:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass


def open_recorded(topology: Topology, payload: bytes) -> Message:
    """Parse a recorded payload without verifying it, unsealing it with its recipient's key file.

    Only a test that holds every participant's sealing private key can read
    sealed inbox payloads this way. Raises ProtocolError like
    :func:`gradchain.protocol.signing.decode_unverified`.
    """
    envelope = unwrap(payload)
    body = payload if envelope is None else envelope[1]
    sealed = parse_sealed(body)
    if sealed is None:
        return decode(body)
    assert topology.signing is not None
    key = load_sealing_key(seal_private_key_path(topology.signing.keys, sealed.recipient))
    return decode(
        unseal_payload(sealed, job=topology.job.id, own_id=sealed.recipient, private_key=key)
    )
