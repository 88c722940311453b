"""Fault plan files: which faults to inject into which node, and when.

A plan is a TOML file with an optional ``seed`` and one ``[[faults]]`` table
per fault. It is validated against the topology of the job like a topology
file: every error names the file, the node id, the key and the fix, and
unknown keys or node ids are errors. docs/faults.md describes each kind.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import FaultPlanError
from ..topology import Topology
from ..topology._fields import Table, describe_value, join_ids

#: Faults applied to a node's outgoing messages, each with a probability.
MESSAGE_FAULTS = ("drop", "duplicate", "delay", "reorder", "corrupt")
FAULT_KINDS = ("crash", *MESSAGE_FAULTS, "disconnect", "straggler", "broker_restart", "link")
MESSAGE_TYPES = ("round_start", "contribution", "ack", "job_done", "status")
#: Message types a message fault applies to when the plan names none.
DEFAULT_MESSAGE_TYPES = ("contribution", "ack")
#: Crash points in round k: on RoundStart k, or just before or after the node
#: publishes its contribution of round k.
CRASH_POINTS = ("round_start", "before_send", "after_send")
#: ``node`` value that applies a fault to every node and the learner.
EVERY_NODE = "*"

#: Seconds a reorder fault keeps a message back when no later message overtakes it.
DEFAULT_REORDER_HOLD = 0.5
#: Seconds the broker stays down during a broker_restart fault.
DEFAULT_BROKER_DOWNTIME = 1.0

_TOP_KEYS = ("seed", "faults")
_COMMON_KEYS = ("kind", "node")
_KEYS = {
    "crash": ("round", "at", "restart_after"),
    "disconnect": ("round", "duration"),
    "straggler": ("delay", "first_round", "last_round"),
    "broker_restart": ("round", "downtime"),
    "link": ("latency", "bandwidth_mbps", "messages"),
    **{
        kind: ("probability", "messages", "first_round", "last_round", "delay")
        for kind in MESSAGE_FAULTS
    },
}


@dataclass(frozen=True, kw_only=True)
class MessageFault:
    """Drop, duplicate, delay, reorder or corrupt a node's outgoing messages with ``probability``.

    ``delay`` is how long a delayed message is held, or the longest a
    reordered message waits for a later message to overtake it.
    """

    index: int
    kind: str
    node: str
    probability: float
    messages: tuple[str, ...]
    first_round: int
    last_round: int | None
    delay: float


@dataclass(frozen=True, kw_only=True)
class CrashFault:
    """End the node's process with os._exit in round ``round``; the launcher may restart it."""

    index: int
    node: str
    round: int
    at: str
    restart_after: float | None

    kind = "crash"


@dataclass(frozen=True, kw_only=True)
class DisconnectFault:
    """Drop the node's broker connection at RoundStart ``round`` and keep it down ``duration`` seconds."""

    index: int
    node: str
    round: int
    duration: float

    kind = "disconnect"


@dataclass(frozen=True, kw_only=True)
class StragglerFault:
    """Hold the node's own contribution back for ``delay`` seconds in the rounds given."""

    index: int
    node: str
    delay: float
    first_round: int
    last_round: int | None

    kind = "straggler"


@dataclass(frozen=True, kw_only=True)
class BrokerRestartFault:
    """Stop the broker at RoundStart ``round`` and start it again after ``downtime`` seconds."""

    index: int
    round: int
    downtime: float

    kind = "broker_restart"
    node = None


@dataclass(frozen=True, kw_only=True)
class LinkFault:
    """Emulate a slow link from the node to the broker: every outgoing message of the types in
    ``messages`` waits ``latency`` seconds plus its size divided by ``bandwidth_mbps``.

    Messages leave in the order they were published, one after another, so a
    large message holds back the ones after it as on a real link. None for
    ``bandwidth_mbps`` means no bandwidth cap.
    """

    index: int
    node: str
    latency: float
    bandwidth_mbps: float | None
    messages: tuple[str, ...]

    kind = "link"


Fault = (
    MessageFault | CrashFault | DisconnectFault | StragglerFault | BrokerRestartFault | LinkFault
)


