"""Tests for gradchain.crypto.paillier.

Expected values come from the textbook formulas written out here with plain
``pow``, never from the code under test.
"""

from __future__ import annotations

import hashlib
import math

import pytest

from gradchain.crypto.paillier import PrivateKey, PublicKey, generate_keypair
from gradchain.errors import CryptoError

Keypair = tuple[PublicKey, PrivateKey]

TINY_N = 17 * 19
TINY_NSQUARE = TINY_N * TINY_N

SMALL_PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)


def textbook_encrypt(n: int, m: int, r: int) -> int:
    """Compute g**m * r**n mod n**2 with g = n + 1, without the 1 + m*n shortcut."""
    nsquare = n * n
    return pow(n + 1, m, nsquare) * pow(r, n, nsquare) % nsquare


def textbook_decrypt(p: int, q: int, c: int) -> int:
    """Decrypt with lambda = lcm(p - 1, q - 1) and mu = L(g**lambda mod n**2)**-1 mod n."""
    n = p * q
    nsquare = n * n
    lam = math.lcm(p - 1, q - 1)

    def l_function(x: int) -> int:
        return (x - 1) // n

    mu = pow(l_function(pow(n + 1, lam, nsquare)), -1, n)
    return l_function(pow(c, lam, nsquare)) * mu % n


def is_prime_miller_rabin(value: int) -> bool:
    """Miller-Rabin with the first 13 primes as bases, exact below 3.3 * 10**24."""
    if value < 2:
        return False
    for prime in SMALL_PRIMES:
        if value % prime == 0:
            return value == prime
    d, s = value - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for base in SMALL_PRIMES:
        x = pow(base, d, value)
        if x in (1, value - 1):
            continue
        for _ in range(s - 1):
            x = x * x % value
            if x == value - 1:
                break
        else:
            return False
    return True


# Known ciphertexts (m, r, c) for p = 17, q = 19: n = 323, n**2 = 104329, g = 324.
TINY_KNOWN_ANSWERS = [
    pytest.param(0, 1, 1, id="m0-r1"),
    pytest.param(0, 2, 9358, id="m0-r2"),
    pytest.param(1, 1, 324, id="m1-r1"),
    pytest.param(42, 5, 84326, id="m42-r5"),
    pytest.param(100, 7, 74871, id="m100-r7"),
    pytest.param(322, 2, 12265, id="m-max-r2"),
    pytest.param(161, 300, 85039, id="m-half-r300"),
    pytest.param(5, 322, 102713, id="m5-r-max"),
]


@pytest.mark.parametrize(("m", "r", "expected"), TINY_KNOWN_ANSWERS)
def test_known_answer_matches_textbook_formula(m: int, r: int, expected: int) -> None:
    assert textbook_encrypt(TINY_N, m, r) == expected


@pytest.mark.parametrize(("m", "r", "expected"), TINY_KNOWN_ANSWERS)
def test_raw_encrypt_known_answer(tiny_keypair: Keypair, m: int, r: int, expected: int) -> None:
    public_key, _ = tiny_keypair

    assert public_key.raw_encrypt(m, r) == expected


@pytest.mark.parametrize(("m", "r", "ciphertext"), TINY_KNOWN_ANSWERS)
def test_raw_decrypt_known_answer(tiny_keypair: Keypair, m: int, r: int, ciphertext: int) -> None:
    _, private_key = tiny_keypair

    assert private_key.raw_decrypt(ciphertext) == m


def test_raw_decrypt_every_plaintext_tiny_key(tiny_keypair: Keypair) -> None:
    public_key, private_key = tiny_keypair

    wrong = [m for m in range(TINY_N) if private_key.raw_decrypt(public_key.raw_encrypt(m)) != m]

    assert wrong == []


def test_raw_decrypt_matches_textbook_decryption(tiny_keypair: Keypair) -> None:
    _, private_key = tiny_keypair
    ciphertexts = [c for c in range(1, TINY_NSQUARE, 37) if math.gcd(c, TINY_N) == 1]

    mismatches = [
        c for c in ciphertexts if private_key.raw_decrypt(c) != textbook_decrypt(17, 19, c)
    ]

    assert len(ciphertexts) > 2000
    assert mismatches == []


def test_public_key_properties_tiny_key(tiny_keypair: Keypair) -> None:
    public_key, _ = tiny_keypair

    assert public_key.n == 323
    assert public_key.nsquare == 104329
    assert public_key.g == 324
    assert public_key.max_plaintext == 322
    # 104329 < 2**17, so it needs 3 bytes.
    assert public_key.ciphertext_bytes == 3


