"""Sealed inboxes against a wire recorder that has the learner's Paillier private key.

The recorder subscribes to every topic of the job, like any client of a
broker without access control. With sealing on, it finds no Contribution it
can decode in any inbox but the learner's own, in the chain and in the split
shape, and the job still equals plaintext distributed gradient descent. With
``[signing] seal = false`` the same recorder reads p1's contribution on
p2's inbox and decrypts p1's exact gradient: that half documents the threat
that sealing removes.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest
import tomli_w

from gradchain.crypto import decrypt_vector, load_private_key, make_encoding
from gradchain.data import load_data_file
from gradchain.errors import ProtocolError
from gradchain.models import LogisticRegression, StepSchedule, plaintext_distributed_gd
from gradchain.models.interface import provider_gradient
from gradchain.node.broker import MosquittoBroker
from gradchain.protocol import Contribution, RoundStart
from gradchain.protocol.sealing import SealedEnvelope
from gradchain.protocol.signing import decode_unverified, peek
from gradchain.protocol.topics import inbox_topic
from gradchain.randomisers import ScalarRandomiser
from gradchain.topology import Topology, load_topology, write_chain
from gradchain.topology.generate import write_multi

from .helpers import JOB_TIMEOUT, WireRecording, open_recorded, record_wire, run_job

pytestmark = pytest.mark.integration

PROVIDERS = 4
ROUNDS = 8
SMALL_KEY_BITS = 512


def chain(folder: Path, *, seal: bool) -> Path:
    path = write_chain(
        folder,
        "breast-cancer",
        PROVIDERS,
        job_id="bc-sealed" if seal else "bc-unsealed",
        rounds=ROUNDS,
        key_bits=SMALL_KEY_BITS,
        seed=3,
        randomise=False,
    )
    if not seal:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
        document["signing"]["seal"] = False
        path.write_text(tomli_w.dumps(document), encoding="utf-8")
    return path


def expected_theta(topology: Topology) -> np.ndarray:
    shards = []
    for provider in topology.providers:
        data = topology.nodes[provider].data
        assert data is not None
        shards.append(load_data_file(data))
    job = topology.job
    expected = plaintext_distributed_gd(
        shards,
        LogisticRegression(),
        StepSchedule(kind=job.schedule, learning_rate=job.learning_rate),  # type: ignore[arg-type]
        job.l2,
        job.rounds,
        job.tolerance,
    )
    return expected.theta


def tolerance(topology: Topology) -> float:
    # Each round rounds every provider's values to 2**-frac_bits.
    return topology.job.rounds * len(topology.providers) * 2.0**-topology.crypto.frac_bits


async def run_recorded(
    topology_path: Path, results: Path, broker: MosquittoBroker, time_unit: float
) -> WireRecording:
    topology = load_topology(topology_path)
    async with record_wire(broker.address, topology.job.id) as wire:
        outcome = await run_job(
            topology_path, results, broker=broker.address, timeout=JOB_TIMEOUT * time_unit
        )
    assert outcome.returncode == 0, outcome.explain()
    np.testing.assert_allclose(
        outcome.metrics["theta"], expected_theta(topology), rtol=0, atol=tolerance(topology)
    )
    return wire


def assert_no_readable_contribution_outside_learner_inbox(
    topology: Topology, wire: WireRecording
) -> None:
    """Check what a recorder with the learner's keys can read in each inbox."""
    learner_inbox = inbox_topic(topology.job.id, topology.learner.id)
    sealed_contributions: dict[str, int] = {}
    for topic, payload in wire.messages:
        if "/inbox/" not in topic or not payload:
            continue
        with pytest.raises(ProtocolError):
            decode_unverified(payload)
        envelope = peek(payload)
        assert isinstance(envelope, SealedEnvelope), topic
        assert topic == inbox_topic(topology.job.id, envelope.recipient)
        if envelope.kind == "contribution":
            sealed_contributions[topic] = sealed_contributions.get(topic, 0) + 1

    inboxes = set(sealed_contributions) - {learner_inbox}
    assert inboxes, "no sealed contribution in any node's inbox"
    for topic in inboxes:
        assert sealed_contributions[topic] >= ROUNDS, topic
    assert sealed_contributions.get(learner_inbox, 0) >= ROUNDS


async def test_sealed_chain_hides_contributions_from_learner(
    tmp_path: Path, mosquitto: MosquittoBroker, time_unit: float
) -> None:
    topology_path = chain(tmp_path / "job", seal=True)
    topology = load_topology(topology_path)

    wire = await run_recorded(topology_path, tmp_path / "results", mosquitto, time_unit)

    assert_no_readable_contribution_outside_learner_inbox(topology, wire)
    # The learner's own key opens the totals in its inbox, which carry every provider.
    learner_inbox = inbox_topic(topology.job.id, topology.learner.id)
    totals = [
        open_recorded(topology, payload)
        for topic, payload in wire.messages
        if topic == learner_inbox and payload
    ]
    contributor_counts = {
        len(message.contributors) for message in totals if isinstance(message, Contribution)
    }
    assert contributor_counts == {PROVIDERS}


async def test_sealed_split_shape_hides_shares_from_learner(
    tmp_path: Path, mosquitto: MosquittoBroker, time_unit: float
) -> None:
    topology_path = write_multi(
        tmp_path / "job",
        "breast-cancer",
        4,
        2,
        aggregators=2,
        job_id="bc-sealed-multi",
        rounds=ROUNDS,
        key_bits=SMALL_KEY_BITS,
        randomise=False,
        seed=5,
    )
    topology = load_topology(topology_path)

    wire = await run_recorded(topology_path, tmp_path / "results", mosquitto, time_unit)

    assert_no_readable_contribution_outside_learner_inbox(topology, wire)


async def test_unsealed_chain_exposes_first_provider(
    tmp_path: Path, mosquitto: MosquittoBroker, time_unit: float
) -> None:
    topology_path = chain(tmp_path / "job", seal=False)
    topology = load_topology(topology_path)

    wire = await run_recorded(topology_path, tmp_path / "results", mosquitto, time_unit)

    private_key = load_private_key(topology.learner.private_key)
    encoding = make_encoding(topology.crypto, len(topology.providers))
    features, labels = load_data_file(topology.nodes["p1"].data)  # type: ignore[arg-type]
    thetas: dict[int, np.ndarray] = {}
    exposed = 0
    for topic, payload in wire.messages:
        if not payload:
            continue
        message = decode_unverified(payload)
        if isinstance(message, RoundStart):
            thetas[message.round] = np.array(message.theta)
        if topic != inbox_topic(topology.job.id, "p2") or not isinstance(message, Contribution):
            continue
        assert message.contributors == ("p1",)
        values = decrypt_vector(
            private_key,
            encoding,
            message.ciphertexts,
            1,
            length=topology.randomiser.payload_length(topology.job.features),
        )
        gradient = provider_gradient(
            LogisticRegression(), thetas[message.round], features, labels, None
        )
        expected = ScalarRandomiser().randomise(gradient, draw_random=False).values
        np.testing.assert_allclose(values, expected, rtol=0, atol=2.0**-topology.crypto.frac_bits)
        exposed += 1
    assert exposed >= ROUNDS
