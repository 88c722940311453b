"""Tests for gradchain.crypto.vector."""

from __future__ import annotations

import math
import secrets

import numpy as np
import pytest

from gradchain.crypto.encoding import FixedPointEncoding
from gradchain.crypto.packing import PackedEncoding
from gradchain.crypto.paillier import PrivateKey, PublicKey
from gradchain.crypto.vector import (
    add_vectors,
    decrypt_ciphertexts,
    decrypt_vector,
    encrypt_portions,
    encrypt_vector,
)
from gradchain.errors import ConfigError, CryptoError, EncodingOverflowError
from tests.crypto.conftest import MEDIUM_P

Keypair = tuple[PublicKey, PrivateKey]

ENCODING = FixedPointEncoding()
CLIP = ENCODING.clip
UNIT = 2.0**-32


def test_round_trip_with_clipping(medium_keypair: Keypair) -> None:
    public_key, private_key = medium_keypair
    values = np.array([0.0, 1.0, -1.0, 0.25, UNIT, -UNIT, CLIP, -CLIP, CLIP + 1.0, -3 * CLIP])

    ciphertexts, clipped = encrypt_vector(public_key, ENCODING, values)
    decoded = decrypt_vector(private_key, ENCODING, ciphertexts, contributors=1)

    assert clipped == 2
    assert len(ciphertexts) == len(values)
    assert all(public_key.is_valid_ciphertext(c) for c in ciphertexts)
    assert decoded.tolist() == [0.0, 1.0, -1.0, 0.25, UNIT, -UNIT, CLIP, -CLIP, CLIP, -CLIP]


def test_sum_of_three_providers(medium_keypair: Keypair) -> None:
    public_key, private_key = medium_keypair
    rng = np.random.default_rng(3)
    vectors = [rng.normal(0.0, 50.0, size=31) for _ in range(3)]

    total, _ = encrypt_vector(public_key, ENCODING, vectors[0])
    for vector in vectors[1:]:
        ciphertexts, _ = encrypt_vector(public_key, ENCODING, vector)
        total = add_vectors(public_key, total, ciphertexts)
    decoded = decrypt_vector(private_key, ENCODING, total, contributors=3, round=1)

    expected = np.sum(vectors, axis=0)
    assert np.max(np.abs(decoded - expected)) <= 3 * UNIT / 2


def test_weighted_gradient_ratio(medium_keypair: Keypair) -> None:
    """Recover (sum a_i g_i) / (sum a_i) from encrypted [a_i g_i..., a_i] vectors."""
    public_key, private_key = medium_keypair
    gradients = [np.array([1.0, -2.0]), np.array([3.0, 0.5]), np.array([-1.0, 4.0])]
    weights = [0.5, 1.0, 0.25]

    total: list[int] | None = None
    for gradient, weight in zip(gradients, weights, strict=True):
        ciphertexts, _ = encrypt_vector(public_key, ENCODING, np.append(weight * gradient, weight))
        total = ciphertexts if total is None else add_vectors(public_key, total, ciphertexts)
    assert total is not None
    decoded = decrypt_vector(private_key, ENCODING, total, contributors=3)

    expected = sum(w * g for w, g in zip(weights, gradients, strict=True)) / sum(weights)
    assert np.allclose(decoded[:-1] / decoded[-1], expected, rtol=0.0, atol=1e-8)


def test_empty_vector(medium_keypair: Keypair) -> None:
    public_key, private_key = medium_keypair

    ciphertexts, clipped = encrypt_vector(public_key, ENCODING, np.array([]))
    decoded = decrypt_vector(private_key, ENCODING, ciphertexts, contributors=1)

    assert ciphertexts == []
    assert clipped == 0
    assert decoded.shape == (0,)


def test_encrypt_vector_randomises_each_value(medium_keypair: Keypair) -> None:
    public_key, _ = medium_keypair

    ciphertexts, _ = encrypt_vector(public_key, ENCODING, np.zeros(10))

    assert len(set(ciphertexts)) == 10


def test_encrypt_vector_rejects_nan(medium_keypair: Keypair) -> None:
    with pytest.raises(ValueError, match=r"values\[1\] is NaN"):
        encrypt_vector(medium_keypair[0], ENCODING, np.array([0.0, math.nan]))


def test_encrypt_vector_rejects_small_key(tiny_keypair: Keypair) -> None:
    with pytest.raises(ConfigError, match=r"crypto\.key_bits"):
        encrypt_vector(tiny_keypair[0], ENCODING, np.array([1.0]))


