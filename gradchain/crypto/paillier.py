"""Paillier public-key encryption on integers, with the homomorphic operations.

Notation used throughout this module:

* ``p`` and ``q`` are distinct primes of equal bit length, and ``n = p * q``.
  Key generation also requires ``gcd(n, (p - 1) * (q - 1)) == 1``.
* ``n**2`` is the ciphertext modulus. Ciphertexts are integers ``c`` with
  ``0 < c < n**2`` and ``gcd(c, n) == 1``, the group Z*_{n**2}.
* ``g = n + 1`` is the generator. ``Z*_n`` is the set of integers in
  ``[1, n)`` that are coprime to ``n``.
* A plaintext ``m`` is an integer with ``0 <= m < n``. Arithmetic on
  plaintexts is modulo ``n``, so a sum that reaches ``n`` wraps around.

Encryption of ``m`` with randomness ``r`` from Z*_n is
``E(m, r) = g**m * r**n mod n**2``. The scheme is additively homomorphic:

* ``E(m1) * E(m2) mod n**2`` decrypts to ``m1 + m2 mod n``.
* ``E(m)**k mod n**2`` decrypts to ``k * m mod n`` for any integer ``k``.
* ``E(m) * r**n mod n**2`` is a fresh-looking ciphertext of the same ``m``,
  because ``r**n`` is an encryption of 0.

The scheme is due to Pascal Paillier, "Public-Key Cryptosystems Based on
Composite Degree Residuosity Classes", EUROCRYPT 1999. :class:`PrivateKey`
derives the CRT decryption that it uses.

The ``raw_*`` methods take and return plain integers and do not pad, encode or
sign anything. ``raw_encrypt`` and ``raw_decrypt`` validate their inputs, but
``raw_add``, ``raw_multiply`` and ``rerandomise`` do not. Callers must validate
ciphertexts that arrive from other parties with
:meth:`PublicKey.is_valid_ciphertext` or :meth:`PublicKey.ciphertext_from_bytes`
before using them.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

from gradchain.crypto import _gmp
from gradchain.errors import CryptoError

logger = logging.getLogger(__name__)

DEFAULT_KEY_BITS = 2048
MIN_KEY_BITS = 16

# Hex digits of the SHA-256 digest shown as a key fingerprint (64 bits).
FINGERPRINT_HEX_DIGITS = 16


def _int_to_bytes(value: int) -> bytes:
    """Encode a non-negative integer as minimal-length big-endian bytes."""
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


@dataclass(frozen=True, kw_only=True)
class PublicKey:
    """Paillier public key: the modulus ``n = p * q``.

    ``repr`` shows the bit length and fingerprint instead of ``n``, so log
    lines stay short.
    """

    n: int
    _nsquare: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int):
            raise TypeError(f"n must be an int, got {type(self.n).__name__}")
        if self.n < 3:
            raise ValueError(f"n must be at least 3, got {self.n}")
        object.__setattr__(self, "_nsquare", self.n * self.n)

    def __repr__(self) -> str:
        return f"PublicKey(bits={self.n.bit_length()}, fingerprint={self.fingerprint!r})"

    @property
    def nsquare(self) -> int:
        """Ciphertext modulus ``n**2``."""
        return self._nsquare

    @property
    def g(self) -> int:
        """Generator ``n + 1``."""
        return self.n + 1

    @property
    def max_plaintext(self) -> int:
        """Largest plaintext, ``n - 1``."""
        return self.n - 1

    @property
    def ciphertext_bytes(self) -> int:
        """Byte length of ``n**2``, the fixed length of every serialised ciphertext."""
        return (self._nsquare.bit_length() + 7) // 8

    @property
    def fingerprint(self) -> str:
        """First 16 hex digits of SHA-256 over ``n`` in minimal big-endian bytes.

        The fingerprint identifies the key in logs and file names. It reveals
        nothing that ``n`` does not, and ``n`` is public.
        """
        digest = hashlib.sha256(_int_to_bytes(self.n)).hexdigest()
        return digest[:FINGERPRINT_HEX_DIGITS]

    def raw_encrypt(self, m: int, r: int | None = None) -> int:
        """Encrypt the plaintext ``m`` as ``c = g**m * r**n mod n**2``.

        ``m`` must satisfy ``0 <= m < n``. ``r`` must be in Z*_n. When ``r``
        is None, a fresh ``r`` is drawn uniformly from Z*_n with :mod:`secrets`.
        Pass ``r`` only for known-answer tests, because reusing ``r`` links
        ciphertexts.

        Raises ValueError when ``m`` or ``r`` is out of range.
        """
        if not 0 <= m < self.n:
            # The message gives the range but not m, because m is a plaintext.
            raise ValueError(
                f"plaintext must satisfy 0 <= m < n, where n has {self.n.bit_length()} bits"
            )
        if r is None:
            r = _gmp.random_unit(self.n)
        elif not (0 < r < self.n and _gmp.gcd(r, self.n) == 1):
            raise ValueError("r must be in Z*_n: 0 < r < n and gcd(r, n) == 1")

        # (n + 1)**m = 1 + m*n (mod n**2), because every binomial term with n**2 in it vanishes.
        g_to_m = (1 + m * self.n) % self._nsquare
        return g_to_m * _gmp.powmod(r, self.n, self._nsquare) % self._nsquare

    def raw_add(self, c1: int, c2: int) -> int:
        """Return ``c1 * c2 mod n**2``, a ciphertext of ``m1 + m2 mod n``."""
        return c1 * c2 % self._nsquare

    def raw_multiply(self, c: int, k: int) -> int:
        """Return ``c**k mod n**2``, a ciphertext of ``k * m mod n``.

        ``k`` is a plaintext integer and may be negative or zero. A negative
        ``k`` inverts ``c`` modulo ``n**2``, which needs a valid ciphertext.
        Multiplying by 0 gives ``1``, a ciphertext of 0 with no randomness, so
        callers that send the result to another party should
        :meth:`rerandomise` it first.

        Raises CryptoError when ``k`` is negative and ``c`` is not invertible.
        """
        try:
            return _gmp.powmod(c, k, self._nsquare)
        except ZeroDivisionError as exc:
            message = "cannot raise a non-invertible ciphertext to a negative power"
            raise CryptoError(message) from exc

    def rerandomise(self, c: int) -> int:
        """Multiply ``c`` by a fresh encryption of 0, ``r**n mod n**2``.

        The result decrypts to the same plaintext but cannot be linked to ``c``
        by anyone without the private key.
        """
        zero = self.raw_encrypt(0)
        return self.raw_add(c, zero)

    def is_valid_ciphertext(self, c: int) -> bool:
        """Test whether ``c`` is in Z*_{n**2}: ``0 < c < n**2`` and ``gcd(c, n) == 1``."""
        return 0 < c < self._nsquare and _gmp.gcd(c, self.n) == 1

    def ciphertext_to_bytes(self, c: int) -> bytes:
        """Serialise ``c`` as big-endian bytes of length :attr:`ciphertext_bytes`.

        Raises CryptoError when ``c`` is not a valid ciphertext for this key.
        """
        if not self.is_valid_ciphertext(c):
            raise CryptoError(
                f"not a valid ciphertext for key {self.fingerprint}: "
                "expected 0 < c < n**2 and gcd(c, n) == 1"
            )
        return c.to_bytes(self.ciphertext_bytes, "big")

    def ciphertext_from_bytes(self, data: bytes) -> int:
        """Parse a ciphertext written by :meth:`ciphertext_to_bytes`.

        Raises CryptoError when ``data`` has the wrong length or does not hold
        a valid ciphertext for this key.
        """
        if len(data) != self.ciphertext_bytes:
            raise CryptoError(
                f"ciphertext has {len(data)} bytes, expected {self.ciphertext_bytes} "
                f"for key {self.fingerprint}"
            )
        c = int.from_bytes(data, "big")
        if not self.is_valid_ciphertext(c):
            raise CryptoError(
                f"invalid ciphertext for key {self.fingerprint}: "
                "expected 0 < c < n**2 and gcd(c, n) == 1"
            )
        return c


def _l_function(x: int, prime: int) -> int:
    """Return ``L_prime(x) = (x - 1) // prime`` for ``x = 1 (mod prime)``."""
    return (x - 1) // prime