def test_fingerprint_is_sha256_of_n(medium_keypair: Keypair) -> None:
    public_key, _ = medium_keypair
    n_bytes = public_key.n.to_bytes((public_key.n.bit_length() + 7) // 8, "big")

    assert public_key.fingerprint == hashlib.sha256(n_bytes).hexdigest()[:16]


@pytest.mark.parametrize(
    ("n", "error"),
    [
        pytest.param(0, ValueError, id="zero"),
        pytest.param(2, ValueError, id="two"),
        pytest.param(-323, ValueError, id="negative"),
        pytest.param(True, TypeError, id="bool"),
        pytest.param(323.0, TypeError, id="float"),
    ],
)
def test_public_key_rejects_invalid_n(n: int, error: type[Exception]) -> None:
    with pytest.raises(error):
        PublicKey(n=n)


@pytest.mark.parametrize(
    "m",
    [
        pytest.param(0, id="zero"),
        pytest.param(1, id="one"),
        pytest.param(2, id="two"),
        pytest.param("half", id="n-half"),
        pytest.param("half+1", id="n-half-plus-one"),
        pytest.param("max", id="n-minus-one"),
    ],
)
@pytest.mark.parametrize("keypair_name", ["tiny_keypair", "medium_keypair", "keypair_2048"])
def test_round_trip_edge_plaintexts(
    request: pytest.FixtureRequest, keypair_name: str, m: int | str
) -> None:
    public_key, private_key = request.getfixturevalue(keypair_name)
    n = public_key.n
    plaintext = {"half": n // 2, "half+1": n // 2 + 1, "max": n - 1}.get(str(m), m)
    assert isinstance(plaintext, int)

    assert private_key.raw_decrypt(public_key.raw_encrypt(plaintext)) == plaintext


@pytest.mark.parametrize(
    "m",
    [
        pytest.param(-1, id="minus-one"),
        pytest.param(323, id="n"),
        pytest.param(324, id="n-plus-one"),
        pytest.param(10**9, id="huge"),
    ],
)
def test_raw_encrypt_rejects_plaintext_out_of_range(tiny_keypair: Keypair, m: int) -> None:
    public_key, _ = tiny_keypair

    with pytest.raises(ValueError, match=r"0 <= m < n"):
        public_key.raw_encrypt(m, 2)


@pytest.mark.parametrize(
    "r",
    [
        pytest.param(0, id="zero"),
        pytest.param(323, id="n"),
        pytest.param(-1, id="negative"),
        pytest.param(17, id="multiple-of-p"),
        pytest.param(19 * 3, id="multiple-of-q"),
    ],
)
def test_raw_encrypt_rejects_r_outside_units(tiny_keypair: Keypair, r: int) -> None:
    public_key, _ = tiny_keypair

    with pytest.raises(ValueError, match=r"Z\*_n"):
        public_key.raw_encrypt(1, r)


def test_raw_encrypt_draws_fresh_randomness(medium_keypair: Keypair) -> None:
    public_key, private_key = medium_keypair

    ciphertexts = {public_key.raw_encrypt(7) for _ in range(20)}

    assert len(ciphertexts) == 20
    assert {private_key.raw_decrypt(c) for c in ciphertexts} == {7}


def test_raw_encrypt_output_is_valid_ciphertext(tiny_keypair: Keypair) -> None:
    public_key, _ = tiny_keypair

    invalid = [
        m for m in range(TINY_N) if not public_key.is_valid_ciphertext(public_key.raw_encrypt(m))
    ]

    assert invalid == []


@pytest.mark.parametrize(
    ("m1", "m2"),
    [
        pytest.param(0, 0, id="zeros"),
        pytest.param(3, 4, id="small"),
        pytest.param(0, "max", id="zero-plus-max"),
        pytest.param("max", 1, id="wraps-to-zero"),
        pytest.param("max", "max", id="wraps-to-n-minus-two"),
        pytest.param("half", "half", id="halves"),
    ],
)
@pytest.mark.parametrize("keypair_name", ["tiny_keypair", "medium_keypair"])
def test_raw_add_decrypts_to_sum_mod_n(
    request: pytest.FixtureRequest, keypair_name: str, m1: int | str, m2: int | str
) -> None:
    public_key, private_key = request.getfixturevalue(keypair_name)
    n = public_key.n
    named = {"max": n - 1, "half": n // 2}
    a = named.get(str(m1), m1)
    b = named.get(str(m2), m2)
    assert isinstance(a, int)
    assert isinstance(b, int)

    total = public_key.raw_add(public_key.raw_encrypt(a), public_key.raw_encrypt(b))

    assert private_key.raw_decrypt(total) == (a + b) % n


def test_raw_add_known_answer(tiny_keypair: Keypair) -> None:
    public_key, _ = tiny_keypair

    # E(42, 5) * E(100, 7) mod n**2 = E(142, 35), because the r values multiply.
    total = public_key.raw_add(84326, 74871)

    assert total == textbook_encrypt(TINY_N, 142, 35)


@pytest.mark.parametrize(
    ("m", "k"),
    [
        pytest.param(5, 3, id="small"),
        pytest.param(7, 0, id="zero-factor"),
        pytest.param(7, 1, id="identity"),
        pytest.param(7, -1, id="negate"),
        pytest.param(9, -4, id="negative-factor"),
        pytest.param("max", 2, id="wraps"),
        pytest.param(1, "n", id="factor-n-gives-zero"),
    ],
)
@pytest.mark.parametrize("keypair_name", ["tiny_keypair", "medium_keypair"])
def test_raw_multiply_decrypts_to_product_mod_n(
    request: pytest.FixtureRequest, keypair_name: str, m: int | str, k: int | str
) -> None:
    public_key, private_key = request.getfixturevalue(keypair_name)
    n = public_key.n
    plaintext = n - 1 if m == "max" else m
    factor = n if k == "n" else k
    assert isinstance(plaintext, int)
    assert isinstance(factor, int)

    product = public_key.raw_multiply(public_key.raw_encrypt(plaintext), factor)

    assert private_key.raw_decrypt(product) == plaintext * factor % n


def test_raw_multiply_known_answer(tiny_keypair: Keypair) -> None:
    public_key, _ = tiny_keypair

    # E(42, 5)**3 = E(126, 125).
    assert public_key.raw_multiply(84326, 3) == textbook_encrypt(TINY_N, 126, 125)


def test_raw_multiply_negative_non_invertible(tiny_keypair: Keypair) -> None:
    public_key, _ = tiny_keypair

    with pytest.raises(CryptoError, match="non-invertible"):
        public_key.raw_multiply(17, -1)


def test_rerandomise_keeps_plaintext_changes_ciphertext(medium_keypair: Keypair) -> None:
    public_key, private_key = medium_keypair
    ciphertext = public_key.raw_encrypt(123456789)

    fresh = public_key.rerandomise(ciphertext)

    assert fresh != ciphertext
    assert public_key.is_valid_ciphertext(fresh)
    assert private_key.raw_decrypt(fresh) == 123456789


def test_rerandomise_of_unrandomised_zero(medium_keypair: Keypair) -> None:
    public_key, private_key = medium_keypair
    zero_without_randomness = public_key.raw_multiply(public_key.raw_encrypt(5), 0)

    fresh = public_key.rerandomise(zero_without_randomness)

    assert zero_without_randomness == 1
    assert fresh != 1
    assert private_key.raw_decrypt(fresh) == 0


@pytest.mark.parametrize(
    ("c", "valid"),
    [
        pytest.param(1, True, id="one"),
        pytest.param(2, True, id="two"),
        pytest.param(TINY_NSQUARE - 1, True, id="nsquare-minus-one"),
        pytest.param(0, False, id="zero"),
        pytest.param(-1, False, id="negative"),
        pytest.param(TINY_NSQUARE, False, id="nsquare"),
        pytest.param(TINY_NSQUARE + 1, False, id="nsquare-plus-one"),
        pytest.param(17, False, id="p"),
        pytest.param(19 * 5, False, id="multiple-of-q"),
        pytest.param(TINY_N, False, id="n"),
    ],
)
def test_is_valid_ciphertext(tiny_keypair: Keypair, c: int, valid: bool) -> None:
    public_key, _ = tiny_keypair

    assert public_key.is_valid_ciphertext(c) is valid


@pytest.mark.parametrize(
    "c",
    [
        pytest.param(0, id="zero"),
        pytest.param(-5, id="negative"),
        pytest.param(TINY_NSQUARE, id="nsquare"),
        pytest.param(TINY_NSQUARE + 10, id="above-nsquare"),
        pytest.param(17 * 3, id="shares-factor-p"),
        pytest.param(TINY_N, id="n"),
    ],
)
def test_raw_decrypt_rejects_invalid_ciphertext(tiny_keypair: Keypair, c: int) -> None:
    _, private_key = tiny_keypair

    with pytest.raises(CryptoError, match="not a valid ciphertext"):
        private_key.raw_decrypt(c)


def test_raw_decrypt_rejects_above_nsquare_2048(keypair_2048: Keypair) -> None:
    public_key, private_key = keypair_2048

    with pytest.raises(CryptoError, match="not a valid ciphertext"):
        private_key.raw_decrypt(public_key.nsquare + 1)


@pytest.mark.parametrize(
    ("c", "expected"),
    [
        pytest.param(1, b"\x00\x00\x01", id="one-padded"),
        pytest.param(324, b"\x00\x01\x44", id="g"),
        pytest.param(TINY_NSQUARE - 1, (TINY_NSQUARE - 1).to_bytes(3, "big"), id="max"),
    ],
)
def test_ciphertext_to_bytes_fixed_length(tiny_keypair: Keypair, c: int, expected: bytes) -> None:
    public_key, _ = tiny_keypair

    data = public_key.ciphertext_to_bytes(c)

    assert data == expected
    assert public_key.ciphertext_from_bytes(data) == c


def test_ciphertext_bytes_round_trip_2048(keypair_2048: Keypair) -> None:
    public_key, _ = keypair_2048
    ciphertexts = [1, public_key.raw_encrypt(0), public_key.raw_encrypt(public_key.n - 1)]

    for c in ciphertexts:
        data = public_key.ciphertext_to_bytes(c)
        assert len(data) == 512
        assert public_key.ciphertext_from_bytes(data) == c


@pytest.mark.parametrize(
    "c",
    [
        pytest.param(0, id="zero"),
        pytest.param(TINY_NSQUARE, id="nsquare"),
        pytest.param(17, id="p"),
    ],
)
def test_ciphertext_to_bytes_rejects_invalid(tiny_keypair: Keypair, c: int) -> None:
    public_key, _ = tiny_keypair

    with pytest.raises(CryptoError, match="not a valid ciphertext"):
        public_key.ciphertext_to_bytes(c)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x01", id="one-byte"),
        pytest.param(b"\x00\x01", id="two-bytes"),
        pytest.param(b"\x00\x00\x00\x01", id="four-bytes"),
    ],
)
def test_ciphertext_from_bytes_rejects_wrong_length(tiny_keypair: Keypair, data: bytes) -> None:
    public_key, _ = tiny_keypair

    with pytest.raises(CryptoError, match=f"has {len(data)} bytes, expected 3"):
        public_key.ciphertext_from_bytes(data)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x00\x00\x00", id="zero"),
        pytest.param(TINY_NSQUARE.to_bytes(3, "big"), id="nsquare"),
        pytest.param(b"\xff\xff\xff", id="all-ones"),
        pytest.param((17 * 2).to_bytes(3, "big"), id="shares-factor-p"),
    ],
)
def test_ciphertext_from_bytes_rejects_invalid_value(tiny_keypair: Keypair, data: bytes) -> None:
    public_key, _ = tiny_keypair

    with pytest.raises(CryptoError, match="invalid ciphertext"):
        public_key.ciphertext_from_bytes(data)


