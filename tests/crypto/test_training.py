"""Training-level check: a few rounds of logistic regression with packing on and off.

Three providers encrypt [a_i * g_i..., a_i] under one DJN key, the ciphertexts
are added homomorphically, and the learner decrypts the total and takes a
gradient step. Packed and unpacked runs must reach the same theta within
fixed-point precision, and both must stay close to plaintext training.
"""

from __future__ import annotations

import numpy as np
import pytest

from gradchain.crypto import (
    Encoding,
    FixedPointEncoding,
    ObfuscatorPool,
    PrivateKey,
    PublicKey,
    add_vectors,
    decrypt_vector,
    encrypt_vector,
    generate_keypair,
    make_encoding,
)
from gradchain.models import get_model
from gradchain.models.training import StepSchedule, update
from gradchain.topology import CryptoSettings

Keypair = tuple[PublicKey, PrivateKey]

PROVIDERS = 3
FEATURES = 6
ROUNDS = 5
FRAC_BITS = 32


@pytest.fixture(scope="module")
def djn_1024() -> Keypair:
    return generate_keypair(1024, djn=True)


def synthetic_shards(seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    true_theta = rng.normal(size=FEATURES)
    shards = []
    for _ in range(PROVIDERS):
        X = rng.normal(size=(40, FEATURES))
        y = (X @ true_theta + rng.normal(scale=0.5, size=40) > 0).astype(np.float64)
        shards.append((X, y))
    return shards


def train(
    keypair: Keypair | None, encoding: Encoding | None, scales: list[list[float]]
) -> np.ndarray:
    """Run ROUNDS rounds, encrypted when ``keypair`` is given, in plaintext otherwise."""
    model = get_model("logistic")
    schedule = StepSchedule(kind="constant", learning_rate=0.05)
    theta = np.zeros(FEATURES)
    shards = synthetic_shards()

    for k in range(1, ROUNDS + 1):
        vectors = [
            np.append(scale * model.gradient_sum(theta, X, y), scale)
            for (X, y), scale in zip(shards, scales[k - 1], strict=True)
        ]
        if keypair is None or encoding is None:
            total = np.sum(vectors, axis=0)
        else:
            total = encrypted_total(keypair, encoding, vectors, round=k)
        theta = update(theta, total[:-1] / total[-1], k, schedule, l2=0.001)
    return theta


def encrypted_total(
    keypair: Keypair, encoding: Encoding, vectors: list[np.ndarray], round: int
) -> np.ndarray:
    public_key, private_key = keypair
    total: list[int] | None = None
    with ObfuscatorPool(public_key, size=8, processes=0) as pool:
        for vector in vectors:
            ciphertexts, clipped = encrypt_vector(public_key, encoding, vector, obfuscators=pool)
            assert clipped == 0
            total = ciphertexts if total is None else add_vectors(public_key, total, ciphertexts)
    assert total is not None
    return decrypt_vector(private_key, encoding, total, len(vectors), round, length=FEATURES + 1)


def test_packed_training_matches_unpacked(djn_1024: Keypair) -> None:
    rng = np.random.default_rng(11)
    scales = [list(rng.uniform(0.1, 1.0, size=PROVIDERS)) for _ in range(ROUNDS)]
    packed = make_encoding(CryptoSettings(key_bits=1024, frac_bits=FRAC_BITS), PROVIDERS)
    unpacked = make_encoding(
        CryptoSettings(key_bits=1024, frac_bits=FRAC_BITS, packing=False), PROVIDERS
    )
    assert not isinstance(packed, FixedPointEncoding)
    assert isinstance(unpacked, FixedPointEncoding)

    theta_packed = train(djn_1024, packed, scales)
    theta_unpacked = train(djn_1024, unpacked, scales)
    theta_plain = train(None, None, scales)

    # Each round rounds every value to 2**-32 once per provider.
    precision = PROVIDERS * 2.0**-FRAC_BITS
    np.testing.assert_allclose(theta_packed, theta_unpacked, rtol=0, atol=precision)
    np.testing.assert_allclose(theta_packed, theta_plain, rtol=0, atol=1e-6)
    assert np.max(np.abs(theta_packed)) > 0.01
