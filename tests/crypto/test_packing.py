"""Tests for gradchain.crypto.packing: slot layout, round trips, homomorphic sums and overflow.

Most tests use the 150-bit medium key (plain Paillier) and small encodings
(few fractional bits, small clip) so that a plaintext holds several slots and
the boundaries are easy to reach. The sums are real homomorphic sums of
ciphertexts, decrypted with the private key.
"""

from __future__ import annotations

import numpy as np
import pytest

from gradchain.crypto.encoding import FixedPointEncoding
from gradchain.crypto.packing import (
    MAX_VALUE_BITS,
    PackedEncoding,
    headroom_bits,
    required_value_bits,
    scaled_clip,
)
from gradchain.crypto.paillier import PrivateKey, PublicKey
from gradchain.crypto.vector import add_vectors, decrypt_vector, encrypt_vector
from gradchain.errors import ConfigError, EncodingOverflowError

Keypair = tuple[PublicKey, PrivateKey]

MEDIUM_BITS = 150


def small_encoding(max_contributors: int = 4, **settings: object) -> PackedEncoding:
    """Return an encoding with C = 4 * 2**8 = 1024, so 12 value bits per slot."""
    options: dict[str, object] = {"frac_bits": 8, "clip": 4.0}
    options.update(settings)
    return PackedEncoding(key_bits=MEDIUM_BITS, max_contributors=max_contributors, **options)  # type: ignore[arg-type]


def encrypted_sum(
    keypair: Keypair, encoding: PackedEncoding, vectors: list[np.ndarray]
) -> list[int]:
    public_key, _ = keypair
    total: list[int] | None = None
    for vector in vectors:
        ciphertexts, _ = encrypt_vector(public_key, encoding, vector)
        total = ciphertexts if total is None else add_vectors(public_key, total, ciphertexts)
    assert total is not None
    return total


# Layout


def test_default_layout_for_2048_bit_key() -> None:
    encoding = PackedEncoding(key_bits=2048, max_contributors=12)

    assert encoding.offset == 2**52
    assert encoding.value_bits == 54
    assert encoding.headroom_bits == 4
    assert encoding.slot_bits == 58
    assert encoding.slots == 2047 // 58


def test_small_layout() -> None:
    encoding = small_encoding(max_contributors=4)

    assert encoding.offset == 1024
    assert encoding.unit_bound == 2048
    assert encoding.value_bits == 12
    assert encoding.headroom_bits == 2
    assert encoding.slot_bits == 14
    assert encoding.slots == 149 // 14


@pytest.mark.parametrize(
    ("contributors", "bits"),
    [(1, 0), (2, 1), (3, 2), (4, 2), (5, 3), (12, 4), (16, 4), (17, 5), (1000, 10)],
)
def test_headroom_bits_is_ceil_log2(contributors: int, bits: int) -> None:
    assert headroom_bits(contributors) == bits


def test_required_value_bits_holds_twice_the_scaled_clip() -> None:
    assert scaled_clip(32, 2.0**20) == 2**52
    assert required_value_bits(32, 2.0**20) == 54
    assert required_value_bits(0, 1.0) == 2
    assert required_value_bits(8, 4.0) == 12


def test_required_value_bits_of_huge_frac_bits_is_a_bound() -> None:
    assert required_value_bits(10**9, 1.0) > MAX_VALUE_BITS


def test_explicit_value_bits_widens_slots() -> None:
    encoding = small_encoding(value_bits=20)

    assert encoding.value_bits == 20
    assert encoding.slot_bits == 22