@dataclass(frozen=True, kw_only=True)
class PrivateKey:
    """Paillier private key: the primes ``p`` and ``q`` with ``p * q == public_key.n``.

    ``repr`` and ``str`` show only the public key, never ``p`` or ``q``.

    CRT decryption computes ``m`` modulo each prime and joins the two halves.
    For the prime ``p`` (and likewise for ``q``):

    * ``L_p(x) = (x - 1) / p``, defined for ``x = 1 (mod p)``.
    * ``h_p = L_p(g**(p - 1) mod p**2)**-1 mod p``, computed once here.
    * ``m_p = L_p(c**(p - 1) mod p**2) * h_p mod p``, which equals ``m mod p``.

    That works because ``r**(n*(p - 1)) = 1 (mod p**2)``, since the order of
    Z*_{p**2} is ``p * (p - 1)`` and divides ``n * (p - 1)``. What is left,
    ``g**(m*(p - 1)) = 1 + m*(p - 1)*n (mod p**2)``, gives
    ``L_p = m * (p - 1) * q mod p``, and ``h_p`` cancels the factor ``(p - 1) * q``.
    The Chinese remainder theorem then gives
    ``m = m_q + q * ((m_p - m_q) * q_inverse mod p)``, with ``q_inverse = q**-1 mod p``.
    """

    public_key: PublicKey
    p: int = field(repr=False)
    q: int = field(repr=False)
    _psquare: int = field(init=False, repr=False, compare=False)
    _qsquare: int = field(init=False, repr=False, compare=False)
    _hp: int = field(init=False, repr=False, compare=False)
    _hq: int = field(init=False, repr=False, compare=False)
    _q_inverse: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._check_factors()

        # For distinct primes p and q, (p - 1) * q is invertible modulo p and
        # q modulo p, so these inverses always exist.
        p, q = self.p, self.q
        g = self.public_key.g
        psquare = p * p
        qsquare = q * q
        hp = _gmp.invert(_l_function(_gmp.powmod(g, p - 1, psquare), p), p)
        hq = _gmp.invert(_l_function(_gmp.powmod(g, q - 1, qsquare), q), q)
        q_inverse = _gmp.invert(q, p)

        object.__setattr__(self, "_psquare", psquare)
        object.__setattr__(self, "_qsquare", qsquare)
        object.__setattr__(self, "_hp", hp)
        object.__setattr__(self, "_hq", hq)
        object.__setattr__(self, "_q_inverse", q_inverse)

    def __repr__(self) -> str:
        return f"PrivateKey(public_key={self.public_key!r})"

    def _check_factors(self) -> None:
        """Raise CryptoError unless p and q are distinct primes that form a Paillier key for n."""
        p, q, n = self.p, self.q, self.public_key.n
        fingerprint = self.public_key.fingerprint
        if p < 2 or q < 2 or p == q or p * q != n:
            raise CryptoError(
                f"p and q do not match public key {fingerprint}: "
                "expected two distinct factors with p * q == n"
            )
        for name, factor in (("p", p), ("q", q)):
            if not _gmp.is_probable_prime(factor):
                raise CryptoError(f"{name} of key {fingerprint} is not prime")
        if _gmp.gcd(n, (p - 1) * (q - 1)) != 1:
            raise CryptoError(
                f"p and q of key {fingerprint} do not form a Paillier key: "
                "expected gcd(n, (p - 1) * (q - 1)) == 1"
            )

    __str__ = __repr__

    def raw_decrypt(self, c: int) -> int:
        """Decrypt ``c`` with the CRT and return the plaintext in ``[0, n)``.

        Raises CryptoError when ``c`` is not in Z*_{n**2}.
        """
        if not self.public_key.is_valid_ciphertext(c):
            raise CryptoError(
                f"cannot decrypt: not a valid ciphertext for key {self.public_key.fingerprint} "
                "(expected 0 < c < n**2 and gcd(c, n) == 1)"
            )

        p, q = self.p, self.q
        cp = _gmp.powmod(c % self._psquare, p - 1, self._psquare)
        cq = _gmp.powmod(c % self._qsquare, q - 1, self._qsquare)
        mp = _l_function(cp, p) * self._hp % p
        mq = _l_function(cq, q) * self._hq % q
        return mq + q * ((mp - mq) * self._q_inverse % p)


