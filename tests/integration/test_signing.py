"""Signed jobs against a forger: a broker client that publishes contributions in p2's name.

For every round the forger publishes into p3's inbox a well-formed contribution
that claims to come from p2 and to carry p1 and p2, with ciphertexts under
the learner's real public key of a made-up gradient. With signing on, p3
rejects it and the job equals plaintext gradient descent. Without signing,
p3 adds the forgery in place of p2's real sum, which changes the result:
that half documents the threat that signatures remove.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import numpy as np
import pytest
import tomli_w
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gradchain.crypto import encrypt_vector, load_public_key, make_encoding
from gradchain.crypto.vector import add_vectors
from gradchain.data import load_data_file
from gradchain.models import LogisticRegression, StepSchedule, plaintext_distributed_gd
from gradchain.node.broker import BrokerAddress, MosquittoBroker
from gradchain.node.keys import ensure_deployment_keys
from gradchain.protocol import Contribution, RoundStart, encode
from gradchain.protocol.signing import decode_unverified, sign_payload
from gradchain.protocol.topics import inbox_topic, round_topic
from gradchain.randomisers import ScalarRandomiser
from gradchain.topology import Topology, load_topology, write_chain

from .helpers import JOB_TIMEOUT, JobOutcome, run_cli

pytestmark = pytest.mark.integration

PROVIDERS = 4
ROUNDS = 12
SMALL_KEY_BITS = 512
#: Seconds p1 delays its contribution in every round, so the forgeries arrive first.
STRAGGLER_DELAY = 0.3
#: Value of every element of the gradient in a forged contribution.
FORGED_GRADIENT = 0.5


@dataclass
class Forgeries:
    """Counts of the payloads that the forger published, by kind, and the runs it targeted."""

    unsigned: int = 0
    signed_by_stranger: int = 0
    runs: set[str] = field(default_factory=set)


def forged_ciphertexts(topology: Topology) -> tuple[int, ...]:
    """Return the encrypted sum of two made-up contributions, as p2 would forward for p1 and p2."""
    public_key = load_public_key(topology.learner.public_key)
    encoding = make_encoding(topology.crypto, len(topology.providers))
    values = (
        ScalarRandomiser()
        .randomise(np.full(topology.job.features, FORGED_GRADIENT), draw_random=False)
        .values
    )
    first, _ = encrypt_vector(public_key, encoding, values)
    second, _ = encrypt_vector(public_key, encoding, values)
    return tuple(add_vectors(public_key, first, second))


async def forge(broker: BrokerAddress, topology: Topology, forgeries: Forgeries) -> None:
    """Publish forged contributions of p2 for every round into p3's inbox, until cancelled.

    At the first RoundStart of the run the forger publishes its forgeries for
    all rounds at once. p3 keeps contributions for rounds that have not
    started yet, so each forgery is there before p2's real sum of its round.
    """
    job = topology.job.id
    public_key = load_public_key(topology.learner.public_key)
    ciphertexts = forged_ciphertexts(topology)
    stranger = Ed25519PrivateKey.generate()
    inbox = inbox_topic(job, "p3")
    async with aiomqtt.Client(
        broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V311, identifier="forger"
    ) as client:
        await client.subscribe(round_topic(job), qos=1)
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes) or not payload:
                continue
            start = decode_unverified(payload)
            if not isinstance(start, RoundStart) or start.run in forgeries.runs:
                continue
            forgeries.runs.add(start.run)
            for round in range(start.round, ROUNDS + 1):
                body = encode(
                    Contribution(
                        job=job,
                        run=start.run,
                        round=round,
                        sender="p2",
                        contributors=("p1", "p2"),
                        ciphertexts=ciphertexts,
                    ),
                    ciphertext_bytes=public_key.ciphertext_bytes,
                )
                await client.publish(inbox, body, qos=1)
                forgeries.unsigned += 1
                await client.publish(inbox, sign_payload(body, "p2", stranger), qos=1)
                forgeries.signed_by_stranger += 1


async def run_with_forger(
    topology_path: Path, results: Path, broker: MosquittoBroker, time_unit: float
) -> tuple[np.ndarray, Forgeries, str]:
    """Run the job while the forger publishes, and return θ, the forgeries and p3's log.

    p1 delays its contribution by STRAGGLER_DELAY seconds in every round, so
    p2's real sum reaches p3 well after the forgeries of the round. A
    straggler changes no value, only when p1's contribution is sent.
    """
    topology = load_topology(topology_path)
    # The forger needs the learner's public key before the job starts.
    ensure_deployment_keys(topology)
    plan = results.parent / "straggler.toml"
    plan.write_text(
        tomli_w.dumps({"faults": [{"kind": "straggler", "node": "p1", "delay": STRAGGLER_DELAY}]})
    )
    forgeries = Forgeries()
    forger = asyncio.create_task(forge(broker.address, topology, forgeries))
    try:
        args = ["run", str(topology_path), "--results", str(results)]
        args += ["--broker", broker.address.url, "--faults", str(plan), "--no-reference"]
        code, stdout, stderr = await run_cli(args, timeout=JOB_TIMEOUT * time_unit)
    finally:
        forger.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await forger
    outcome = JobOutcome(returncode=code, stdout=stdout, stderr=stderr, results=results)
    assert outcome.returncode == 0, outcome.explain()
    p3_log = (results / "logs" / "p3.log").read_text(errors="replace")
    return np.array(outcome.metrics["theta"]), forgeries, p3_log


def plaintext_theta(topology: Topology) -> np.ndarray:
    shards = []
    for node_id in topology.providers:
        data = topology.nodes[node_id].data
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
    assert expected.rounds_run == ROUNDS
    return expected.theta


def chain(folder: Path, *, signing: bool) -> Path:
    return write_chain(
        folder,
        "breast-cancer",
        PROVIDERS,
        job_id="bc-signed" if signing else "bc-unsigned",
        rounds=ROUNDS,
        key_bits=SMALL_KEY_BITS,
        seed=3,
        randomise=False,
        signing=signing,
    )


def tolerance(topology: Topology) -> float:
    # Each round rounds every provider's values to 2**-frac_bits, as in
    # test_unrandomised_run_equals_plaintext_gd.
    return ROUNDS * PROVIDERS * 2.0**-topology.crypto.frac_bits


async def test_signed_job_ignores_forged_contributions(
    tmp_path: Path, mosquitto: MosquittoBroker, time_unit: float
) -> None:
    topology_path = chain(tmp_path / "job", signing=True)
    topology = load_topology(topology_path)

    theta, forgeries, p3_log = await run_with_forger(
        topology_path, tmp_path / "results", mosquitto, time_unit
    )

    assert forgeries.unsigned == ROUNDS
    assert forgeries.signed_by_stranger == ROUNDS
    np.testing.assert_allclose(theta, plaintext_theta(topology), rtol=0, atol=tolerance(topology))
    assert "rejected an unsigned payload" in p3_log
    assert "invalid signature of 'p2'" in p3_log
    assert p3_log.count("rejected an unsigned payload") >= ROUNDS
    assert p3_log.count("invalid signature of 'p2'") >= ROUNDS


async def test_unsigned_job_adds_forged_contributions(
    tmp_path: Path, mosquitto: MosquittoBroker, time_unit: float
) -> None:
    topology_path = chain(tmp_path / "job", signing=False)
    topology = load_topology(topology_path)

    theta, forgeries, _ = await run_with_forger(
        topology_path, tmp_path / "results", mosquitto, time_unit
    )

    assert forgeries.unsigned == ROUNDS
    # p3 counts each round's forgery, which it kept since the first round, and
    # drops p2's real sum as a duplicate. That moves θ far beyond rounding.
    distance = float(np.max(np.abs(theta - plaintext_theta(topology))))
    assert distance > 1000 * tolerance(topology)