@pytest.mark.parametrize(
    ("length", "count"),
    [(0, 0), (1, 1), (10, 1), (11, 2), (20, 2), (21, 3)],
)
def test_ciphertext_count_rounds_up(length: int, count: int) -> None:
    assert small_encoding().slots == 10
    assert small_encoding().ciphertext_count(length) == count


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        pytest.param({"value_bits": 11}, "crypto.value_bits is 11", id="value-bits-too-small"),
        pytest.param({"value_bits": 64}, "at most 63", id="value-bits-too-large"),
        pytest.param({"frac_bits": 70}, "at most 63", id="frac-bits-too-large"),
        pytest.param({"clip": 2.0**-10}, "rounds to 0", id="clip-rounds-to-zero"),
        pytest.param({"clip": float("inf")}, "crypto.clip", id="clip-infinite"),
        pytest.param({"frac_bits": -1}, "crypto.frac_bits", id="frac-bits-negative"),
        pytest.param({"value_bits": 0}, "crypto.value_bits", id="value-bits-zero"),
    ],
)
def test_invalid_settings_rejected(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        small_encoding(**settings)


def test_slot_wider_than_plaintext_rejected() -> None:
    with pytest.raises(ConfigError, match=r"a slot needs 65 bits .* leaves 63 plaintext bits"):
        PackedEncoding(key_bits=64, max_contributors=3, frac_bits=41, clip=2.0**20)


def test_slot_as_wide_as_plaintext_accepted() -> None:
    encoding = PackedEncoding(key_bits=64, max_contributors=3, frac_bits=39, clip=2.0**20)

    assert encoding.slot_bits == 63
    assert encoding.slots == 1


def test_max_contributors_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="max_contributors"):
        small_encoding(max_contributors=0)


# Round trips and homomorphic sums


def test_round_trip_matches_fixed_point(medium_keypair: Keypair) -> None:
    public_key, private_key = medium_keypair
    values = np.random.default_rng(1).uniform(-3.9, 3.9, size=37)
    packed = small_encoding()
    unpacked = FixedPointEncoding(frac_bits=8, clip=4.0)

    packed_result = decrypt_vector(
        private_key, packed, encrypt_vector(public_key, packed, values)[0], 1, length=37
    )
    unpacked_result = decrypt_vector(
        private_key, unpacked, encrypt_vector(public_key, unpacked, values)[0], 1
    )

    np.testing.assert_array_equal(packed_result, unpacked_result)
    np.testing.assert_allclose(packed_result, values, atol=2.0**-9)


def test_negative_values_round_trip(medium_keypair: Keypair) -> None:
    public_key, private_key = medium_keypair
    values = np.array([-1.0, -0.5, -(2.0**-8), -3.75, -0.0])
    encoding = small_encoding()

    ciphertexts, _ = encrypt_vector(public_key, encoding, values)
    decoded = decrypt_vector(private_key, encoding, ciphertexts, 1, length=5)

    np.testing.assert_array_equal(decoded, values)


def test_encoded_slots_are_offset_and_non_negative(medium_keypair: Keypair) -> None:
    public_key, _ = medium_keypair
    encoding = small_encoding()

    encoded = encoding.encode_vector(np.array([-4.0, 0.0, 4.0]), public_key)

    mask = (1 << encoding.slot_bits) - 1
    plaintext = encoded.plaintexts[0]
    slots = [(plaintext >> (index * encoding.slot_bits)) & mask for index in range(3)]
    assert slots == [0, 1024, 2048]
    assert plaintext >> (3 * encoding.slot_bits) == 0


def test_sum_across_slot_boundaries(medium_keypair: Keypair) -> None:
    # 23 values span three plaintexts of 10 slots. Neighbouring slots alternate
    # between the largest and the smallest sum, so a carry or a borrow between
    # slots would change a neighbour.
    encoding = small_encoding(max_contributors=4)
    length = 23
    pattern = np.where(np.arange(length) % 2 == 0, 4.0, -4.0)
    vectors = [pattern, pattern, pattern, pattern]

    total = encrypted_sum(medium_keypair, encoding, vectors)
    decoded = decrypt_vector(medium_keypair[1], encoding, total, 4, length=length)

    assert len(total) == 3
    np.testing.assert_array_equal(decoded, 4 * pattern)