@pytest.mark.parametrize(
    ("a_length", "b_length"),
    [
        pytest.param(2, 3, id="shorter"),
        pytest.param(3, 2, id="longer"),
        pytest.param(0, 1, id="empty"),
    ],
)
def test_add_vectors_rejects_length_mismatch(
    tiny_keypair: Keypair, a_length: int, b_length: int
) -> None:
    public_key, _ = tiny_keypair

    with pytest.raises(ValueError, match=f"lengths {a_length} and {b_length}"):
        add_vectors(public_key, [1] * a_length, [1] * b_length)


def test_add_vectors_known_answer(tiny_keypair: Keypair) -> None:
    public_key, _ = tiny_keypair
    nsquare = 323 * 323

    total = add_vectors(public_key, [84326, 324], [74871, 324])

    assert total == [84326 * 74871 % nsquare, 324 * 324 % nsquare]


@pytest.mark.parametrize(
    ("round_number", "prefix"),
    [
        pytest.param(4, "round 4, slot 1: ", id="with-round"),
        pytest.param(None, "slot 1: ", id="no-round"),
    ],
)
def test_decrypt_vector_names_invalid_slot(
    medium_keypair: Keypair, round_number: int | None, prefix: str
) -> None:
    public_key, private_key = medium_keypair
    ciphertexts, _ = encrypt_vector(public_key, ENCODING, np.array([1.0, 2.0]))
    ciphertexts[1] = public_key.nsquare

    with pytest.raises(CryptoError) as caught:
        decrypt_vector(private_key, ENCODING, ciphertexts, contributors=1, round=round_number)

    assert str(caught.value).startswith(prefix)
    assert "not a valid ciphertext" in str(caught.value)