def test_private_key_text_hides_primes(keypair_2048: Keypair) -> None:
    public_key, private_key = keypair_2048
    texts = [repr(private_key), str(private_key), f"{private_key}", f"{private_key!r}"]

    for text in texts:
        for secret in (private_key.p, private_key.q):
            assert str(secret) not in text
            assert format(secret, "x") not in text
        assert public_key.fingerprint in text


def test_public_key_repr_shows_bits_and_fingerprint(keypair_2048: Keypair) -> None:
    public_key, _ = keypair_2048

    assert repr(public_key) == (
        f"PublicKey(bits=2048, fingerprint='{public_key.fingerprint}', djn=True)"
    )


@pytest.mark.parametrize(
    ("p", "q"),
    [
        pytest.param(17, 23, id="wrong-q"),
        pytest.param(1, 323, id="trivial-factor"),
        pytest.param(323, 1, id="trivial-factor-swapped"),
        pytest.param(-17, -19, id="negative"),
    ],
)
def test_private_key_rejects_wrong_factors(tiny_keypair: Keypair, p: int, q: int) -> None:
    public_key, _ = tiny_keypair

    with pytest.raises(CryptoError, match="do not match"):
        PrivateKey(public_key=public_key, p=p, q=q)


def test_private_key_accepts_swapped_primes(tiny_keypair: Keypair) -> None:
    public_key, _ = tiny_keypair

    private_key = PrivateKey(public_key=public_key, p=19, q=17)

    assert private_key.raw_decrypt(84326) == 42


