"""Whole jobs through a real MQTT broker, every node a separate process.

The topologies use 512-bit keys so a job takes seconds; the 2048-bit path runs
in ``test_phones_job_with_2048_bit_key``.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from gradchain.data import load_data_file
from gradchain.errors import ProtocolError
from gradchain.models import LogisticRegression, StepSchedule, plaintext_distributed_gd
from gradchain.node.broker import MosquittoBroker
from gradchain.protocol import Contribution, RoundStart
from gradchain.topology import load_topology, write_chain, write_tree

from .helpers import JOB_TIMEOUT, WireRecording, open_recorded, record_wire, run_job

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

PROVIDERS = 12
ROUNDS = 30
SMALL_KEY_BITS = 512
#: Accuracy the encrypted run must reach relative to plaintext gradient descent.
ACCURACY_GAP = 0.01


def _chain(folder: Path, **settings: object) -> Path:
    options = {"rounds": ROUNDS, "key_bits": SMALL_KEY_BITS, "seed": 3} | settings
    return write_chain(folder, "breast-cancer", PROVIDERS, job_id="bc-chain", **options)  # type: ignore[arg-type]


def _tree(folder: Path) -> Path:
    return write_tree(
        folder,
        "breast-cancer",
        PROVIDERS,
        4,
        job_id="bc-tree",
        rounds=ROUNDS,
        key_bits=SMALL_KEY_BITS,
        seed=3,
    )


def _assert_close_to_plaintext(metrics: dict[str, object], providers: list[str]) -> None:
    assert metrics["rounds"] == ROUNDS
    assert metrics["baseline_accuracy"] is not None
    assert metrics["accuracy"] is not None
    assert abs(metrics["accuracy"] - metrics["baseline_accuracy"]) <= ACCURACY_GAP  # type: ignore[operator]
    assert metrics["accuracy"] >= 0.9  # type: ignore[operator]
    for contributors in metrics["contributors"]:  # type: ignore[attr-defined]
        assert sorted(contributors) == sorted(providers)


async def test_chain_job_on_mosquitto(
    tmp_path: Path, mosquitto: MosquittoBroker, time_unit: float
) -> None:
    topology_path = _chain(tmp_path / "job")
    topology = load_topology(topology_path)

    async with record_wire(mosquitto.address, topology.job.id) as wire:
        outcome = await run_job(
            topology_path,
            tmp_path / "results",
            broker=mosquitto.address,
            timeout=JOB_TIMEOUT * time_unit,
        )

    assert outcome.returncode == 0, outcome.explain()
    _assert_close_to_plaintext(outcome.metrics, list(topology.providers))
    assert "accuracy" in outcome.stdout
    _audit_wire(wire, topology_path)


async def test_tree_job_on_mosquitto(
    tmp_path: Path, mosquitto: MosquittoBroker, time_unit: float
) -> None:
    topology_path = _tree(tmp_path / "job")
    topology = load_topology(topology_path)
    assert len(topology.nodes) > len(topology.providers)  # the tree has aggregators

    outcome = await run_job(
        topology_path,
        tmp_path / "results",
        broker=mosquitto.address,
        timeout=JOB_TIMEOUT * time_unit,
    )

    assert outcome.returncode == 0, outcome.explain()
    _assert_close_to_plaintext(outcome.metrics, list(topology.providers))


@pytest.mark.parametrize("shape", ["chain", "tree"])
async def test_job_on_embedded_broker(tmp_path: Path, time_unit: float, shape: str) -> None:
    topology_path = _chain(tmp_path / "job") if shape == "chain" else _tree(tmp_path / "job")
    topology = load_topology(topology_path)

    outcome = await run_job(
        topology_path, tmp_path / "results", broker=None, timeout=JOB_TIMEOUT * time_unit
    )

    assert outcome.returncode == 0, outcome.explain()
    _assert_close_to_plaintext(outcome.metrics, list(topology.providers))


async def test_unrandomised_run_equals_plaintext_gd(
    tmp_path: Path, mosquitto: MosquittoBroker, time_unit: float
) -> None:
    topology_path = _chain(tmp_path / "job", randomise=False)
    topology = load_topology(topology_path)

    outcome = await run_job(
        topology_path,
        tmp_path / "results",
        broker=mosquitto.address,
        timeout=JOB_TIMEOUT * time_unit,
    )
    assert outcome.returncode == 0, outcome.explain()

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
    encrypted = np.array(outcome.metrics["theta"])
    # Each round rounds every provider's values to 2**-frac_bits, so the error
    # of a round is at most providers * 2**-frac_bits per parameter. Gradient
    # descent with this step size does not amplify it over 30 rounds.
    tolerance = ROUNDS * PROVIDERS * 2.0**-topology.crypto.frac_bits
    assert expected.rounds_run == ROUNDS
    np.testing.assert_allclose(encrypted, expected.theta, rtol=0, atol=tolerance)
    assert not np.allclose(expected.theta, 0)


async def test_phones_job_with_2048_bit_key(
    tmp_path: Path, mosquitto: MosquittoBroker, time_unit: float
) -> None:
    example = tmp_path / "phones"
    shutil.copytree(EXAMPLES / "phones", example, ignore=shutil.ignore_patterns("keys", "results"))
    topology = load_topology(example / "topology.toml")
    assert topology.crypto.key_bits == 2048

    outcome = await run_job(
        example / "topology.toml",
        tmp_path / "results",
        broker=mosquitto.address,
        timeout=JOB_TIMEOUT * time_unit,
    )

    assert outcome.returncode == 0, outcome.explain()
    metrics = outcome.metrics
    assert metrics["key_bits"] == 2048
    assert metrics["rounds"] >= 1
    theta = metrics["theta"]
    # Smokers in the sample have cancer and the one non-smoker does not, so
    # the smoker weight must turn positive.
    assert theta[0] > 0
    for contributors in metrics["contributors"]:
        assert sorted(contributors) == ["phone1", "phone2", "phone3"]


def _float_patterns(values: np.ndarray) -> set[bytes]:
    """Byte patterns under which a float could appear in a payload."""
    patterns: set[bytes] = set()
    for value in np.unique(values.ravel()):
        if value in (0.0, 1.0, -1.0):
            continue  # too common to mean anything
        patterns.add(struct.pack(">d", value))  # msgpack float64
        patterns.add(struct.pack("<d", value))  # numpy's native byte order
        fixed = int(round(float(value) * 2**32)) % 2**64
        patterns.add(fixed.to_bytes(8, "big"))  # a fixed-point encoding sent in the clear
    return patterns


def _audit_wire(wire: WireRecording, topology_path: Path) -> None:
    """Check that no data row, gradient or random scale crossed the broker in plaintext."""
    topology = load_topology(topology_path)
    assert wire.messages, "the recorder saw no messages"
    model = LogisticRegression()
    shards = {}
    for node_id in topology.providers:
        data = topology.nodes[node_id].data
        assert data is not None
        shards[node_id] = load_data_file(data)

    thetas = []
    contributions = 0
    undecodable = []
    for topic, payload in wire.messages:
        if not payload:
            continue  # a cleared retained message
        try:
            # The auditor holds every sealing private key, so it also reads sealed inboxes.
            message = open_recorded(topology, payload)
        except ProtocolError:
            undecodable.append(topic)
            continue
        if isinstance(message, RoundStart):
            thetas.append(np.array(message.theta))
            n = message.public_key
        if isinstance(message, Contribution):
            contributions += 1
            for ciphertext in message.ciphertexts:
                # A plaintext below n sent as if it were a ciphertext would fail this.
                assert n < ciphertext < n * n, f"{topic}: a value that is not a ciphertext"
    assert thetas, "no RoundStart on the wire"
    # At least one message per provider and round, more where sums or portions travel on.
    assert contributions >= topology.job.rounds * len(topology.providers)

    secrets: set[bytes] = set()
    for features, labels in shards.values():
        secrets |= _float_patterns(features)
        for theta in thetas:
            secrets |= _float_patterns(model.gradient_sum(theta, features, labels))

    windows: set[bytes] = set()
    for _, payload in wire.messages:
        windows.update(payload[i : i + 8] for i in range(len(payload) - 7))
    leaked = secrets & windows
    assert not leaked, f"{len(leaked)} secret values appear in plaintext on the wire"
    assert not undecodable, (
        f"payloads that are not gradchain messages on {sorted(set(undecodable))}"
    )
