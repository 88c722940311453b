"""Tests for gradchain.crypto.encoding.

Most tests use the 150-bit medium key, which fits the default encoding
(frac_bits=32, clip=2**20) summed over many contributors. The tiny key
(n = 323) checks the boundaries of the capacity check and of the sign split at
n // 2 with frac_bits=0.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from gradchain.crypto.encoding import EncodedVector, FixedPointEncoding
from gradchain.crypto.paillier import PrivateKey, PublicKey
from gradchain.errors import ConfigError, EncodingOverflowError

Keypair = tuple[PublicKey, PrivateKey]

DEFAULT = FixedPointEncoding()
CLIP = 2.0**20
UNIT = 2.0**-32
SCALE = 2**32


def encode_one(value: float, public_key: PublicKey, encoding: FixedPointEncoding = DEFAULT) -> int:
    encoded = encoding.encode_vector(np.array([value]), public_key)
    return encoded.plaintexts[0]


def test_defaults() -> None:
    assert DEFAULT.frac_bits == 32
    assert DEFAULT.clip == CLIP
    assert DEFAULT.scale == SCALE


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(0.0, 0, id="zero"),
        pytest.param(-0.0, 0, id="negative-zero"),
        pytest.param(1.0, SCALE, id="one"),
        pytest.param(1.5, 3 * 2**31, id="one-and-half"),
        pytest.param(UNIT, 1, id="one-unit"),
        pytest.param(UNIT / 2, 0, id="half-unit-rounds-to-even-zero"),
        pytest.param(3 * UNIT / 2, 2, id="one-and-half-units-rounds-to-even-two"),
        pytest.param(CLIP, 2**52, id="clip"),
    ],
)
def test_encode_known_positive_plaintexts(
    medium_keypair: Keypair, value: float, expected: int
) -> None:
    assert encode_one(value, medium_keypair[0]) == expected


@pytest.mark.parametrize(
    ("value", "units"),
    [
        pytest.param(-1.0, SCALE, id="minus-one"),
        pytest.param(-UNIT, 1, id="minus-one-unit"),
        pytest.param(-3 * UNIT / 2, 2, id="minus-one-and-half-units"),
        pytest.param(-CLIP, 2**52, id="minus-clip"),
    ],
)
def test_encode_negative_wraps_modulo_n(medium_keypair: Keypair, value: float, units: int) -> None:
    public_key, _ = medium_keypair

    assert encode_one(value, public_key) == public_key.n - units


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(0.0, 0.0, id="zero"),
        pytest.param(1.0, 1.0, id="one"),
        pytest.param(-1.0, -1.0, id="minus-one"),
        pytest.param(0.25, 0.25, id="quarter"),
        pytest.param(-0.25, -0.25, id="minus-quarter"),
        pytest.param(UNIT, UNIT, id="one-unit"),
        pytest.param(-UNIT, -UNIT, id="minus-one-unit"),
        pytest.param(UNIT / 2, 0.0, id="half-unit"),
        pytest.param(1e-12, 0.0, id="below-precision"),
        pytest.param(-1e-12, 0.0, id="minus-below-precision"),
        pytest.param(CLIP, CLIP, id="clip"),
        pytest.param(-CLIP, -CLIP, id="minus-clip"),
        pytest.param(CLIP - UNIT, CLIP - UNIT, id="one-unit-below-clip"),
        pytest.param(float(np.nextafter(CLIP, math.inf)), CLIP, id="just-past-clip"),
        pytest.param(float(np.nextafter(-CLIP, -math.inf)), -CLIP, id="just-past-minus-clip"),
        pytest.param(2 * CLIP, CLIP, id="twice-clip"),
        pytest.param(-1e300, -CLIP, id="huge-negative"),
        pytest.param(np.finfo(np.float64).max, CLIP, id="float-max"),
    ],
)
def test_round_trip_single_contributor(
    medium_keypair: Keypair, value: float, expected: float
) -> None:
    public_key, _ = medium_keypair
    encoded = DEFAULT.encode_vector(np.array([value]), public_key)

    decoded = DEFAULT.decode_vector(encoded.plaintexts, public_key, contributors=1)

    assert decoded[0] == expected


def test_round_trip_within_half_unit(medium_keypair: Keypair) -> None:
    public_key, _ = medium_keypair
    values = np.random.default_rng(7).uniform(-CLIP, CLIP, size=200)

    encoded = DEFAULT.encode_vector(values, public_key)
    decoded = DEFAULT.decode_vector(encoded.plaintexts, public_key, contributors=1)

    assert encoded.clipped == 0
    assert np.max(np.abs(decoded - values)) <= UNIT / 2


@pytest.mark.parametrize(
    ("values", "clipped"),
    [
        pytest.param([], 0, id="empty"),
        pytest.param([0.0, 1.0, -1.0], 0, id="none"),
        pytest.param([CLIP, -CLIP], 0, id="at-bound"),
        pytest.param([float(np.nextafter(CLIP, math.inf))], 1, id="just-past"),
        pytest.param([3 * CLIP, -3 * CLIP, 0.0, 1e300], 3, id="several"),
    ],
)
def test_encode_counts_clipped_values(
    medium_keypair: Keypair, values: list[float], clipped: int
) -> None:
    encoded = DEFAULT.encode_vector(np.array(values, dtype=np.float64), medium_keypair[0])

    assert encoded.clipped == clipped
    assert len(encoded.plaintexts) == len(values)


def test_encode_returns_encoded_vector(medium_keypair: Keypair) -> None:
    encoded = DEFAULT.encode_vector(np.array([1.0, -1.0]), medium_keypair[0])

    assert encoded == EncodedVector(
        plaintexts=[SCALE, medium_keypair[0].n - SCALE],
        clipped=0,
    )


def test_encode_accepts_sequence(medium_keypair: Keypair) -> None:
    encoded = DEFAULT.encode_vector([0.5, 2], medium_keypair[0])

    assert encoded.plaintexts == [SCALE // 2, 2 * SCALE]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param([math.nan], r"values\[0\] is NaN", id="nan-first"),
        pytest.param([0.0, 1.0, math.nan], r"values\[2\] is NaN", id="nan-last"),
        pytest.param([0.0, math.inf], r"values\[1\] is infinite", id="inf"),
        pytest.param([-math.inf, 0.0], r"values\[0\] is infinite", id="minus-inf"),
        pytest.param([1.0, math.inf, math.nan], r"values\[1\] is infinite", id="first-reported"),
    ],
)
def test_encode_rejects_non_finite(
    medium_keypair: Keypair, values: list[float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        DEFAULT.encode_vector(np.array(values), medium_keypair[0])


@pytest.mark.parametrize(
    "values",
    [
        pytest.param(np.zeros((2, 2)), id="matrix"),
        pytest.param(np.float64(1.0), id="scalar"),
    ],
)
def test_encode_rejects_non_vector(medium_keypair: Keypair, values: Any) -> None:
    with pytest.raises(ValueError, match="1-D array"):
        DEFAULT.encode_vector(values, medium_keypair[0])


@pytest.mark.parametrize("contributors", [2, 3, 10])
def test_sum_of_contributors_decodes_to_sum(medium_keypair: Keypair, contributors: int) -> None:
    public_key, _ = medium_keypair
    rng = np.random.default_rng(contributors)
    vectors = [rng.uniform(-1000.0, 1000.0, size=31) for _ in range(contributors)]
    vectors[0][0] = -CLIP
    vectors[0][1] = UNIT

    totals = [0] * 31
    for vector in vectors:
        encoded = DEFAULT.encode_vector(vector, public_key)
        totals = [(t + m) % public_key.n for t, m in zip(totals, encoded.plaintexts, strict=True)]
    decoded = DEFAULT.decode_vector(totals, public_key, contributors)

    expected = np.sum(vectors, axis=0)
    assert np.max(np.abs(decoded - expected)) <= contributors * UNIT / 2


@pytest.mark.parametrize("sign", [pytest.param(1, id="positive"), pytest.param(-1, id="negative")])
def test_all_contributors_at_clip_decode(medium_keypair: Keypair, sign: int) -> None:
    public_key, _ = medium_keypair
    contributors = 5
    total = contributors * sign * 2**52 % public_key.n

    decoded = DEFAULT.decode_vector([total], public_key, contributors)

    assert decoded[0] == sign * contributors * CLIP


@pytest.mark.parametrize("sign", [pytest.param(1, id="positive"), pytest.param(-1, id="negative")])
def test_fewer_contributors_than_declared_overflows(medium_keypair: Keypair, sign: int) -> None:
    public_key, _ = medium_keypair
    total = 5 * sign * 2**52 % public_key.n

    with pytest.raises(EncodingOverflowError):
        DEFAULT.decode_vector([total], public_key, contributors=4)


@pytest.mark.parametrize("sign", [pytest.param(1, id="positive"), pytest.param(-1, id="negative")])
def test_overflow_limit_rounding_allowance(medium_keypair: Keypair, sign: int) -> None:
    public_key, _ = medium_keypair
    contributors = 3
    at_limit = sign * contributors * (2**52 + 1) % public_key.n
    past_limit = sign * (contributors * (2**52 + 1) + 1) % public_key.n

    decoded = DEFAULT.decode_vector([at_limit], public_key, contributors)

    assert decoded[0] == sign * contributors * (CLIP + UNIT)
    with pytest.raises(EncodingOverflowError):
        DEFAULT.decode_vector([past_limit], public_key, contributors)


@pytest.mark.parametrize(
    ("round_number", "text"),
    [
        pytest.param(7, "round 7, slot 2: ", id="with-round"),
        pytest.param(None, "slot 2: ", id="without-round"),
    ],
)
def test_overflow_error_names_round_and_slot(
    medium_keypair: Keypair, round_number: int | None, text: str
) -> None:
    public_key, _ = medium_keypair
    plaintexts = [0, SCALE, public_key.n // 2, 0]

    with pytest.raises(EncodingOverflowError) as caught:
        DEFAULT.decode_vector(plaintexts, public_key, contributors=2, round=round_number)

    assert caught.value.round == round_number
    assert caught.value.slot == 2
    assert str(caught.value).startswith(text)
    assert "contributors * clip" in str(caught.value)


def test_overflow_error_hides_plaintext(medium_keypair: Keypair) -> None:
    public_key, _ = medium_keypair
    plaintext = 2**100 + 12345

    with pytest.raises(EncodingOverflowError) as caught:
        DEFAULT.decode_vector([plaintext], public_key, contributors=1)

    assert str(plaintext) not in str(caught.value)


# With n = 323, frac_bits=0 and contributors=1, the limit is floor(clip) + 1
# and must stay below n // 2 = 161.
TINY_EXACT = FixedPointEncoding(frac_bits=0, clip=159.0)


@pytest.mark.parametrize(
    ("value", "plaintext"),
    [
        pytest.param(159.0, 159, id="clip"),
        pytest.param(-159.0, 323 - 159, id="minus-clip"),
        pytest.param(1.0, 1, id="one"),
        pytest.param(-1.0, 322, id="minus-one"),
        pytest.param(0.5, 0, id="half-rounds-to-even-zero"),
        pytest.param(1.5, 2, id="one-and-half-rounds-to-even-two"),
    ],
)
def test_tiny_key_encode_and_decode(tiny_keypair: Keypair, value: float, plaintext: int) -> None:
    public_key, _ = tiny_keypair

    encoded = encode_one(value, public_key, TINY_EXACT)
    decoded = TINY_EXACT.decode_vector([plaintext], public_key, contributors=1)

    assert encoded == plaintext
    assert decoded[0] == float(round(value))


@pytest.mark.parametrize(
    ("plaintext", "expected"),
    [
        pytest.param(160, 160.0, id="limit"),
        pytest.param(323 - 160, -160.0, id="minus-limit"),
    ],
)
def test_tiny_key_decode_at_limit(tiny_keypair: Keypair, plaintext: int, expected: float) -> None:
    decoded = TINY_EXACT.decode_vector([plaintext], tiny_keypair[0], contributors=1)

    assert decoded[0] == expected


@pytest.mark.parametrize(
    "plaintext",
    [
        pytest.param(161, id="n-half"),
        pytest.param(162, id="n-half-plus-one"),
        pytest.param(323 - 161, id="minus-n-half"),
    ],
)
def test_tiny_key_decode_past_limit_overflows(tiny_keypair: Keypair, plaintext: int) -> None:
    with pytest.raises(EncodingOverflowError):
        TINY_EXACT.decode_vector([plaintext], tiny_keypair[0], contributors=1)


def test_capacity_boundary_tiny_key(tiny_keypair: Keypair) -> None:
    public_key, _ = tiny_keypair
    too_wide = FixedPointEncoding(frac_bits=0, clip=160.0)

    TINY_EXACT.check_capacity(public_key, contributors=1)
    with pytest.raises(ConfigError):
        too_wide.check_capacity(public_key, contributors=1)
    with pytest.raises(ConfigError):
        TINY_EXACT.check_capacity(public_key, contributors=2)


@pytest.mark.parametrize(
    "operation",
    [pytest.param("encode", id="encode"), pytest.param("decode", id="decode")],
)
def test_default_encoding_rejects_tiny_key(tiny_keypair: Keypair, operation: str) -> None:
    public_key, _ = tiny_keypair

    with pytest.raises(ConfigError) as caught:
        if operation == "encode":
            DEFAULT.encode_vector(np.array([1.0]), public_key)
        else:
            DEFAULT.decode_vector([1], public_key, contributors=1)

    message = str(caught.value)
    assert "9-bit key is too small" in message
    assert "crypto.frac_bits" in message
    assert "crypto.clip" in message
    assert "crypto.key_bits" in message


def test_encode_checks_capacity_for_contributors(medium_keypair: Keypair) -> None:
    public_key, _ = medium_keypair
    # n // 2 is about 2**149 and each contributor needs 2**52 + 1, so 2**97
    # contributors cannot fit.
    contributors = 2**97

    with pytest.raises(ConfigError, match=f"sums of {contributors} values"):
        DEFAULT.encode_vector(np.array([1.0]), public_key, contributors=contributors)


def test_large_frac_bits_is_exact(keypair_2048: Keypair) -> None:
    public_key, _ = keypair_2048
    encoding = FixedPointEncoding(frac_bits=1000, clip=CLIP)
    values = np.array([2.0**-1000, -(2.0**-1000), CLIP, 1.0 / 3.0])

    encoded = encoding.encode_vector(values, public_key)
    decoded = encoding.decode_vector(encoded.plaintexts, public_key, contributors=4)

    assert encoded.plaintexts[0] == 1
    assert encoded.plaintexts[1] == public_key.n - 1
    assert encoded.plaintexts[2] == 2**1020
    assert decoded.tolist() == values.tolist()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        pytest.param({"frac_bits": -1}, "crypto.frac_bits", id="frac-bits-negative"),
        pytest.param({"frac_bits": 1.5}, "crypto.frac_bits", id="frac-bits-float"),
        pytest.param({"frac_bits": True}, "crypto.frac_bits", id="frac-bits-bool"),
        pytest.param({"clip": 0.0}, "crypto.clip", id="clip-zero"),
        pytest.param({"clip": -1.0}, "crypto.clip", id="clip-negative"),
        pytest.param({"clip": math.nan}, "crypto.clip", id="clip-nan"),
        pytest.param({"clip": math.inf}, "crypto.clip", id="clip-inf"),
        pytest.param({"clip": "big"}, "crypto.clip", id="clip-string"),
    ],
)
def test_encoding_rejects_invalid_settings(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FixedPointEncoding(**settings)


def test_encoding_accepts_integer_clip() -> None:
    assert FixedPointEncoding(clip=100).max_magnitude(2) == 2 * (100 * SCALE + 1)


@pytest.mark.parametrize(
    "contributors",
    [pytest.param(0, id="zero"), pytest.param(-1, id="negative"), pytest.param(True, id="bool")],
)
def test_decode_rejects_invalid_contributors(medium_keypair: Keypair, contributors: int) -> None:
    with pytest.raises(ValueError, match="contributors must be an integer >= 1"):
        DEFAULT.decode_vector([0], medium_keypair[0], contributors)


@pytest.mark.parametrize(
    "plaintext",
    [pytest.param(-1, id="negative"), pytest.param("n", id="n")],
)
def test_decode_rejects_plaintext_out_of_range(
    medium_keypair: Keypair, plaintext: int | str
) -> None:
    public_key, _ = medium_keypair
    value = public_key.n if plaintext == "n" else plaintext
    assert isinstance(value, int)

    with pytest.raises(ValueError, match=r"plaintexts\[1\] is outside \[0, n\)"):
        DEFAULT.decode_vector([0, value], public_key, contributors=1)


def test_decode_returns_float64_array(medium_keypair: Keypair) -> None:
    decoded = DEFAULT.decode_vector([SCALE, 0], medium_keypair[0], contributors=1)

    assert isinstance(decoded, np.ndarray)
    assert decoded.dtype == np.float64
    assert decoded.tolist() == [1.0, 0.0]


def test_decode_empty(medium_keypair: Keypair) -> None:
    decoded = DEFAULT.decode_vector([], medium_keypair[0], contributors=1)

    assert decoded.shape == (0,)


@pytest.mark.parametrize("length", [0, 1, 31])
def test_ciphertext_count_equals_length(length: int) -> None:
    assert DEFAULT.ciphertext_count(length) == length


def test_ciphertext_count_rejects_negative() -> None:
    with pytest.raises(ValueError, match="length must be non-negative"):
        DEFAULT.ciphertext_count(-1)
