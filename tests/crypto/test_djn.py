"""Tests for DJN keys and obfuscators in gradchain.crypto.paillier and fixed_base."""

from __future__ import annotations

import math
import secrets

import pytest

from gradchain.crypto.fixed_base import FixedBaseTable
from gradchain.crypto.paillier import (
    MIN_OBFUSCATOR_BITS,
    PrivateKey,
    PublicKey,
    draw_djn_exponent,
    generate_keypair,
)
from gradchain.errors import CryptoError

Keypair = tuple[PublicKey, PrivateKey]


@pytest.fixture(scope="module")
def djn_512() -> Keypair:
    return generate_keypair(512, djn=True)


def is_quadratic_residue(value: int, prime: int) -> bool:
    """Apply Euler's criterion."""
    return pow(value, (prime - 1) // 2, prime) == 1


@pytest.mark.parametrize("bits", [64, 512, 2048])
def test_djn_key_meets_conditions(bits: int) -> None:
    public_key, private_key = generate_keypair(bits, djn=True)
    p, q, n = private_key.p, private_key.q, public_key.n

    assert p % 4 == 3
    assert q % 4 == 3
    assert math.gcd(p - 1, q - 1) == 2
    assert n.bit_length() == bits
    assert public_key.hs is not None
    assert 1 < public_key.hs < public_key.nsquare - 1


def test_djn_conditions_hold_for_many_small_keys() -> None:
    # Without the gcd check about one small key in five would have
    # gcd(p - 1, q - 1) > 2, so 60 keys catch a missing check almost surely.
    for _ in range(60):
        _, private_key = generate_keypair(64, djn=True)
        assert math.gcd(private_key.p - 1, private_key.q - 1) == 2
        assert private_key.p % 4 == 3
        assert private_key.q % 4 == 3


def test_djn_hs_is_power_of_minus_square(djn_512: Keypair) -> None:
    public_key, private_key = djn_512
    hs = public_key.hs
    assert hs is not None

    # hs = h**n with h = -x**2. Because -1 is a non-residue modulo a prime that
    # is 3 mod 4, h is a non-residue modulo p and q, and so is h**n for odd n.
    assert not is_quadratic_residue(hs % private_key.p, private_key.p)
    assert not is_quadratic_residue(hs % private_key.q, private_key.q)
    # hs is an n-th power modulo n**2, so it is an encryption of 0.
    assert private_key.raw_decrypt(hs) == 0


def test_distinct_djn_keys_have_distinct_hs() -> None:
    first, _ = generate_keypair(128, djn=True)
    second, _ = generate_keypair(128, djn=True)

    assert first.hs != second.hs


def test_plain_key_has_no_hs() -> None:
    public_key, private_key = generate_keypair(128, djn=False)

    assert public_key.hs is None
    assert not public_key.is_djn
    assert private_key.raw_decrypt(public_key.raw_encrypt(42)) == 42


def test_generated_primes_are_far_apart() -> None:
    _, private_key = generate_keypair(512, djn=True)

    assert abs(private_key.p - private_key.q).bit_length() > 256 - 100


def test_djn_ciphertext_decrypts_with_ordinary_decryption(djn_512: Keypair) -> None:
    public_key, private_key = djn_512
    messages = [0, 1, 2**200 + 12345, public_key.n - 1]

    ciphertexts = [public_key.raw_encrypt(m) for m in messages]

    assert [private_key.raw_decrypt(c) for c in ciphertexts] == messages
    assert private_key.raw_decrypt_batch(ciphertexts) == messages


def test_djn_ciphertext_decrypts_under_plain_key_with_same_n(djn_512: Keypair) -> None:
    public_key, private_key = djn_512
    plain_public = PublicKey(n=public_key.n)
    plain_private = PrivateKey(public_key=plain_public, p=private_key.p, q=private_key.q)

    ciphertext = public_key.raw_encrypt(777)

    assert plain_private.raw_decrypt(ciphertext) == 777
    assert plain_public.fingerprint == public_key.fingerprint


def test_djn_obfuscator_is_hs_power(djn_512: Keypair) -> None:
    public_key, private_key = djn_512
    assert public_key.hs is not None
    r = draw_djn_exponent(public_key.default_obfuscator_bits)
    obfuscator = pow(public_key.hs, r, public_key.nsquare)

    ciphertext = public_key.raw_encrypt_with_obfuscator(5, obfuscator)

    assert ciphertext == (1 + 5 * public_key.n) * obfuscator % public_key.nsquare
    assert private_key.raw_decrypt(ciphertext) == 5


def test_djn_ciphertexts_add_homomorphically(djn_512: Keypair) -> None:
    public_key, private_key = djn_512

    total = public_key.raw_add(public_key.raw_encrypt(20), public_key.raw_encrypt(22))

    assert private_key.raw_decrypt(total) == 42
    assert private_key.raw_decrypt(public_key.rerandomise(total)) == 42


def test_djn_encryptions_of_same_plaintext_differ(djn_512: Keypair) -> None:
    public_key, _ = djn_512

    assert public_key.raw_encrypt(9) != public_key.raw_encrypt(9)


@pytest.mark.parametrize(("bits", "expected"), [(2048, 1024), (3072, 1536), (64, 32)])
def test_default_obfuscator_bits_is_half_key(bits: int, expected: int) -> None:
    public_key = PublicKey(n=(1 << (bits - 1)) + 1)

    assert public_key.default_obfuscator_bits == expected


def test_default_obfuscator_bits_rounds_up_for_odd_length() -> None:
    assert PublicKey(n=(1 << 100) + 1).default_obfuscator_bits == 51


def test_resolve_obfuscator_bits(djn_512: Keypair) -> None:
    public_key, _ = djn_512

    assert public_key.resolve_obfuscator_bits(None) == 256
    assert public_key.resolve_obfuscator_bits(MIN_OBFUSCATOR_BITS) == 256
    assert public_key.resolve_obfuscator_bits(512) == 512


@pytest.mark.parametrize("bits", [255, 513, 0, True, 300.0])
def test_resolve_obfuscator_bits_rejects_out_of_range(djn_512: Keypair, bits: object) -> None:
    with pytest.raises(ValueError, match="obfuscator_bits"):
        djn_512[0].resolve_obfuscator_bits(bits)  # type: ignore[arg-type]


def test_obfuscator_bits_rejected_for_plain_key(medium_keypair: Keypair) -> None:
    with pytest.raises(ValueError, match="only to a DJN key"):
        medium_keypair[0].random_obfuscator(256)


def test_shorter_obfuscator_still_decrypts(keypair_2048: Keypair) -> None:
    public_key, private_key = keypair_2048
    obfuscator = public_key.random_obfuscator(MIN_OBFUSCATOR_BITS)

    ciphertext = public_key.raw_encrypt_with_obfuscator(31337, obfuscator)

    assert private_key.raw_decrypt(ciphertext) == 31337


def test_djn_exponent_in_range() -> None:
    draws = [draw_djn_exponent(8) for _ in range(2000)]

    assert min(draws) >= 1
    assert max(draws) < 256
    assert len(set(draws)) > 200


@pytest.mark.parametrize(
    "hs",
    [
        pytest.param(1, id="one"),
        pytest.param(0, id="zero"),
        pytest.param(323**2 - 1, id="minus-one"),
        pytest.param(323**2, id="n-squared"),
        pytest.param(17 * 5, id="shares-factor"),
    ],
)
def test_public_key_rejects_invalid_hs(hs: int) -> None:
    with pytest.raises(ValueError, match="hs must satisfy"):
        PublicKey(n=323, hs=hs)


def test_public_key_rejects_hs_of_wrong_type() -> None:
    with pytest.raises(TypeError, match="hs must be an int"):
        PublicKey(n=323, hs="5")  # type: ignore[arg-type]


def test_private_key_rejects_hs_that_is_not_encryption_of_zero(djn_512: Keypair) -> None:
    public_key, private_key = djn_512
    wrong = PublicKey(n=public_key.n, hs=public_key.raw_encrypt(1))

    with pytest.raises(CryptoError, match="does not decrypt to 0"):
        PrivateKey(public_key=wrong, p=private_key.p, q=private_key.q)


def test_djn_and_plain_keys_with_same_n_differ(djn_512: Keypair) -> None:
    public_key, _ = djn_512

    assert PublicKey(n=public_key.n) != public_key
    assert PublicKey(n=public_key.n, hs=public_key.hs) == public_key


# Fixed-base tables


@pytest.mark.parametrize("window_bits", [1, 4, 6, 8])
def test_fixed_base_table_matches_pow(window_bits: int) -> None:
    modulus = secrets.randbits(512) | 1
    base = secrets.randbelow(modulus)
    table = FixedBaseTable(base, modulus, 300, window_bits)

    exponents = [0, 1, 2, 2**window_bits, 2**300 - 1]
    exponents += [secrets.randbits(300) for _ in range(5)]
    for exponent in exponents:
        assert table.power(exponent) == pow(base, exponent, modulus)


def test_fixed_base_table_size() -> None:
    table = FixedBaseTable(3, 1009, 12, 4)

    assert table.entries == 3 * 15


@pytest.mark.parametrize("exponent", [-1, 2**12])
def test_fixed_base_table_rejects_exponent_out_of_range(exponent: int) -> None:
    table = FixedBaseTable(3, 1009, 12, 4)

    with pytest.raises(ValueError, match="exponent must satisfy"):
        table.power(exponent)


@pytest.mark.parametrize(
    ("modulus", "exponent_bits", "window_bits", "message"),
    [
        (1, 8, 4, "modulus"),
        (1009, 0, 4, "exponent_bits"),
        (1009, 8, 0, "window_bits"),
        (1009, 8, 13, "window_bits"),
    ],
)
def test_fixed_base_table_rejects_invalid_arguments(
    modulus: int, exponent_bits: int, window_bits: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        FixedBaseTable(3, modulus, exponent_bits, window_bits)