def test_sum_of_mixed_signs(medium_keypair: Keypair) -> None:
    rng = np.random.default_rng(7)
    encoding = small_encoding(max_contributors=4)
    vectors = [np.round(rng.uniform(-4, 4, size=25) * 256) / 256 for _ in range(3)]

    total = encrypted_sum(medium_keypair, encoding, vectors)
    decoded = decrypt_vector(medium_keypair[1], encoding, total, 3, length=25)

    np.testing.assert_array_equal(decoded, sum(vectors))


def test_values_at_clipping_bound_are_exact(medium_keypair: Keypair) -> None:
    public_key, private_key = medium_keypair
    encoding = small_encoding()
    values = np.array([4.0, -4.0, 4.0, -4.0])

    ciphertexts, clipped = encrypt_vector(public_key, encoding, values)
    decoded = decrypt_vector(private_key, encoding, ciphertexts, 1, length=4)

    assert clipped == 0
    np.testing.assert_array_equal(decoded, values)


def test_values_beyond_bound_are_clipped_and_counted(medium_keypair: Keypair) -> None:
    public_key, private_key = medium_keypair
    encoding = small_encoding()
    values = np.array([4.5, -100.0, 3.0, 4.0])

    ciphertexts, clipped = encrypt_vector(public_key, encoding, values)
    decoded = decrypt_vector(private_key, encoding, ciphertexts, 1, length=4)

    assert clipped == 2
    np.testing.assert_array_equal(decoded, [4.0, -4.0, 3.0, 4.0])


def test_rounding_is_half_to_even(medium_keypair: Keypair) -> None:
    public_key, private_key = medium_keypair
    encoding = small_encoding()
    unit = 2.0**-8
    values = np.array([unit / 2, 3 * unit / 2, -unit / 2, -3 * unit / 2])

    ciphertexts, _ = encrypt_vector(public_key, encoding, values)
    decoded = decrypt_vector(private_key, encoding, ciphertexts, 1, length=4)

    np.testing.assert_array_equal(decoded, [0.0, 2 * unit, 0.0, -2 * unit])


def test_max_contributors_at_bound_decode_exactly(medium_keypair: Keypair) -> None:
    # Four contributions at +clip and four at -clip fill a slot to 4 * 2C and to 0.
    encoding = small_encoding(max_contributors=4)
    vector = np.array([4.0, -4.0] * 6)

    total = encrypted_sum(medium_keypair, encoding, [vector] * 4)
    decoded = decrypt_vector(medium_keypair[1], encoding, total, 4, round=3, length=12)

    np.testing.assert_array_equal(decoded, 4 * vector)


def test_one_contributor_more_than_headroom_raises(medium_keypair: Keypair) -> None:
    encoding = small_encoding(max_contributors=4)
    vector = np.array([4.0, -4.0] * 6)
    total = encrypted_sum(medium_keypair, encoding, [vector] * 5)

    with pytest.raises(EncodingOverflowError, match="headroom for at most 4") as caught:
        decrypt_vector(medium_keypair[1], encoding, total, 5, round=9, length=12)

    assert caught.value.round == 9
    assert "round 9" in str(caught.value)


def test_slot_sum_above_bound_names_round_and_slot(medium_keypair: Keypair) -> None:
    # The ciphertexts hold three contributions, but the caller claims two, so
    # slot 11 holds 3 * 2C > 2 * 2C.
    encoding = small_encoding(max_contributors=4)
    vector = np.zeros(12)
    vector[11] = 4.0

    total = encrypted_sum(medium_keypair, encoding, [vector] * 3)

    with pytest.raises(EncodingOverflowError) as caught:
        decrypt_vector(medium_keypair[1], encoding, total, 2, round=5, length=12)

    assert caught.value.round == 5
    assert caught.value.slot == 11
    assert "round 5, slot 11" in str(caught.value)


def test_unclipped_plaintext_detected(medium_keypair: Keypair) -> None:
    public_key, _ = medium_keypair
    encoding = small_encoding()
    slot_value = encoding.unit_bound + 1

    with pytest.raises(EncodingOverflowError) as caught:
        encoding.decode_vector([slot_value << encoding.slot_bits], public_key, 1, 2, length=2)

    assert caught.value.slot == 1


