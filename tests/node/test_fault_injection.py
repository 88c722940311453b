"""Tests for gradchain.faults.injector and gradchain.faults.transport: seeded decisions and how they are applied."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from gradchain.errors import ProtocolError, TransportError
from gradchain.faults import (
    CRASH_EXIT_CODE,
    FaultInjector,
    FaultPlan,
    FaultyTransport,
    parse_fault_plan,
)
from gradchain.node.eventlog import EventLog, read_events
from gradchain.node.transport import Received
from gradchain.protocol import Ack, Contribution, RoundStart, decode, encode
from gradchain.protocol.sealing import seal_payload
from gradchain.topology import Topology, load_topology, write_chain

RUN = "0123456789abcdef"
OTHER_RUN = "fedcba9876543210"
MODULUS = 0x6A09E667F3BCC909 | 1
ROUND_TOPIC = "gradchain/chain/round"
INBOX = "gradchain/chain/inbox/p3"


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Topology:
    path = write_chain(
        tmp_path_factory.mktemp("chain"), "breast-cancer", 4, job_id="chain", key_bits=512, seed=2
    )
    return load_topology(path)


def plan(topology: Topology, *faults: dict[str, Any], seed: int = 7) -> FaultPlan:
    return parse_fault_plan({"seed": seed, "faults": list(faults)}, "plan.toml", topology)


_open_logs: list[EventLog] = []


@pytest.fixture(autouse=True)
def close_event_logs() -> Iterator[None]:
    yield
    while _open_logs:
        _open_logs.pop().close()


def injector(
    topology: Topology,
    *faults: dict[str, Any],
    node: str = "p2",
    seed: int = 7,
    events: Path | None = None,
) -> FaultInjector:
    """Return the injector of ``node``, already in round 1 of RUN."""
    log = EventLog(events, node)
    _open_logs.append(log)
    faulty = FaultInjector(plan(topology, *faults, seed=seed), node, log)
    faulty.round_started(RUN, 1)
    return faulty


def round_start(round: int, run: str = RUN) -> bytes:
    return encode(
        RoundStart(
            job="chain", run=run, round=round, theta=(0.5,), public_key=MODULUS, timeout=30.0
        )
    )


def contribution(round: int) -> bytes:
    message = Contribution(
        job="chain",
        run=RUN,
        round=round,
        sender="p2",
        contributors=("p1", "p2"),
        ciphertexts=(17, 2**70 + 3),
    )
    return encode(message)


def ack(round: int) -> bytes:
    return encode(Ack(job="chain", run=RUN, round=round, sender="p2", of="p1"))


# Seeded decisions


def decisions(faulty: FaultInjector, count: int, message_type: str = "contribution") -> list[Any]:
    return [faulty.decide(message_type, 100) for _ in range(count)]


MIXED = (
    {"kind": "drop", "node": "p2", "probability": 0.2},
    {"kind": "corrupt", "node": "p2", "probability": 0.3},
    {"kind": "duplicate", "node": "*", "probability": 0.4},
)


def test_same_seed_and_node_decide_alike(topology: Topology) -> None:
    first = decisions(injector(topology, *MIXED), 300)
    again = decisions(injector(topology, *MIXED), 300)

    assert first == again
    assert any(decision.fired for decision in first)


@pytest.mark.parametrize(("node", "seed"), [("p3", 7), ("p2", 8)])
def test_other_seed_or_node_decides_otherwise(topology: Topology, node: str, seed: int) -> None:
    reference = decisions(injector(topology, *MIXED), 300)

    other = decisions(injector(topology, *MIXED, node=node, seed=seed), 300)

    assert other != reference


def test_fault_fires_at_its_probability(topology: Topology) -> None:
    faulty = injector(topology, {"kind": "drop", "node": "p2", "probability": 0.3})

    dropped = sum(decision.drop for decision in decisions(faulty, 4000))

    assert 1000 <= dropped <= 1400


@pytest.mark.parametrize(("probability", "expected"), [(0.0, 0), (1.0, 50)])
def test_probability_bounds(topology: Topology, probability: float, expected: int) -> None:
    faulty = injector(topology, {"kind": "duplicate", "node": "p2", "probability": probability})

    assert sum(decision.duplicate for decision in decisions(faulty, 50)) == expected


def test_other_message_type_draws_nothing(topology: Topology) -> None:
    ack_only = {"kind": "drop", "node": "p2", "probability": 0.5, "messages": ["ack"]}
    faulty = injector(topology, ack_only)
    fresh = injector(topology, ack_only)

    skipped = decisions(faulty, 20, "contribution")

    assert not any(decision.fired for decision in skipped)
    assert decisions(faulty, 20, "ack") == decisions(fresh, 20, "ack")


def test_fault_applies_only_inside_round_window(topology: Topology) -> None:
    faulty = injector(
        topology,
        {"kind": "drop", "node": "p2", "probability": 1, "first_round": 3, "last_round": 4},
    )
    fired = {}
    for round_number in range(1, 7):
        faulty.round_started(RUN, round_number)
        fired[round_number] = faulty.decide("contribution", 10).drop

    assert fired == {1: False, 2: False, 3: True, 4: True, 5: False, 6: False}


def test_drop_stops_later_faults(topology: Topology) -> None:
    faulty = injector(
        topology,
        {"kind": "drop", "node": "p2", "probability": 1},
        {"kind": "duplicate", "node": "p2", "probability": 1},
    )

    decision = faulty.decide("contribution", 10)

    assert decision.drop
    assert not decision.duplicate
    assert [fault.kind for fault in decision.fired] == ["drop"]


def test_corrupt_bit_lies_in_payload(topology: Topology) -> None:
    faulty = injector(topology, {"kind": "corrupt", "node": "p2", "probability": 1})

    bits = {faulty.decide("contribution", 3).corrupt_bit for _ in range(200)}

    assert bits <= set(range(24))
    assert len(bits) > 12


def test_delays_of_two_faults_add_up(topology: Topology) -> None:
    faulty = injector(
        topology,
        {"kind": "delay", "node": "p2", "probability": 1, "delay": 0.25},
        {"kind": "delay", "node": "*", "probability": 1, "delay": 0.5},
    )

    assert faulty.decide("ack", 10).delay == pytest.approx(0.75)


# One-shot faults


def test_disconnect_fires_once_per_run(topology: Topology) -> None:
    faulty = injector(topology, {"kind": "disconnect", "node": "p2", "round": 2, "duration": 1})

    assert faulty.round_started(RUN, 1) == []
    assert [fault.kind for fault in faulty.round_started(RUN, 2)] == ["disconnect"]
    assert faulty.round_started(RUN, 2) == []
    assert [fault.kind for fault in faulty.round_started(OTHER_RUN, 2)] == ["disconnect"]


def test_crash_points(topology: Topology) -> None:
    faulty = injector(
        topology,
        {"kind": "crash", "node": "p2", "round": 2, "at": "round_start"},
        {"kind": "crash", "node": "p2", "round": 3},
        {"kind": "crash", "node": "p2", "round": 4, "at": "after_send"},
    )

    assert [fault.index for fault in faulty.round_started(RUN, 2)] == [1]
    assert faulty.crash_due("before_send", 2) is None
    crash = faulty.crash_due("before_send", 3)
    assert crash is not None and crash.index == 2
    assert faulty.crash_due("before_send", 3) is None
    assert faulty.crash_due("before_send", 4) is None
    after = faulty.crash_due("after_send", 4)
    assert after is not None and after.index == 3


def test_recorded_crash_not_fired_again(topology: Topology, tmp_path: Path) -> None:
    crash = {"kind": "crash", "node": "p2", "round": 2, "at": "round_start", "restart_after": 1}
    first = injector(topology, crash, events=tmp_path)
    (fault,) = first.round_started(RUN, 2)
    first.record(fault)
    first.events.close()

    restarted = injector(topology, crash, events=tmp_path)

    assert restarted.round_started(RUN, 2) == []
    assert [fault.index for fault in restarted.round_started(OTHER_RUN, 2)] == [1]


def test_straggler_delays_own_contribution(topology: Topology, tmp_path: Path) -> None:
    faulty = injector(
        topology,
        {"kind": "straggler", "node": "p2", "delay": 4, "first_round": 2, "last_round": 2},
        events=tmp_path,
    )

    assert faulty.hold_own_contribution(1) == 0.0
    assert faulty.hold_own_contribution(2) == 4.0
    assert faulty.hold_own_contribution(3) == 0.0
    faulty.events.close()
    events = list(read_events(tmp_path / "p2.jsonl"))
    assert [(event["kind"], event["round"], event["delay"]) for event in events] == [
        ("straggler", 2, 4.0)
    ]


# The transport wrapper


class FakeTransport:
    """An in-memory Transport that records what is published and yields queued messages."""

    def __init__(self) -> None:
        self.client_id = "fake"
        self.published: list[tuple[str, bytes, bool]] = []
        self.published_event = asyncio.Event()
        self.incoming: asyncio.Queue[Received | None] = asyncio.Queue()
        self.aborted = False
        self.entered = 0

    async def __aenter__(self) -> FakeTransport:
        self.entered += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None

    async def subscribe(self, topic: str) -> None:
        return None

    async def unsubscribe(self, topic: str) -> None:
        return None

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.published.append((topic, payload, retain))
        self.published_event.set()

    async def messages(self) -> AsyncIterator[Received]:
        while (received := await self.incoming.get()) is not None:
            yield received
        raise TransportError("connection lost")

    def abort(self) -> None:
        self.aborted = True
        self.incoming.put_nowait(None)


class Crashed(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def crash(code: int) -> NoReturn:
    raise Crashed(code)


def wrapped(
    topology: Topology, *faults: dict[str, Any], events: Path | None = None
) -> tuple[FaultyTransport, FakeTransport]:
    inner = FakeTransport()
    return FaultyTransport(
        inner, injector(topology, *faults, events=events), exit_process=crash
    ), inner


async def next_publish(inner: FakeTransport, count: int, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while len(inner.published) < count:
            inner.published_event.clear()
            await inner.published_event.wait()


async def test_dropped_message_not_published_but_recorded(
    topology: Topology, tmp_path: Path
) -> None:
    transport, inner = wrapped(
        topology, {"kind": "drop", "node": "p2", "probability": 1}, events=tmp_path
    )

    await transport.publish(INBOX, contribution(1))

    assert inner.published == []
    transport.injector.events.close()
    (event,) = read_events(tmp_path / "p2.jsonl")
    assert (event["event"], event["kind"], event["message"], event["topic"]) == (
        "fault",
        "drop",
        "contribution",
        INBOX,
    )


async def test_duplicated_message_published_twice(topology: Topology) -> None:
    transport, inner = wrapped(topology, {"kind": "duplicate", "node": "p2", "probability": 1})

    await transport.publish(INBOX, contribution(1))

    assert inner.published == [(INBOX, contribution(1), False)] * 2


async def test_corrupted_message_differs_in_one_bit(topology: Topology) -> None:
    transport, inner = wrapped(topology, {"kind": "corrupt", "node": "p2", "probability": 1})
    original = contribution(1)

    await transport.publish(INBOX, original)

    ((_, sent, _),) = inner.published
    assert len(sent) == len(original)
    assert sum(bin(a ^ b).count("1") for a, b in zip(sent, original, strict=True)) == 1


async def test_corrupted_message_never_decodes_as_original(topology: Topology) -> None:
    transport, inner = wrapped(topology, {"kind": "corrupt", "node": "p2", "probability": 1})
    original = decode(contribution(1))

    for _ in range(200):
        await transport.publish(INBOX, contribution(1))

    for _, sent, _ in inner.published:
        with contextlib.suppress(ProtocolError):
            assert decode(sent) != original


async def test_unlisted_message_types_pass_unchanged(topology: Topology) -> None:
    transport, inner = wrapped(topology, {"kind": "drop", "node": "p2", "probability": 1})

    await transport.publish(ROUND_TOPIC, round_start(1), retain=True)

    assert inner.published == [(ROUND_TOPIC, round_start(1), True)]


async def test_delayed_message_published_later(topology: Topology, time_unit: float) -> None:
    transport, inner = wrapped(
        topology, {"kind": "delay", "node": "p2", "probability": 1, "delay": 0.05}
    )
    loop = asyncio.get_running_loop()
    started = loop.time()

    await transport.publish(INBOX, ack(1))
    assert inner.published == []
    await next_publish(inner, 1, timeout=5 * time_unit)

    assert inner.published == [(INBOX, ack(1), False)]
    assert loop.time() - started >= 0.05


async def test_reordered_message_sent_after_next_one(topology: Topology) -> None:
    transport, inner = wrapped(
        topology, {"kind": "reorder", "node": "p2", "probability": 1, "messages": ["contribution"]}
    )

    await transport.publish(INBOX, contribution(1))
    assert inner.published == []
    await transport.publish(INBOX, ack(1))

    assert [payload for _, payload, _ in inner.published] == [ack(1), contribution(1)]


async def test_reordered_message_released_after_hold(topology: Topology, time_unit: float) -> None:
    transport, inner = wrapped(
        topology, {"kind": "reorder", "node": "p2", "probability": 1, "delay": 0.05}
    )

    await transport.publish(INBOX, contribution(1))
    await next_publish(inner, 1, timeout=5 * time_unit)

    assert [payload for _, payload, _ in inner.published] == [contribution(1)]


async def test_crash_before_send_publishes_nothing(topology: Topology, tmp_path: Path) -> None:
    transport, inner = wrapped(
        topology, {"kind": "crash", "node": "p2", "round": 2}, events=tmp_path
    )
    transport.injector.round_started(RUN, 2)

    with pytest.raises(Crashed) as caught:
        await transport.publish(INBOX, contribution(2))

    assert caught.value.code == CRASH_EXIT_CODE
    assert inner.published == []
    (event,) = read_events(tmp_path / "p2.jsonl")
    assert (event["kind"], event["fault"], event["run"], event["round"]) == ("crash", 1, RUN, 2)


async def test_crash_after_send_publishes_first(topology: Topology) -> None:
    transport, inner = wrapped(
        topology, {"kind": "crash", "node": "p2", "round": 2, "at": "after_send"}
    )
    transport.injector.round_started(RUN, 2)
    await transport.publish(INBOX, contribution(1))

    with pytest.raises(Crashed):
        await transport.publish(INBOX, contribution(2))

    assert [payload for _, payload, _ in inner.published] == [contribution(1), contribution(2)]


async def test_crash_at_round_start_of_received_round(topology: Topology) -> None:
    transport, inner = wrapped(
        topology, {"kind": "crash", "node": "p2", "round": 2, "at": "round_start"}
    )
    messages = transport.messages()
    inner.incoming.put_nowait(Received(topic=ROUND_TOPIC, payload=round_start(1), retain=True))
    assert (await anext(messages)).payload == round_start(1)

    inner.incoming.put_nowait(Received(topic=ROUND_TOPIC, payload=round_start(2), retain=True))
    with pytest.raises(Crashed):
        await anext(messages)


async def test_learner_crash_after_publishing_round(topology: Topology) -> None:
    inner = FakeTransport()
    learner_plan = plan(
        topology, {"kind": "crash", "node": "learner", "round": 3, "restart_after": 1}
    )
    faulty = FaultInjector(learner_plan, "learner", EventLog(None, "learner"))
    transport = FaultyTransport(inner, faulty, exit_process=crash)
    await transport.publish(ROUND_TOPIC, round_start(2), retain=True)

    with pytest.raises(Crashed):
        await transport.publish(ROUND_TOPIC, round_start(3), retain=True)

    assert [payload for _, payload, _ in inner.published] == [round_start(2), round_start(3)]


async def test_disconnect_aborts_and_refuses_reconnecting(
    topology: Topology, time_unit: float
) -> None:
    transport, inner = wrapped(
        topology, {"kind": "disconnect", "node": "p2", "round": 2, "duration": 30}
    )
    messages = transport.messages()
    inner.incoming.put_nowait(Received(topic=ROUND_TOPIC, payload=round_start(2), retain=True))

    received = await anext(messages)

    assert received.payload == round_start(2)
    assert inner.aborted
    with pytest.raises(TransportError, match="connection lost"):
        await anext(messages)
    with pytest.raises(TransportError, match="keeps node p2 disconnected"):
        await transport.__aenter__()
    assert inner.entered == 0


async def test_transport_connects_once_disconnect_is_over(topology: Topology) -> None:
    transport, inner = wrapped(
        topology, {"kind": "disconnect", "node": "p2", "round": 2, "duration": 30}
    )
    transport.injector.disconnected_until = asyncio.get_running_loop().time() - 1

    async with transport:
        pass

    assert inner.entered == 1


def sealed_contribution(round: int) -> bytes:
    message = Contribution(
        job="chain",
        run=RUN,
        round=round,
        sender="p2",
        contributors=("p1", "p2"),
        ciphertexts=(17, 2**70 + 3),
    )
    return seal_payload(
        encode(message),
        job="chain",
        sender="p2",
        recipient="p3",
        recipient_key=X25519PrivateKey.generate().public_key(),
        message=message,
    )


async def test_sealed_contribution_matches_contribution_faults(
    topology: Topology, tmp_path: Path
) -> None:
    transport, inner = wrapped(
        topology,
        {"kind": "drop", "node": "p2", "probability": 1, "messages": ["contribution"]},
        events=tmp_path,
    )

    await transport.publish(INBOX, sealed_contribution(1))

    assert inner.published == []
    transport.injector.events.close()
    (event,) = read_events(tmp_path / "p2.jsonl")
    assert (event["kind"], event["message"]) == ("drop", "contribution")


async def test_crash_before_sealed_send_publishes_nothing(topology: Topology) -> None:
    transport, inner = wrapped(topology, {"kind": "crash", "node": "p2", "round": 2})
    transport.injector.round_started(RUN, 2)
    await transport.publish(INBOX, sealed_contribution(1))

    with pytest.raises(Crashed):
        await transport.publish(INBOX, sealed_contribution(2))

    assert len(inner.published) == 1