def test_decrypt_vector_overflow_names_round(medium_keypair: Keypair) -> None:
    public_key, private_key = medium_keypair
    ciphertexts = [public_key.raw_encrypt(0), public_key.raw_encrypt(public_key.n // 2)]

    with pytest.raises(EncodingOverflowError) as caught:
        decrypt_vector(private_key, ENCODING, ciphertexts, contributors=3, round=9)

    assert caught.value.round == 9
    assert caught.value.slot == 1


def test_decrypt_vector_rejects_small_key(tiny_keypair: Keypair) -> None:
    public_key, private_key = tiny_keypair

    with pytest.raises(ConfigError, match=r"crypto\.key_bits"):
        decrypt_vector(private_key, ENCODING, [public_key.raw_encrypt(1)], contributors=1)


def test_round_trip_2048(keypair_2048: Keypair) -> None:
    public_key, private_key = keypair_2048
    first = np.array([0.5, -1.25, CLIP, -UNIT, 0.0])
    second = np.array([0.5, 0.25, -CLIP, -UNIT, 2 * CLIP])

    a, clipped_a = encrypt_vector(public_key, ENCODING, first)
    b, clipped_b = encrypt_vector(public_key, ENCODING, second)
    decoded = decrypt_vector(private_key, ENCODING, add_vectors(public_key, a, b), contributors=2)

    assert clipped_a == 0
    assert clipped_b == 1
    assert decoded.tolist() == [1.0, -1.0, 0.0, -2 * UNIT, CLIP]
    assert all(len(public_key.ciphertext_to_bytes(c)) == 512 for c in a)


# Parallel decryption and the packed encoding


def test_parallel_decryption_equals_serial(keypair_2048: Keypair) -> None:
    public_key, private_key = keypair_2048
    plaintexts = [secrets.randbelow(public_key.n) for _ in range(40)]
    ciphertexts = [public_key.raw_encrypt(m) for m in plaintexts]

    serial = decrypt_ciphertexts(private_key, ciphertexts, workers=1)
    parallel = decrypt_ciphertexts(private_key, ciphertexts, workers=4)

    assert serial == plaintexts
    assert parallel == plaintexts


def test_parallel_decrypt_vector_equals_serial(keypair_2048: Keypair) -> None:
    public_key, private_key = keypair_2048
    encoding = PackedEncoding(key_bits=2048, max_contributors=2)
    values = np.random.default_rng(5).normal(scale=50.0, size=1000)
    ciphertexts, _ = encrypt_vector(public_key, encoding, values)

    serial = decrypt_vector(private_key, encoding, ciphertexts, 1, length=1000, workers=1)
    parallel = decrypt_vector(private_key, encoding, ciphertexts, 1, length=1000, workers=3)
    default = decrypt_vector(private_key, encoding, ciphertexts, 1, length=1000)

    np.testing.assert_array_equal(serial, parallel)
    np.testing.assert_array_equal(serial, default)


def test_parallel_decryption_names_invalid_slot(keypair_2048: Keypair) -> None:
    public_key, private_key = keypair_2048
    encoding = PackedEncoding(key_bits=2048, max_contributors=2)
    ciphertexts, _ = encrypt_vector(public_key, encoding, np.zeros(1000))
    ciphertexts[20] = public_key.n

    with pytest.raises(CryptoError, match="round 4, slot 20"):
        decrypt_vector(private_key, encoding, ciphertexts, 1, round=4, length=1000, workers=2)


@pytest.mark.parametrize("workers", [0, -1, True])
def test_decrypt_vector_rejects_invalid_workers(medium_keypair: Keypair, workers: int) -> None:
    public_key, private_key = medium_keypair
    ciphertexts, _ = encrypt_vector(public_key, FixedPointEncoding(), [1.0])

    with pytest.raises(ValueError, match="workers"):
        decrypt_vector(private_key, FixedPointEncoding(), ciphertexts, 1, workers=workers)


def test_fixed_point_decrypt_checks_length(medium_keypair: Keypair) -> None:
    public_key, private_key = medium_keypair
    ciphertexts, _ = encrypt_vector(public_key, FixedPointEncoding(), [1.0, 2.0])

    with pytest.raises(ValueError, match="expected 3 plaintexts, got 2"):
        decrypt_vector(private_key, FixedPointEncoding(), ciphertexts, 1, length=3)


def test_first_invalid_ciphertext(medium_keypair: Keypair) -> None:
    public_key, _ = medium_keypair
    valid = [public_key.raw_encrypt(m) for m in range(5)]

    assert public_key.first_invalid_ciphertext(valid) is None
    assert public_key.first_invalid_ciphertext([]) is None
    assert public_key.first_invalid_ciphertext([*valid, 0]) == 5
    assert public_key.first_invalid_ciphertext([*valid, public_key.nsquare]) == 5
    assert public_key.first_invalid_ciphertext([*valid[:2], MEDIUM_P * 3, *valid]) == 2


@pytest.mark.parametrize("portions", [2, 3])
def test_portions_add_up_to_sum(
    keypair_2048: Keypair, portions: int
) -> None:
    public_key, private_key = keypair_2048
    encoding = PackedEncoding(key_bits=2048, max_contributors=4)
    rng = np.random.default_rng(11)
    vectors = [rng.normal(0.0, 10.0, size=40) for _ in range(4)]

    # Each "aggregator" adds one portion of every provider; the learner adds the aggregators.
    per_aggregator: list[list[int] | None] = [None] * portions
    for vector in vectors:
        split, clipped = encrypt_portions(public_key, encoding, vector, portions)
        assert clipped == 0
        assert len(split) == portions
        for index, ciphertexts in enumerate(split):
            current = per_aggregator[index]
            per_aggregator[index] = (
                ciphertexts if current is None else add_vectors(public_key, current, ciphertexts)
            )
    total = per_aggregator[0]
    assert total is not None
    for other in per_aggregator[1:]:
        assert other is not None
        total = add_vectors(public_key, total, other)
    decoded = decrypt_vector(private_key, encoding, total, contributors=4, length=40)

    assert np.max(np.abs(decoded - np.sum(vectors, axis=0))) <= 4 * UNIT


def test_one_portion_alone_decrypts_to_noise(keypair_2048: Keypair) -> None:
    public_key, private_key = keypair_2048
    encoding = PackedEncoding(key_bits=2048, max_contributors=2)
    values = np.full(40, 3.0)
    expected = encoding.encode_vector(values, public_key).plaintexts

    split, _ = encrypt_portions(public_key, encoding, values, 2)
    first = private_key.raw_decrypt_batch(split[0])
    second = private_key.raw_decrypt_batch(split[1])

    # Neither share equals the encoded plaintext, but the two add up to it mod n.
    assert all(share != plaintext for share, plaintext in zip(first, expected, strict=True))
    assert [(a + b) % public_key.n for a, b in zip(first, second, strict=True)] == expected
    # A share is spread over the whole of [0, n), far beyond the packed value's width.
    assert max(first).bit_length() > public_key.n.bit_length() - 16


def test_portions_must_be_positive(medium_keypair: Keypair) -> None:
    public_key, _ = medium_keypair
    with pytest.raises(ValueError, match="portions must be an integer >= 1, got 0"):
        encrypt_portions(public_key, ENCODING, [1.0], 0)


def test_first_share_is_uniform(medium_keypair: Keypair) -> None:
    public_key, _ = medium_keypair
    draws = 4000
    bins = 8
    counts = [0] * bins
    for _ in range(draws):
        # Unencrypted shares are 1 + share * n, so the share reads back without a key.
        split, _ = encrypt_portions(public_key, ENCODING, [2.5], 2, encrypt=False)
        share = (split[0][0] - 1) // public_key.n
        counts[share * bins // public_key.n] += 1

    # Each bin expects draws / bins with standard deviation sqrt(draws * (1/8) * (7/8)) ~ 21.
    expected = draws / bins
    assert all(abs(count - expected) <= 5 * 21 for count in counts), counts