def test_non_zero_slot_past_end_detected(medium_keypair: Keypair) -> None:
    public_key, _ = medium_keypair
    encoding = small_encoding()
    plaintext = 1024 | (1 << (3 * encoding.slot_bits))

    with pytest.raises(EncodingOverflowError, match="past the end") as caught:
        encoding.decode_vector([plaintext], public_key, 1, 4, length=2)

    assert caught.value.slot == 3


def test_bits_above_last_slot_detected(medium_keypair: Keypair) -> None:
    public_key, _ = medium_keypair
    encoding = small_encoding()
    plaintext = 1 << (encoding.slots * encoding.slot_bits)

    with pytest.raises(EncodingOverflowError, match="above its last slot") as caught:
        encoding.decode_vector([plaintext], public_key, 1, 4)

    assert caught.value.slot == encoding.slots - 1


def test_decode_without_length_returns_every_slot(medium_keypair: Keypair) -> None:
    public_key, _ = medium_keypair
    encoding = small_encoding()

    encoded = encoding.encode_vector(np.array([1.0, 2.0, 3.0]), public_key)
    # The unused slots hold 0, which decodes as -clip.
    decoded = encoding.decode_vector(encoded.plaintexts, public_key, 1)

    assert decoded.shape == (encoding.slots,)
    np.testing.assert_array_equal(decoded[:3], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(decoded[3:], -4.0)


def test_decode_rejects_wrong_plaintext_count(medium_keypair: Keypair) -> None:
    public_key, _ = medium_keypair
    encoding = small_encoding()

    with pytest.raises(ValueError, match="needs 2 plaintexts, got 1"):
        encoding.decode_vector([0], public_key, 1, length=15)


def test_decode_rejects_plaintext_outside_range(medium_keypair: Keypair) -> None:
    public_key, _ = medium_keypair

    with pytest.raises(ValueError, match=r"plaintexts\[0\] is outside"):
        small_encoding().decode_vector([public_key.n], public_key, 1)


def test_encode_rejects_more_contributors_than_headroom(medium_keypair: Keypair) -> None:
    with pytest.raises(ConfigError, match="headroom for 4"):
        small_encoding(max_contributors=4).encode_vector(
            np.zeros(3), medium_keypair[0], contributors=5
        )


def test_encode_rejects_smaller_key(tiny_keypair: Keypair) -> None:
    with pytest.raises(ConfigError, match="laid out for 150-bit keys"):
        small_encoding().encode_vector(np.zeros(3), tiny_keypair[0])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param(np.zeros((2, 2)), "1-D", id="matrix"),
        pytest.param(np.array([0.0, np.nan]), r"values\[1\] is NaN", id="nan"),
        pytest.param(np.array([np.inf]), r"values\[0\] is infinite", id="infinite"),
    ],
)
def test_encode_rejects_invalid_values(
    medium_keypair: Keypair, values: np.ndarray, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        small_encoding().encode_vector(values, medium_keypair[0])


def test_default_encoding_round_trip_on_2048_bit_key(keypair_2048: Keypair) -> None:
    public_key, private_key = keypair_2048
    encoding = PackedEncoding(key_bits=2048, max_contributors=3)
    rng = np.random.default_rng(3)
    vectors = [rng.normal(scale=1000.0, size=100) for _ in range(3)]
    total: list[int] | None = None
    for vector in vectors:
        ciphertexts, _ = encrypt_vector(public_key, encoding, vector)
        total = ciphertexts if total is None else add_vectors(public_key, total, ciphertexts)
    assert total is not None

    decoded = decrypt_vector(private_key, encoding, total, 3, length=100)

    assert len(total) == encoding.ciphertext_count(100) == 3
    np.testing.assert_allclose(decoded, sum(vectors), rtol=0, atol=3 * 2.0**-32)
