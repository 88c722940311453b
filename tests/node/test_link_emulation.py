"""Tests for link faults: an emulated latency and bandwidth on a node's outgoing messages."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gradchain.errors import FaultPlanError
from gradchain.faults import FaultyTransport, LinkFault
from gradchain.protocol import Ack, encode
from gradchain.topology import Topology, load_topology, write_chain

from .test_fault_injection import RUN, FakeTransport, crash, injector, plan

INBOX = "gradchain/chain/inbox/p3"


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Topology:
    path = write_chain(
        tmp_path_factory.mktemp("chain"), "breast-cancer", 4, job_id="chain", key_bits=512, seed=2
    )
    return load_topology(path)


def ack(round: int) -> bytes:
    return encode(Ack(job="chain", run=RUN, round=round, sender="p2", of="p1"))


def link(**settings: Any) -> dict[str, Any]:
    return {"kind": "link", "node": "p2", **settings}


def test_link_fault_parsed(topology: Topology) -> None:
    parsed = plan(topology, link(latency=0.05, bandwidth_mbps=8.0, messages=["contribution"]))
    fault = parsed.faults[0]
    assert isinstance(fault, LinkFault)
    assert fault.latency == 0.05
    assert fault.bandwidth_mbps == 8.0
    assert fault.messages == ("contribution",)


def test_link_fault_defaults_to_every_message_type(topology: Topology) -> None:
    fault = plan(topology, link(latency=0.01)).faults[0]
    assert isinstance(fault, LinkFault)
    assert fault.bandwidth_mbps is None
    assert "round_start" in fault.messages
    assert "status" in fault.messages


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({}, "latency"),
        ({"bandwidth_mbps": 0.0}, "bandwidth_mbps"),
        ({"latency": -1.0}, "latency"),
        ({"latency": 0.1, "probability": 0.5}, "probability"),
    ],
)
def test_link_fault_rejects_invalid_settings(
    topology: Topology, settings: dict[str, Any], key: str
) -> None:
    with pytest.raises(FaultPlanError, match=key):
        plan(topology, link(**settings))


def test_link_delay_adds_transmission_and_latency(topology: Topology) -> None:
    faulty = injector(topology, link(latency=0.02, bandwidth_mbps=1.0))
    transmission, latency = faulty.link_delay("ack", 125_000)  # 1 Mbit at 1 Mbit/s
    assert transmission == pytest.approx(1.0)
    assert latency == pytest.approx(0.02)
    assert faulty.link_delay("unknown", 10) is None


async def test_link_holds_messages_and_keeps_their_order(topology: Topology) -> None:
    inner = FakeTransport()
    transport = FaultyTransport(
        inner, injector(topology, link(latency=0.05, bandwidth_mbps=0.04)), exit_process=crash
    )
    payloads = [ack(round) for round in (1, 2, 3)]
    # At 0.04 Mbit/s an ack of about 100 bytes takes about 20 ms to transmit.
    transmissions = sum(len(payload) * 8 / 0.04e6 for payload in payloads)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with transport:
        for payload in payloads:
            await transport.publish(INBOX, payload)
        assert inner.published == []  # publish returns before the link delivers
        async with asyncio.timeout(2.0):
            while len(inner.published) < 3:
                await asyncio.sleep(0.005)
        elapsed = loop.time() - started
    assert [payload for _, payload, _ in inner.published] == payloads
    # The last message waits for all three transmissions and the latency.
    assert elapsed >= transmissions + 0.05 - 0.005