def test_private_key_rejects_composite_factor() -> None:
    # 15 * 77 = 1155, with 15 composite and gcd(1155, 14 * 76) = 7.
    public_key = PublicKey(n=15 * 77)

    with pytest.raises(CryptoError, match=r"p of key \w+ is not prime"):
        PrivateKey(public_key=public_key, p=15, q=77)


def test_private_key_rejects_equal_primes() -> None:
    public_key = PublicKey(n=17 * 17)

    with pytest.raises(CryptoError, match="distinct"):
        PrivateKey(public_key=public_key, p=17, q=17)


def test_private_key_rejects_gcd_condition_failure() -> None:
    # p = 3 divides q - 1 = 6, so gcd(n, (p - 1) * (q - 1)) = 3.
    public_key = PublicKey(n=3 * 7)

    with pytest.raises(CryptoError, match=r"gcd\(n, \(p - 1\) \* \(q - 1\)\) == 1"):
        PrivateKey(public_key=public_key, p=3, q=7)


@pytest.mark.parametrize(
    "n_bits",
    [
        pytest.param(0, id="zero"),
        pytest.param(8, id="too-small"),
        pytest.param(14, id="just-below-minimum"),
        pytest.param(17, id="odd"),
        pytest.param(2047, id="odd-large"),
        pytest.param(-2048, id="negative"),
        pytest.param(2048.0, id="float"),
        pytest.param(True, id="bool"),
    ],
)
def test_generate_keypair_rejects_invalid_n_bits(n_bits: int) -> None:
    with pytest.raises(ValueError, match=f"got {n_bits!r}"):
        generate_keypair(n_bits)


