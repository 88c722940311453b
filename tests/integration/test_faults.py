"""Whole jobs under injected faults, every node a separate process.

Each test runs a chain of six providers with 512-bit keys and randomisation
off, and injects one kind of fault. It checks that the job ends and that no
provider was counted twice in any round: the contributor lists contain no
duplicates, and the decrypted scale total equals the number of contributors
because every a_i is 1. It also checks that the final model is close to the
same job run without faults.
"""

from __future__ import annotations

import asyncio
import json
import tomllib
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pytest
import tomli_w

from gradchain.node.broker import BrokerAddress, MosquittoBroker
from gradchain.node.eventlog import read_events
from gradchain.protocol import RoundStart
from gradchain.protocol.routing import sample_participants
from gradchain.protocol.signing import decode_unverified
from gradchain.protocol.topics import round_topic
from gradchain.topology import load_topology, write_chain

from .helpers import JOB_TIMEOUT, JobOutcome, run_cli

pytestmark = pytest.mark.integration

JOB_ID = "faulty-chain"
PROVIDERS = 6
PROVIDER_IDS = [f"p{index}" for index in range(1, PROVIDERS + 1)]
ROUNDS = 10
MIN_CONTRIBUTORS = 3
#: Seconds the learner waits for a round, before scaling by the time_unit fixture.
ROUND_TIMEOUT = 6.0
#: Largest accuracy difference from the fault-free run. Rounds with fewer
#: contributors average the gradient over fewer providers, which moves θ a
#: little, but ten steps of gradient descent on this data stay within it.
ACCURACY_TOLERANCE = 0.02
#: Largest loss difference from the fault-free run, for the same reason.
LOSS_TOLERANCE = 0.03
#: A fault that slows every round down without losing anything: p6 keeps its
#: own contribution back far less than its deadline. Jobs that must outlast a
#: restarted process or a reconnection add it, because a fault-free round of
#: this job takes only tens of milliseconds.
PACE_ROUNDS = {"kind": "straggler", "node": "p6", "delay": 0.5}


# Jobs and their fault-free references


class Jobs:
    """Topology folders shared by the tests of this module, and their fault-free runs."""

    def __init__(self, folder: Path, time_unit: float) -> None:
        self.folder = folder
        self.time_unit = time_unit
        self._topologies: dict[tuple[int, float], Path] = {}
        self._references: dict[Path, dict[str, Any]] = {}

    def topology(self, *, rounds: int = ROUNDS, sample_fraction: float = 1.0) -> Path:
        """Return the topology of the chain job with these settings, writing it on first use."""
        key = (rounds, sample_fraction)
        if key not in self._topologies:
            folder = self.folder / f"rounds{rounds}-sample{sample_fraction}"
            path = write_chain(
                folder,
                "breast-cancer",
                PROVIDERS,
                job_id=JOB_ID,
                rounds=rounds,
                key_bits=512,
                randomise=False,
                min_contributors=MIN_CONTRIBUTORS,
                round_timeout=ROUND_TIMEOUT * self.time_unit,
                tolerance=0.0,
                seed=3,
            )
            document = tomllib.loads(path.read_text())
            document["job"]["sample_fraction"] = sample_fraction
            document["job"]["seed"] = 11
            path.write_text(tomli_w.dumps(document))
            self._topologies[key] = path
        return self._topologies[key]

    async def reference(self, topology: Path) -> dict[str, Any]:
        """Return the metrics of the job without faults, on the embedded broker, running it on first use."""
        if topology not in self._references:
            outcome = await run(topology, topology.parent / "reference", self.time_unit)
            assert outcome.returncode == 0, outcome.explain()
            self._references[topology] = outcome.metrics
        return self._references[topology]


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory, time_unit: float) -> Jobs:
    return Jobs(tmp_path_factory.mktemp("fault-jobs"), time_unit)


async def run(topology: Path, results: Path, time_unit: float, *options: str) -> JobOutcome:
    """Run ``gradchain run`` with ``options`` and return its outcome."""
    args = ["run", str(topology), "--results", str(results), *options]
    code, stdout, stderr = await run_cli(args, timeout=JOB_TIMEOUT * time_unit)
    return JobOutcome(returncode=code, stdout=stdout, stderr=stderr, results=results)


