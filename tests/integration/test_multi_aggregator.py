"""Jobs whose providers split their contributions into portions over several aggregators.

Each provider sends one random share of its encrypted contribution to each of
two aggregators, and only the learner's total of all shares decodes to the
sum of the contributions. The jobs run every node as a separate process on a
real broker with 512-bit keys and randomisation off, so the result can be
compared with plaintext distributed gradient descent.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import tomli_w

from gradchain.data import load_data_file
from gradchain.models import LogisticRegression, StepSchedule, plaintext_distributed_gd
from gradchain.node.broker import MosquittoBroker
from gradchain.protocol import Contribution
from gradchain.topology import load_topology
from gradchain.topology.generate import write_multi

from .helpers import JOB_TIMEOUT, open_recorded, record_wire, run_cli, run_job
from .test_jobs import _audit_wire

pytestmark = pytest.mark.integration

ROUNDS = 12


def _multi(folder: Path, providers: int, aggregators: int, **settings: object) -> Path:
    return write_multi(
        folder,
        "breast-cancer",
        providers,
        2,
        aggregators=aggregators,
        job_id="bc-multi",
        rounds=ROUNDS,
        key_bits=512,
        randomise=False,
        seed=5,
        **settings,
    )


async def test_split_contributions_equal_plaintext_gd(
    tmp_path: Path, mosquitto: MosquittoBroker, time_unit: float
) -> None:
    topology_path = _multi(tmp_path / "job", providers=6, aggregators=3)
    topology = load_topology(topology_path)

    async with record_wire(mosquitto.address, topology.job.id) as wire:
        outcome = await run_job(
            topology_path,
            tmp_path / "results",
            broker=mosquitto.address,
            timeout=JOB_TIMEOUT * time_unit,
        )
    assert outcome.returncode == 0, outcome.explain()

    shards = [load_data_file(topology.nodes[p].data) for p in topology.providers]  # type: ignore[arg-type]
    job = topology.job
    expected = plaintext_distributed_gd(
        shards,
        LogisticRegression(),
        StepSchedule(kind=job.schedule, learning_rate=job.learning_rate),  # type: ignore[arg-type]
        job.l2,
        job.rounds,
        job.tolerance,
    )
    tolerance = ROUNDS * len(topology.providers) * 2.0**-topology.crypto.frac_bits
    np.testing.assert_allclose(outcome.metrics["theta"], expected.theta, rtol=0, atol=tolerance)
    for contributors in outcome.metrics["contributors"]:
        assert sorted(contributors) == sorted(topology.providers)

    # Every provider sent each round one portion to each of its two aggregators,
    # and no inbox saw two portions of one provider in a round.
    inboxes: dict[tuple[int, str], list[str]] = defaultdict(list)
    for topic, payload in wire.messages:
        if "/inbox/" not in topic:
            continue
        message = open_recorded(topology, payload)
        if isinstance(message, Contribution) and message.sender in topology.providers:
            inboxes[message.round, topic.rsplit("/", 1)[-1]].append(message.sender)
    for provider in topology.providers:
        expected_inboxes = set(topology.nodes[provider].next)
        for round_number in range(1, ROUNDS + 1):
            reached = {
                inbox
                for (number, inbox), senders in inboxes.items()
                if number == round_number and provider in senders
            }
            assert reached == expected_inboxes, (provider, round_number)
    for (round_number, inbox), senders in inboxes.items():
        assert len(senders) == len(set(senders)), (round_number, inbox, senders)
    _audit_wire(wire, topology_path)


async def test_crashed_aggregator_leaves_out_providers(
    tmp_path: Path, mosquitto: MosquittoBroker, time_unit: float
) -> None:
    # Provider i sends its portions to a(i mod 4) and a(i+1 mod 4), so a4 carries
    # portions of p3, p4, p7 and p8.
    topology_path = _multi(tmp_path / "job", providers=8, aggregators=4, round_timeout=10.0)
    topology = load_topology(topology_path)
    needs_a4 = sorted(p for p in topology.providers if "a4" in topology.nodes[p].next)
    assert needs_a4 == ["p3", "p4", "p7", "p8"]
    plan = tmp_path / "plan.toml"
    plan.write_text(
        tomli_w.dumps(
            {"faults": [{"kind": "crash", "node": "a4", "round": 3, "at": "before_send"}]}
        ),
        encoding="utf-8",
    )

    code, stdout, stderr = await run_cli(
        [
            "run",
            str(topology_path),
            "--results",
            str(tmp_path / "results"),
            "--broker",
            mosquitto.address.url,
            "--faults",
            str(plan),
            "--no-reference",
        ],
        timeout=JOB_TIMEOUT * time_unit,
    )
    assert code == 0, f"stdout:\n{stdout}\nstderr:\n{stderr}"

    metrics = json.loads((tmp_path / "results" / "metrics.json").read_text())
    history = metrics["history"]
    assert len(history) == ROUNDS
    # Rounds before the crash count every provider. Once a4 is gone, the learner
    # leaves out the providers that need it, and the other rounds complete.
    assert sorted(history[0]["contributors"]) == sorted(topology.providers)
    after = [record for record in history if record["round"] > 3]
    assert after
    others = sorted(set(topology.providers) - set(needs_a4))
    for record in after:
        assert sorted(record["contributors"]) == others
    failures = metrics.get("failed_rounds", [])
    assert all("portions" in failure["reason"] for failure in failures), failures
