"""Tests for gradchain.bench.traffic: counting payloads by round and message type."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from gradchain.bench.traffic import TrafficCounter
from gradchain.node.broker import BrokerAddress
from gradchain.protocol import Ack, Contribution, encode
from gradchain.protocol.sealing import seal_payload

RUN = "0123456789abcdef"


def sealed(message: Contribution | Ack) -> bytes:
    return seal_payload(
        encode(message),
        job="job",
        sender=message.sender,
        recipient="p3",
        recipient_key=X25519PrivateKey.generate().public_key(),
        message=message,
    )


def test_sealed_payloads_counted_by_kind_and_round() -> None:
    counter = TrafficCounter(BrokerAddress(host="127.0.0.1", port=1), "job")
    contribution = Contribution(
        job="job", run=RUN, round=2, sender="p2", contributors=("p2",), ciphertexts=(5, 7)
    )
    ack = Ack(job="job", run=RUN, round=2, sender="p3", of="p2")
    sealed_contribution = sealed(contribution)

    counter.count(sealed_contribution)
    counter.count(sealed(ack))
    counter.count(encode(contribution))

    kinds = counter.by_round[2]
    assert kinds["contribution"] == [2, len(sealed_contribution) + len(encode(contribution))]
    assert kinds["ack"][0] == 1
    assert "invalid" not in kinds
