"""Turn the daemons' ``round_timing`` events into round latencies, critical paths and a cost model.

The critical path of a round runs backwards from the learner's end of the
round: the learner's decryption, the input whose handling finished last, the
transfer of that input from its sender, and at the sender again the input
(or the sender's own encryption) that finished last, until a provider's own
encryption starts the path. Each step falls into one stage:

- ``start``: the RoundStart reaching the path's first provider, until its
  encryption begins;
- ``encrypt``: the path's first provider computing its gradient and encrypting it;
- ``add``: decoding, checking and homomorphically adding each contribution on
  the path, and encoding each forwarded sum;
- ``transfer``: from a sender starting to publish a sum until the receiver's
  event loop takes it up (MQTT, the broker, and any wait for the receiver's
  event loop);
- ``wait``: at each node of the path, from handling its last input until it
  starts encoding the sum (acknowledging the input, and the event loop
  serving other daemons of the same process), and at the learner until
  decryption begins;
- ``decrypt``: the learner's decryption;
- ``other``: the rest of the round latency, mostly the learner's model
  update, evaluation and bookkeeping after decryption.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import nnls

from ..node.eventlog import read_events
from ..node.timing import ROUND_TIMING_EVENT
from ..topology.generate import LEARNER_ID, _plan_tree

STAGES = ("start", "encrypt", "add", "transfer", "wait", "decrypt", "other")


@dataclass(frozen=True, kw_only=True)
class RoundPath:
    """The critical path of one round."""

    round: int
    latency_s: float
    hops: int
    contributors: int
    stages: dict[str, float]

    @property
    def per_hop_s(self) -> float:
        return (self.stages["add"] + self.stages["transfer"]) / max(self.hops, 1)


def load_round_timings(events_dir: Path) -> dict[int, dict[str, dict[str, Any]]]:
    """Return round -> daemon id -> its ``round_timing`` event, from every file in ``events_dir``."""
    rounds: dict[int, dict[str, dict[str, Any]]] = {}
    for path in sorted(events_dir.glob("*.jsonl")):
        for entry in read_events(path):
            if entry.get("event") == ROUND_TIMING_EVENT and isinstance(entry.get("round"), int):
                rounds.setdefault(entry["round"], {})[entry["node"]] = entry
    return rounds


#: Events that show the fault tolerance at work: resends of unacknowledged
#: sums, sums sent around an offline node, partial sums sent at a deadline,
#: and lost broker connections.
RECOVERY_EVENTS = ("retried", "rerouted", "forwarded_partial", "connection_lost")


def count_recovery_events(events_dir: Path, rounds: Iterable[int]) -> dict[str, int]:
    """Count the recovery events of every daemon in ``rounds``; connection losses are counted over the whole job."""
    measured = set(rounds)
    counts = dict.fromkeys(RECOVERY_EVENTS, 0)
    for path in sorted(events_dir.glob("*.jsonl")):
        for entry in read_events(path):
            event = entry.get("event")
            if event == "connection_lost" or (event in counts and entry.get("round") in measured):
                counts[event] += 1
    return counts


def critical_path(
    round: int, timings: Mapping[str, Mapping[str, Any]], learner_id: str
) -> RoundPath | None:
    """Return the critical path of ``round`` from its events, or None when the learner did not complete it."""
    learner = timings.get(learner_id)
    if learner is None or "completed_at" not in learner or "decrypt_s" not in learner:
        return None
    stages = dict.fromkeys(STAGES, 0.0)
    stages["decrypt"] = learner["decrypt_s"]
    latency = learner["completed_at"] - learner["start_at"]
    hops = 0
    sender, arrived_at, handling = _last_input(learner, learner_id)
    stages["add"] += handling
    stages["wait"] += max(0.0, learner["decrypt_at"] - arrived_at - handling)
    while sender is not None:
        node = timings.get(sender)
        if node is None or "sent_at" not in node:
            break  # the sender's events are missing; the rest counts as other
        hops += 1
        stages["transfer"] += max(0.0, arrived_at - node["sent_at"])
        encode = node.get("encode_s", 0.0)
        stages["add"] += encode
        previous, previous_arrival, handling = _last_input(node, sender)
        stages["add"] += handling
        stages["wait"] += max(0.0, node["sent_at"] - encode - previous_arrival - handling)
        if previous == sender:
            stages["encrypt"] += node.get("encrypt_s", 0.0)
            if "encrypt_at" in node:
                stages["start"] += max(0.0, node["encrypt_at"] - learner["start_at"])
            break
        sender, arrived_at = previous, previous_arrival
    stages["other"] = max(0.0, latency - sum(stages[name] for name in STAGES if name != "other"))
    return RoundPath(
        round=round,
        latency_s=latency,
        hops=hops,
        contributors=int(learner.get("contributors", 0)),
        stages=stages,
    )


def _last_input(timing: Mapping[str, Any], own_id: str) -> tuple[str | None, float, float]:
    """Return (sender, arrival time, handling seconds) of the input whose handling finished last.

    The own contribution of a provider is listed under its own id, with the
    time its encryption finished as the arrival time.
    """
    inputs: Mapping[str, Sequence[float]] = timing.get("inputs") or {}
    if not inputs:
        return None, 0.0, 0.0
    sender = max(inputs, key=lambda name: inputs[name][0] + inputs[name][1])
    arrived_at, handling = inputs[sender]
    return sender, float(arrived_at), float(handling)


def percentile(values: Sequence[float], q: float) -> float:
    """Return the q-th percentile with linear interpolation (numpy's default)."""
    return float(np.percentile(np.asarray(values, dtype=float), q))


def summarise_paths(paths: Sequence[RoundPath]) -> dict[str, Any]:
    """Return medians and 95th percentiles over the measured rounds' critical paths."""
    latencies = [path.latency_s for path in paths]
    per_hop = [path.per_hop_s for path in paths]
    stages = {name: float(np.median([path.stages[name] for path in paths])) for name in STAGES}
    total = sum(stages.values()) or 1.0
    return {
        "latency_s": {
            "median": float(np.median(latencies)),
            "p95": percentile(latencies, 95),
            "rounds": [round(value, 4) for value in latencies],
        },
        "per_hop_s": {"median": float(np.median(per_hop)), "p95": percentile(per_hop, 95)},
        "critical_path": {
            "hops_median": float(np.median([path.hops for path in paths])),
            "stages_s": stages,
            "shares": {name: value / total for name, value in stages.items()},
        },
    }


@dataclass(frozen=True, kw_only=True)
class Shape:
    """Hop count and fan-in of a topology's longest path to the learner."""

    hops: int
    #: Sum over the receiving nodes of the path of (inputs - 1): 0 for a chain.
    extra_inputs: int
    aggregators: int


def shape_of(kind: str, providers: int, fanout: int | None) -> Shape:
    """Return the shape that ``write_chain``, ``write_tree`` or ``write_multi`` would write.

    ``fanout`` is the tree's fan-out, or the number of portions (and
    aggregators) of a "multi" shape.
    """
    if kind == "chain":
        return Shape(hops=providers, extra_inputs=0, aggregators=0)
    assert fanout is not None
    if kind == "multi":
        # Every aggregator gets one portion of each provider; the learner gets M sums.
        return Shape(hops=2, extra_inputs=(providers - 1) + (fanout - 1), aggregators=fanout)
    next_hops, aggregators = _plan_tree(providers, fanout)
    return shape_from_next_hops(next_hops, "p1", len(aggregators))


def shape_from_next_hops(next_hops: Mapping[str, str], start: str, aggregators: int) -> Shape:
    """Follow ``next_hops`` from ``start`` to the learner and count hops and extra inputs."""
    inputs: dict[str, int] = {}
    for successor in next_hops.values():
        inputs[successor] = inputs.get(successor, 0) + 1
    hops = 0
    extra = 0
    node = start
    while node != LEARNER_ID:
        node = next_hops[node]
        hops += 1
        # A provider in a chain adds its own contribution to one input: no extra input.
        extra += max(0, inputs.get(node, 1) - 1)
    return Shape(hops=hops, extra_inputs=extra, aggregators=aggregators)


#: R² below which the benchmark marks a cost model's predictions as rough.
RELIABLE_R_SQUARED = 0.8


def fit_cost_model(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Fit latency = encrypt + decrypt + c0 + per_hop * hops + per_extra_input * extra_inputs.

    Each row needs ``latency_s``, ``encrypt_s``, ``decrypt_s``, ``hops`` and
    ``extra_inputs`` (medians of one configuration). The unknowns are c0,
    the per-hop cost and the cost of each input beyond the first at a node.
    Encryption and decryption enter with their measured values. The fit is
    least squares with every unknown at least 0 (scipy's ``nnls``), because
    a negative cost has no meaning. With fewer distinct shapes than unknowns
    the later unknowns are left out (set to 0). ``reliable`` is False when
    that happened or when R² is below RELIABLE_R_SQUARED, because the
    predictions then rest on too few or too noisy measurements.
    """
    data = list(rows)
    if not data:
        raise ValueError("no configurations to fit")
    target = np.array([row["latency_s"] - row["encrypt_s"] - row["decrypt_s"] for row in data])
    columns = [np.ones(len(data)), np.array([row["hops"] for row in data], dtype=float)]
    names = ["c0_s", "per_hop_s"]
    if len({row["extra_inputs"] for row in data}) > 1 and len(data) >= 3:
        columns.append(np.array([row["extra_inputs"] for row in data], dtype=float))
        names.append("per_extra_input_s")
    if len({row["hops"] for row in data}) < 2:
        columns, names = columns[:1], names[:1]
    matrix = np.column_stack(columns)
    solution, _ = nnls(matrix, target)
    parameters = {"c0_s": 0.0, "per_hop_s": 0.0, "per_extra_input_s": 0.0}
    parameters.update({name: float(value) for name, value in zip(names, solution, strict=True)})
    predicted = matrix @ solution + np.array([row["encrypt_s"] + row["decrypt_s"] for row in data])
    measured = np.array([row["latency_s"] for row in data])
    residual = measured - predicted
    total = float(np.sum((measured - measured.mean()) ** 2))
    r_squared = 1.0 - float(np.sum(residual**2)) / total if total > 0 else 1.0
    return {
        "parameters": parameters,
        "fitted": names,
        "reliable": len(names) == 3 and r_squared >= RELIABLE_R_SQUARED,
        "encrypt_s": float(np.median([row["encrypt_s"] for row in data])),
        "decrypt_s": float(np.median([row["decrypt_s"] for row in data])),
        "r_squared": r_squared,
        "rms_error_s": float(math.sqrt(float(np.mean(residual**2)))),
        "predicted_s": [float(value) for value in predicted],
    }


def predict(model: Mapping[str, Any], shape: Shape) -> float:
    """Return the latency the fitted model predicts for ``shape``, with the model's median encryption and decryption."""
    parameters = model["parameters"]
    return float(
        model["encrypt_s"]
        + model["decrypt_s"]
        + parameters["c0_s"]
        + parameters["per_hop_s"] * shape.hops
        + parameters["per_extra_input_s"] * shape.extra_inputs
    )