def generate_keypair(n_bits: int = DEFAULT_KEY_BITS) -> tuple[PublicKey, PrivateKey]:
    """Generate a Paillier key pair whose modulus ``n`` has exactly ``n_bits`` bits.

    ``p`` and ``q`` are distinct random primes of ``n_bits / 2`` bits each,
    drawn with :mod:`secrets`, and ``gcd(n, (p - 1) * (q - 1)) == 1``. Both
    primes have their two top bits set, which makes ``n`` exactly ``n_bits`` long.
    ``n_bits`` must be even and at least 16. Keys below 2048 bits are only
    fit for tests.

    Raises ValueError for an invalid ``n_bits``.
    """
    if isinstance(n_bits, bool) or not isinstance(n_bits, int):
        raise ValueError(f"n_bits must be an even integer >= {MIN_KEY_BITS}, got {n_bits!r}")
    if n_bits < MIN_KEY_BITS or n_bits % 2 != 0:
        raise ValueError(f"n_bits must be an even integer >= {MIN_KEY_BITS}, got {n_bits}")

    prime_bits = n_bits // 2
    while True:
        p = _gmp.random_prime(prime_bits)
        q = _gmp.random_prime(prime_bits)
        if p == q:
            continue
        n = p * q
        # random_prime sets the two top bits, so n always has n_bits bits and
        # this check only guards that invariant.
        if n.bit_length() != n_bits:
            continue
        # Equal-size primes always pass this check, because p cannot divide
        # q - 1 when q < 2p. The check stays so the key's invariant is explicit.
        if _gmp.gcd(n, (p - 1) * (q - 1)) != 1:
            continue
        break

    public_key = PublicKey(n=n)
    private_key = PrivateKey(public_key=public_key, p=p, q=q)
    logger.debug("generated %d-bit Paillier key %s", n_bits, public_key.fingerprint)
    return public_key, private_key