@pytest.mark.parametrize("n_bits", [16, 18, 64, 256])
def test_generate_keypair_structure(n_bits: int) -> None:
    public_key, private_key = generate_keypair(n_bits)
    p, q = private_key.p, private_key.q

    assert public_key.n.bit_length() == n_bits
    assert p * q == public_key.n
    assert p != q
    assert p.bit_length() == n_bits // 2
    assert q.bit_length() == n_bits // 2
    assert p >> (n_bits // 2 - 2) == 0b11
    assert q >> (n_bits // 2 - 2) == 0b11
    assert is_prime_miller_rabin(p)
    assert is_prime_miller_rabin(q)
    assert math.gcd(public_key.n, (p - 1) * (q - 1)) == 1
    assert private_key.public_key is public_key


def test_generate_keypair_differs_between_calls() -> None:
    moduli = {generate_keypair(128)[0].n for _ in range(5)}

    assert len(moduli) == 5


def test_keypair_2048_structure(keypair_2048: Keypair) -> None:
    public_key, private_key = keypair_2048

    assert public_key.n.bit_length() == 2048
    assert private_key.p.bit_length() == 1024
    assert private_key.q.bit_length() == 1024
    assert public_key.ciphertext_bytes == 512
    assert is_prime_miller_rabin(private_key.p)
    assert is_prime_miller_rabin(private_key.q)


def test_keypair_2048_homomorphic_round_trip(keypair_2048: Keypair) -> None:
    public_key, private_key = keypair_2048
    n = public_key.n
    plaintexts = [0, 1, n - 1, n // 2, 2**64 + 12345]

    ciphertexts = [public_key.raw_encrypt(m) for m in plaintexts]
    total = ciphertexts[0]
    for c in ciphertexts[1:]:
        total = public_key.raw_add(total, c)

    assert [private_key.raw_decrypt(c) for c in ciphertexts] == plaintexts
    assert private_key.raw_decrypt(total) == sum(plaintexts) % n
    assert private_key.raw_decrypt(public_key.raw_multiply(ciphertexts[4], -3)) == (
        -3 * plaintexts[4] % n
    )
    assert private_key.raw_decrypt(public_key.rerandomise(ciphertexts[3])) == n // 2


def test_keypair_2048_decrypt_matches_textbook(keypair_2048: Keypair) -> None:
    public_key, private_key = keypair_2048
    ciphertext = public_key.raw_encrypt(987654321987654321, r=3)

    assert ciphertext == textbook_encrypt(public_key.n, 987654321987654321, 3)
    assert textbook_decrypt(private_key.p, private_key.q, ciphertext) == 987654321987654321