def write_plan(folder: Path, *faults: dict[str, Any], seed: int = 5) -> Path:
    path = folder / "plan.toml"
    path.write_text(tomli_w.dumps({"seed": seed, "faults": list(faults)}))
    return path


def events(results: Path, name: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
    """Return the events of every node, optionally only those called ``name`` or of fault ``kind``."""
    found = []
    for path in sorted((results / "events").glob("*.jsonl")):
        for entry in read_events(path):
            if name is not None and entry.get("event") != name:
                continue
            if kind is not None and entry.get("kind") != kind:
                continue
            found.append(entry)
    return found


def assert_sound(
    outcome: JobOutcome, reference: dict[str, Any], *, rounds: int = ROUNDS
) -> dict[str, Any]:
    """Check that the job ended, counted no provider twice, and trained a model close to ``reference``."""
    assert outcome.returncode == 0, outcome.explain()
    metrics = outcome.metrics
    assert metrics["succeeded"], outcome.explain()
    assert metrics["rounds"] == rounds
    for record in metrics["history"]:
        contributors = record["contributors"]
        assert len(set(contributors)) == len(contributors), (
            f"round {record['round']}: {contributors}"
        )
        assert set(contributors) <= set(PROVIDER_IDS)
        assert len(contributors) >= MIN_CONTRIBUTORS
        assert record["scale_total"] == pytest.approx(len(contributors), abs=1e-6), record
    assert abs(metrics["accuracy"] - reference["accuracy"]) <= ACCURACY_TOLERANCE
    assert abs(metrics["loss"] - reference["loss"]) <= LOSS_TOLERANCE
    return metrics


async def wait_for_round(broker: BrokerAddress, round: int, timeout: float) -> RoundStart:
    """Return the first RoundStart on the job's round topic whose round is at least ``round``."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                async with aiomqtt.Client(
                    broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V311
                ) as client:
                    await client.subscribe(round_topic(JOB_ID), qos=1)
                    async for message in client.messages:
                        payload = message.payload
                        if not isinstance(payload, bytes) or not payload:
                            continue
                        start = decode_unverified(payload)
                        if isinstance(start, RoundStart) and start.round >= round:
                            return start
            except aiomqtt.MqttError:
                # The job's processes may not have connected yet; the broker itself runs.
                await asyncio.sleep(0.1)


# One test per fault kind


async def test_broker_killed_mid_round(
    jobs: Jobs, mosquitto: MosquittoBroker, tmp_path: Path, time_unit: float
) -> None:
    topology = jobs.topology()
    reference = await jobs.reference(topology)
    job = asyncio.create_task(
        run(topology, tmp_path / "results", time_unit, "--broker", mosquitto.address.url)
    )

    start = await wait_for_round(mosquitto.address, 3, JOB_TIMEOUT * time_unit)
    await mosquitto.kill()
    await asyncio.sleep(1.0 * time_unit)  # the broker stays down this long
    await mosquitto.start()
    outcome = await job

    assert_sound(outcome, reference)
    assert start.round >= 3
    reconnected = {entry["node"] for entry in events(outcome.results, "reconnected")}
    assert reconnected == {*PROVIDER_IDS, "learner"}


async def test_node_killed_mid_round_and_restarted(
    jobs: Jobs, tmp_path: Path, time_unit: float
) -> None:
    topology = jobs.topology()
    reference = await jobs.reference(topology)
    plan = write_plan(
        tmp_path,
        {"kind": "crash", "node": "p3", "round": 3, "at": "before_send", "restart_after": 1.0},
        PACE_ROUNDS,
    )

    outcome = await run(
        topology, tmp_path / "results", time_unit, "--faults", str(plan), "--no-reference"
    )

    metrics = assert_sound(outcome, reference)
    assert metrics["restarts"] == {"p3": 1}
    assert metrics["node_exit_codes"]["p3"] == 0
    (crash,) = events(outcome.results, "fault", "crash")
    assert (crash["node"], crash["round"]) == ("p3", 3)
    # p3 had acknowledged p2's sum, so p1, p2 and p3 are missing from round 3.
    crashed_round = next(record for record in metrics["history"] if record["round"] == 3)
    assert not {"p1", "p2", "p3"} & set(crashed_round["contributors"])
    assert sorted(metrics["history"][-1]["contributors"]) == PROVIDER_IDS


async def test_node_crash_at_round_start_rerouted(
    jobs: Jobs, tmp_path: Path, time_unit: float
) -> None:
    topology = jobs.topology()
    reference = await jobs.reference(topology)
    plan = write_plan(tmp_path, {"kind": "crash", "node": "p3", "round": 2, "at": "round_start"})

    outcome = await run(
        topology, tmp_path / "results", time_unit, "--faults", str(plan), "--no-reference"
    )

    metrics = assert_sound(outcome, reference)
    assert metrics["restarts"] == {}
    for record in metrics["history"][2:]:
        assert sorted(record["contributors"]) == ["p1", "p2", "p4", "p5", "p6"]
    rerouted = events(outcome.results, "rerouted")
    assert rerouted
    assert all(entry["node"] == "p2" and "p3" in entry["skipped"] for entry in rerouted)


async def test_straggler_past_deadline(jobs: Jobs, tmp_path: Path, time_unit: float) -> None:
    topology = jobs.topology()
    reference = await jobs.reference(topology)
    delay = 1.5 * ROUND_TIMEOUT * time_unit  # longer than any node's deadline
    plan = write_plan(
        tmp_path,
        {"kind": "straggler", "node": "p1", "delay": delay, "first_round": 2, "last_round": 3},
    )

    outcome = await run(
        topology, tmp_path / "results", time_unit, "--faults", str(plan), "--no-reference"
    )

    metrics = assert_sound(outcome, reference)
    by_round = {record["round"]: record["contributors"] for record in metrics["history"]}
    assert sorted(by_round[1]) == PROVIDER_IDS
    assert sorted(by_round[2]) == PROVIDER_IDS[1:]
    assert sorted(by_round[3]) == PROVIDER_IDS[1:]
    partial = events(outcome.results, "forwarded_partial")
    assert {(entry["node"], entry["round"]) for entry in partial} >= {("p2", 2), ("p2", 3)}
    assert {entry["round"] for entry in events(outcome.results, "fault", "straggler")} == {2, 3}


async def test_fifty_rounds_duplicated_and_reordered(
    jobs: Jobs, mosquitto: MosquittoBroker, tmp_path: Path, time_unit: float
) -> None:
    topology = jobs.topology(rounds=50)
    reference = await jobs.reference(topology)
    # Each provider keeps its own share back a little longer than the one
    # before it, so copies from upstream arrive while it is still collecting.
    hold_own_share = [
        {"kind": "straggler", "node": node, "delay": 0.04 * number}
        for number, node in enumerate(PROVIDER_IDS, 1)
    ]
    plan = write_plan(
        tmp_path,
        {"kind": "duplicate", "node": "*", "probability": 0.3},
        {"kind": "reorder", "node": "*", "probability": 0.3, "delay": 0.1},
        *hold_own_share,
    )

    outcome = await run(
        topology,
        tmp_path / "results",
        time_unit,
        "--faults",
        str(plan),
        "--no-reference",
        "--broker",
        mosquitto.address.url,
    )

    metrics = assert_sound(outcome, reference, rounds=50)
    assert len(events(outcome.results, "fault", "duplicate")) >= 50
    assert len(events(outcome.results, "fault", "reorder")) >= 50
    assert len(events(outcome.results, "dropped_duplicate")) >= 50
    # Duplicates and reordering lose nothing, so every round has every provider.
    for record in metrics["history"]:
        assert sorted(record["contributors"]) == PROVIDER_IDS
    np.testing.assert_allclose(metrics["theta"], reference["theta"], rtol=0, atol=1e-6)


async def test_duplicate_node_id_refused(
    jobs: Jobs, mosquitto: MosquittoBroker, tmp_path: Path, time_unit: float
) -> None:
    topology = jobs.topology()
    reference = await jobs.reference(topology)
    plan = write_plan(tmp_path, PACE_ROUNDS)
    job = asyncio.create_task(
        run(
            topology,
            tmp_path / "results",
            time_unit,
            "--broker",
            mosquitto.address.url,
            "--faults",
            str(plan),
            "--no-reference",
        )
    )

    await wait_for_round(mosquitto.address, 2, JOB_TIMEOUT * time_unit)
    code, _, stderr = await run_cli(
        [
            "node",
            "--id",
            "p3",
            str(topology),
            "--broker",
            mosquitto.address.url,
            "--offline-wait",
            "0.5",
            "--events",
            str(tmp_path / "second"),
        ],
        timeout=60 * time_unit,
    )
    outcome = await job

    assert code == 2, stderr
    assert "node 'p3' of job 'faulty-chain' is already online" in stderr
    metrics = assert_sound(outcome, reference)
    for record in metrics["history"]:
        assert sorted(record["contributors"]) == PROVIDER_IDS
    # The running p3 kept its connection: the refused process never connected with its client id.
    assert "failed or was lost" not in (outcome.results / "logs" / "p3.log").read_text()


async def test_dropped_messages_resent(jobs: Jobs, tmp_path: Path, time_unit: float) -> None:
    topology = jobs.topology()
    reference = await jobs.reference(topology)
    plan = write_plan(
        tmp_path,
        *({"kind": "drop", "node": node, "probability": 0.3} for node in ("p2", "p4", "learner")),
    )

    outcome = await run(
        topology, tmp_path / "results", time_unit, "--faults", str(plan), "--no-reference"
    )

    metrics = assert_sound(outcome, reference)
    dropped = [
        entry
        for entry in events(outcome.results, "fault", "drop")
        if entry["message"] == "contribution"
    ]
    assert dropped
    # Every node's first resend comes long before the deadline of the node it
    # sends to, so each dropped contribution is followed by a resend.
    resent = {(entry["node"], entry["round"]) for entry in events(outcome.results, "retried")}
    assert {(entry["node"], entry["round"]) for entry in dropped} <= resent
    assert (
        sum(len(record["contributors"]) == PROVIDERS for record in metrics["history"])
        >= ROUNDS // 2
    )


async def test_delayed_messages(jobs: Jobs, tmp_path: Path, time_unit: float) -> None:
    topology = jobs.topology()
    reference = await jobs.reference(topology)
    plan = write_plan(tmp_path, {"kind": "delay", "node": "*", "probability": 0.3, "delay": 0.3})

    outcome = await run(
        topology, tmp_path / "results", time_unit, "--faults", str(plan), "--no-reference"
    )

    assert_sound(outcome, reference)
    assert len(events(outcome.results, "fault", "delay")) >= 5


async def test_corrupted_messages_never_counted(
    jobs: Jobs, tmp_path: Path, time_unit: float
) -> None:
    topology = jobs.topology()
    reference = await jobs.reference(topology)
    plan = write_plan(tmp_path, {"kind": "corrupt", "node": "p2", "probability": 0.15})

    outcome = await run(
        topology, tmp_path / "results", time_unit, "--faults", str(plan), "--no-reference"
    )

    metrics = assert_sound(outcome, reference)
    corrupted = events(outcome.results, "fault", "corrupt")
    assert corrupted
    # A damaged message is rejected at once, so p2 resends it, or it reads as
    # a message of another round, or its sum fails the learner's checks and
    # the round is repeated. With signed messages (the generator's default)
    # a flipped bit of the body fails the signature check.
    dropped = [
        entry
        for name in ("dropped_invalid", "dropped_stale", "dropped_signature")
        for entry in events(outcome.results, name)
    ]
    assert dropped or metrics["failed_rounds"]


async def test_disconnected_node_rejoins(jobs: Jobs, tmp_path: Path, time_unit: float) -> None:
    topology = jobs.topology()
    reference = await jobs.reference(topology)
    plan = write_plan(
        tmp_path, {"kind": "disconnect", "node": "p4", "round": 3, "duration": 1.0}, PACE_ROUNDS
    )

    outcome = await run(
        topology, tmp_path / "results", time_unit, "--faults", str(plan), "--no-reference"
    )

    metrics = assert_sound(outcome, reference)
    assert [entry["round"] for entry in events(outcome.results, "fault", "disconnect")] == [3]
    assert [entry["node"] for entry in events(outcome.results, "reconnected")] == ["p4"]
    assert sorted(metrics["history"][-1]["contributors"]) == PROVIDER_IDS


async def test_planned_broker_restart_and_report(
    jobs: Jobs, tmp_path: Path, time_unit: float
) -> None:
    topology = jobs.topology()
    plan = write_plan(
        tmp_path, {"kind": "broker_restart", "round": 3, "downtime": 1.0 * time_unit}, PACE_ROUNDS
    )
    results = tmp_path / "results"

    outcome = await run(topology, results, time_unit, "--faults", str(plan), "--mosquitto")

    reference = json.loads((results / "reference" / "metrics.json").read_text())
    metrics = assert_sound(outcome, reference)
    assert metrics["reference_accuracy"] == reference["accuracy"]
    assert not (results / "reference" / "events" / "broker.jsonl").exists()
    (restart,) = events(results, "fault", "broker_restart")
    assert restart["round"] == 3
    reconnected = {entry["node"] for entry in events(results, "reconnected")}
    assert reconnected == {*PROVIDER_IDS, "learner"}
    report = json.loads((results / "report.json").read_text())
    described = report["fault_plan"]["faults"][0]
    assert described.startswith("faults[1] broker_restart: round=3, downtime=")
    rounds = {entry["round"]: entry for entry in report["rounds"]}
    assert "broker_restart" in [fault["kind"] for fault in rounds[3]["faults"]]
    assert report["model"]["reference_accuracy"] == reference["accuracy"]
    text = (results / "report.md").read_text()
    assert "broker_restart at broker" in text
    assert "fault-free reference" in text


async def test_learner_crash_resumes_from_checkpoint(
    jobs: Jobs, tmp_path: Path, time_unit: float
) -> None:
    topology = jobs.topology()
    reference = await jobs.reference(topology)
    plan = write_plan(
        tmp_path, {"kind": "crash", "node": "learner", "round": 4, "restart_after": 0.5}
    )

    outcome = await run(
        topology, tmp_path / "results", time_unit, "--faults", str(plan), "--no-reference"
    )

    metrics = assert_sound(outcome, reference)
    assert metrics["restarts"] == {"learner": 1}
    assert [record["iteration"] for record in metrics["history"]] == list(range(1, ROUNDS + 1))
    runs = {entry["run"] for entry in events(outcome.results) if entry.get("run")}
    assert runs == {metrics["run"]}
    assert [entry["round"] for entry in events(outcome.results, "resumed")] == [4]
    checkpoint = json.loads((outcome.results / "checkpoint.json").read_text())
    assert checkpoint["finished"] is True
    assert checkpoint["run"] == metrics["run"]


async def test_random_provider_subset_per_round(
    jobs: Jobs, tmp_path: Path, time_unit: float
) -> None:
    topology = jobs.topology(sample_fraction=0.5)
    settings = load_topology(topology).job

    outcome = await run(topology, tmp_path / "results", time_unit)

    assert outcome.returncode == 0, outcome.explain()
    metrics = outcome.metrics
    assert metrics["rounds"] == ROUNDS
    samples = set()
    for record in metrics["history"]:
        expected = sample_participants(
            PROVIDER_IDS,
            fraction=0.5,
            minimum=MIN_CONTRIBUTORS,
            seed=settings.seed,
            round=record["round"],
        )
        assert record["participants"] == list(expected or PROVIDER_IDS)
        assert record["contributors"] == record["participants"]
        assert record["scale_total"] == pytest.approx(len(record["contributors"]), abs=1e-6)
        samples.add(tuple(record["participants"]))
    assert len(samples) > 1