@dataclass(frozen=True, kw_only=True)
class FaultPlan:
    """A validated fault plan."""

    path: Path
    seed: int
    faults: tuple[Fault, ...]

    def for_node(self, node_id: str) -> tuple[Fault, ...]:
        """Return the faults injected into ``node_id``, in file order."""
        return tuple(fault for fault in self.faults if fault.node in (node_id, EVERY_NODE))

    @property
    def broker_restarts(self) -> tuple[BrokerRestartFault, ...]:
        return tuple(fault for fault in self.faults if isinstance(fault, BrokerRestartFault))

    def crashes_of(self, node_id: str) -> tuple[CrashFault, ...]:
        """Return the crash faults of ``node_id`` in the order of their rounds."""
        crashes = [fault for fault in self.for_node(node_id) if isinstance(fault, CrashFault)]
        return tuple(sorted(crashes, key=lambda fault: (fault.round, fault.index)))


def load_fault_plan(path: str | os.PathLike[str], topology: Topology) -> FaultPlan:
    """Read a fault plan file and validate it against ``topology``.

    Raises FaultPlanError naming the file, the node id, the key and the fix.
    """
    path = Path(path)
    try:
        with path.open("rb") as stream:
            document = tomllib.load(stream)
    except FileNotFoundError:
        raise FaultPlanError(f"file not found: {path.resolve()}", path=str(path)) from None
    except OSError as exc:
        raise FaultPlanError(f"cannot read the file: {exc}", path=str(path)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise FaultPlanError(f"invalid TOML: {exc}", path=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise FaultPlanError(f"invalid TOML, the file is not UTF-8: {exc}", path=str(path)) from exc
    return parse_fault_plan(document, path, topology)


def parse_fault_plan(
    document: Mapping[str, object], path: str | os.PathLike[str], topology: Topology
) -> FaultPlan:
    """Validate a parsed fault plan document against ``topology`` and return the plan."""
    path = Path(path)
    top = Table(document, str(path), error_type=FaultPlanError)
    top.reject_unknown_keys(_TOP_KEYS)
    seed = top.get_int("seed", 0)
    entries = top.values.get("faults", [])
    if not isinstance(entries, list):
        raise top.error(
            "faults", f"expected an array of tables ([[faults]]), got {describe_value(entries)}"
        )
    faults = []
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise top.error(
                f"faults[{number}]", f"is {describe_value(entry)}, expected a [[faults]] table"
            )
        table = Table(entry, str(path), prefix=f"faults[{number}].", error_type=FaultPlanError)
        faults.append(_parse_fault(table, number, topology))
    return FaultPlan(path=path.resolve(), seed=seed, faults=tuple(faults))


def _parse_fault(table: Table, index: int, topology: Topology) -> Fault:
    kind = table.get_str("kind")
    table.require(
        "kind",
        kind in FAULT_KINDS,
        f"unknown fault kind {kind!r}",
        f"use one of: {', '.join(FAULT_KINDS)}",
    )
    if kind == "broker_restart":
        if "node" in table.values:
            raise table.error("node", "a broker restart affects every node", "remove the node key")
        table.reject_unknown_keys(("kind", *_KEYS[kind]))
        return BrokerRestartFault(
            index=index,
            round=_round(table, "round"),
            downtime=_seconds(table, "downtime", DEFAULT_BROKER_DOWNTIME),
        )

    node = _node(table, topology)
    table = Table(
        table.values, table.file, prefix=table.prefix, node_id=node, error_type=FaultPlanError
    )
    table.reject_unknown_keys((*_COMMON_KEYS, *_KEYS[kind]))
    is_learner = node == topology.learner.id

    if kind == "crash":
        sends_contributions = node != EVERY_NODE and not is_learner
        at = table.get_str("at", "before_send" if sends_contributions else "round_start")
        table.require(
            "at",
            at in CRASH_POINTS,
            f"unknown crash point {at!r}",
            f"use one of: {', '.join(CRASH_POINTS)}",
        )
        if at != "round_start":
            table.require(
                "at",
                sends_contributions,
                f"{at!r} needs a node that sends contributions, and the learner sends none",
                'use at = "round_start", or name one provider or aggregator',
            )
        restart_after = None
        if "restart_after" in table.values:
            restart_after = _seconds(table, "restart_after", 0.0)
        elif node in (topology.learner.id, EVERY_NODE):
            raise table.error(
                "restart_after",
                "missing: without the learner the job can never finish",
                "add restart_after = SECONDS; the restarted learner resumes from its checkpoint",
            )
        return CrashFault(
            index=index, node=node, round=_round(table, "round"), at=at, restart_after=restart_after
        )

    if kind == "link":
        return _parse_link(table, index, node)

    if kind == "disconnect":
        duration = _seconds(table, "duration", None)
        table.require("duration", duration > 0, f"must be greater than 0, got {duration}")
        return DisconnectFault(
            index=index, node=node, round=_round(table, "round"), duration=duration
        )

    first_round, last_round = _round_window(table)
    if kind == "straggler":
        table.require(
            "node",
            node != EVERY_NODE and not is_learner and topology.nodes[node].is_provider,
            "only a provider computes its own contribution, so only a provider can be a straggler",
            f"use one of: {join_ids(topology.providers)}",
        )
        return StragglerFault(
            index=index,
            node=node,
            delay=_seconds(table, "delay", None),
            first_round=first_round,
            last_round=last_round,
        )

    probability = table.get_float("probability")
    table.require(
        "probability", 0.0 <= probability <= 1.0, f"must lie in [0, 1], got {probability}"
    )
    messages = table.get_str_list("messages", DEFAULT_MESSAGE_TYPES)
    table.require(
        "messages",
        bool(messages),
        "is empty",
        f"name message types from: {', '.join(MESSAGE_TYPES)}",
    )
    for message_type in messages:
        table.require(
            "messages",
            message_type in MESSAGE_TYPES,
            f"unknown message type {message_type!r}",
            f"use some of: {', '.join(MESSAGE_TYPES)}",
        )
    default_delay = DEFAULT_REORDER_HOLD if kind == "reorder" else 0.0
    if kind == "delay" and "delay" not in table.values:
        raise table.error("delay", "missing required key, expected seconds", "add delay = SECONDS")
    if kind not in ("delay", "reorder") and "delay" in table.values:
        raise table.error("delay", f"does not apply to {kind} faults", "remove the key")
    return MessageFault(
        index=index,
        kind=kind,
        node=node,
        probability=probability,
        messages=tuple(dict.fromkeys(messages)),
        first_round=first_round,
        last_round=last_round,
        delay=_seconds(table, "delay", default_delay),
    )


def _parse_link(table: Table, index: int, node: str) -> LinkFault:
    table.require(
        "latency",
        "latency" in table.values or "bandwidth_mbps" in table.values,
        "a link fault needs latency, bandwidth_mbps or both",
        "add latency = SECONDS and/or bandwidth_mbps = MEGABITS_PER_SECOND",
    )
    bandwidth = None
    if "bandwidth_mbps" in table.values:
        bandwidth = table.get_float("bandwidth_mbps")
        table.require("bandwidth_mbps", bandwidth > 0, f"must be greater than 0, got {bandwidth}")
    messages = table.get_str_list("messages", MESSAGE_TYPES)
    table.require(
        "messages",
        bool(messages),
        "is empty",
        f"name message types from: {', '.join(MESSAGE_TYPES)}",
    )
    for message_type in messages:
        table.require(
            "messages",
            message_type in MESSAGE_TYPES,
            f"unknown message type {message_type!r}",
            f"use some of: {', '.join(MESSAGE_TYPES)}",
        )
    return LinkFault(
        index=index,
        node=node,
        latency=_seconds(table, "latency", 0.0),
        bandwidth_mbps=bandwidth,
        messages=tuple(dict.fromkeys(messages)),
    )


def _node(table: Table, topology: Topology) -> str:
    node = table.get_str("node")
    known = [*topology.nodes, topology.learner.id]
    if node != EVERY_NODE and node not in known:
        raise FaultPlanError(
            f"unknown node id {node!r}",
            path=table.file,
            node_id=node,
            key=f"{table.prefix}node",
            fix=f"use one of: {join_ids(known)}, or {EVERY_NODE!r} for every node",
        )
    return node


def _round(table: Table, key: str) -> int:
    value = table.get_int(key)
    table.require(key, value >= 1, f"must be at least 1, got {value}", "rounds are numbered from 1")
    return value


def _round_window(table: Table) -> tuple[int, int | None]:
    first = table.get_int("first_round", 1)
    table.require(
        "first_round", first >= 1, f"must be at least 1, got {first}", "rounds are numbered from 1"
    )
    last = None
    if "last_round" in table.values:
        last = table.get_int("last_round")
        table.require(
            "last_round",
            last >= first,
            f"is {last}, before first_round {first}",
            "set last_round >= first_round",
        )
    return first, last


def _seconds(table: Table, key: str, default: float | None) -> float:
    value = table.get_float(key, default)
    table.require(key, value >= 0.0, f"must be 0 or more seconds, got {value}")
    return value
