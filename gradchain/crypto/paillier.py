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

Damgård-Jurik-Nielsen (DJN) obfuscators make encryption cheaper. A DJN key
has primes ``p = q = 3 (mod 4)`` with ``gcd(p - 1, q - 1) == 2``, and its public
key carries ``hs = h**n mod n**2`` for ``h = -x**2 mod n`` with ``x`` drawn from
Z*_n. Encryption then uses the obfuscator ``hs**r mod n**2`` with a random ``r``
of ``ceil(k / 2)`` bits, where ``k`` is the bit length of ``n``, in place of
``r**n mod n**2`` with ``r`` as long as ``n``. ``hs**r = (h**r)**n`` is an
encryption of 0 like ``r**n``, so a DJN ciphertext is an ordinary Paillier
ciphertext and decrypts without change. The construction is from Damgård,
Jurik and Nielsen, "A generalization of Paillier's public-key system with
applications to electronic voting", International Journal of Information
Security 9 (2010). The length ``ceil(k / 2)`` is what ABY's libdjn
(``rbits = ceil(bits / 2)``), Intel's IPCL (``m_randbits = m_bits >> 1``) and
SecretFlow HEU (``RandomExactBits(key_size / 2)``) use. Its security rests on
the assumption that ``hs**r`` with such a short ``r`` cannot be distinguished
from a random encryption of 0, which is stronger than the decisional
composite residuosity assumption behind plain Paillier.

NOTE: only the key owner can check that ``hs`` has the form above. A public
key checks ``1 < hs < n**2 - 1`` and ``gcd(hs, n) == 1``, and a
:class:`PrivateKey` checks that ``hs`` decrypts to 0, but a node that only has
the public key cannot rule out an ``hs`` of small order. Such an ``hs`` would
let anyone who sees a ciphertext learn its plaintext, so a node trusts the
learner's ``hs`` as it trusts the learner's ``n``.

The ``raw_*`` methods take and return plain integers and do not pad, encode or
sign anything. ``raw_encrypt`` and ``raw_decrypt`` validate their inputs, but
``raw_add``, ``raw_multiply``, ``rerandomise`` and
``raw_encrypt_with_obfuscator`` do not validate ciphertexts or obfuscators.
Callers must validate ciphertexts that arrive from other parties with
:meth:`PublicKey.is_valid_ciphertext`, :meth:`PublicKey.first_invalid_ciphertext`
or :meth:`PublicKey.ciphertext_from_bytes` before using them.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from gradchain.crypto import _gmp
from gradchain.errors import CryptoError

logger = logging.getLogger(__name__)

DEFAULT_KEY_BITS = 2048
MIN_KEY_BITS = 16

# Hex digits of the SHA-256 digest shown as a key fingerprint (64 bits).
FINGERPRINT_HEX_DIGITS = 16

#: Shortest DJN exponent ``r`` that :meth:`PublicKey.resolve_obfuscator_bits`
#: accepts when it is set explicitly. Generic discrete-logarithm algorithms
#: such as Pollard's lambda recover an ``r`` of ``t`` bits from ``hs**r`` in
#: about ``2**(t / 2)`` steps, so 256 bits keep that at ``2**128``.
MIN_OBFUSCATOR_BITS = 256

#: Key generation rejects primes closer than ``2**(prime_bits - PRIME_GAP_MARGIN_BITS)``,
#: because Fermat's method factors ``n`` quickly when ``|p - q|`` is small.
#: Intel's IPCL (ipcl/keygen.cpp) uses the same margin of 100 bits.
PRIME_GAP_MARGIN_BITS = 100


def _int_to_bytes(value: int) -> bytes:
    """Encode a non-negative integer as minimal-length big-endian bytes."""
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


@dataclass(frozen=True, kw_only=True)
class PublicKey:
    """Paillier public key: the modulus ``n = p * q`` and, for a DJN key, ``hs``.

    ``hs`` is None for a plain Paillier key. A key with ``hs`` encrypts with
    DJN obfuscators ``hs**r mod n**2`` (see the module docstring). ``repr``
    shows the bit length and fingerprint instead of ``n``, so log lines stay
    short.

    Raises TypeError or ValueError when ``n`` or ``hs`` is out of range.
    """

    n: int
    hs: int | None = None
    _nsquare: int = field(init=False, repr=False, compare=False)
    _n_mpz: _gmp.Mpz = field(init=False, repr=False, compare=False)
    _nsquare_mpz: _gmp.Mpz = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int):
            raise TypeError(f"n must be an int, got {type(self.n).__name__}")
        if self.n < 3:
            raise ValueError(f"n must be at least 3, got {self.n}")
        nsquare = self.n * self.n
        object.__setattr__(self, "_nsquare", nsquare)
        object.__setattr__(self, "_n_mpz", _gmp.to_mpz(self.n))
        object.__setattr__(self, "_nsquare_mpz", _gmp.to_mpz(nsquare))

        hs = self.hs
        if hs is None:
            return
        if isinstance(hs, bool) or not isinstance(hs, int):
            raise TypeError(f"hs must be an int or None, got {type(hs).__name__}")
        if not (1 < hs < nsquare - 1 and _gmp.gcd(hs, self.n) == 1):
            raise ValueError("hs must satisfy 1 < hs < n**2 - 1 and gcd(hs, n) == 1")

    def __repr__(self) -> str:
        return (
            f"PublicKey(bits={self.n.bit_length()}, fingerprint={self.fingerprint!r}, "
            f"djn={self.is_djn})"
        )

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

        The fingerprint identifies the key in logs and file names. It covers
        ``n`` only, so a DJN key and the plain key with the same ``n`` share
        it, as they share the private key. It reveals nothing that ``n`` does
        not, and ``n`` is public.
        """
        digest = hashlib.sha256(_int_to_bytes(self.n)).hexdigest()
        return digest[:FINGERPRINT_HEX_DIGITS]

    @property
    def is_djn(self) -> bool:
        """Whether the key carries ``hs`` and encrypts with DJN obfuscators."""
        return self.hs is not None

    @property
    def default_obfuscator_bits(self) -> int:
        """Default bit length of the DJN exponent ``r``: ``ceil(k / 2)`` for a ``k``-bit ``n``."""
        return (self.n.bit_length() + 1) // 2

    def resolve_obfuscator_bits(self, obfuscator_bits: int | None) -> int:
        """Return the DJN exponent length to use, checking an explicit ``obfuscator_bits``.

        None gives :attr:`default_obfuscator_bits`. An explicit value must lie
        between ``min(MIN_OBFUSCATOR_BITS, default)`` and the bit length of
        ``n``. Values below the default are a documented option that trades
        security margin for speed (see the module docstring). Raises
        ValueError for a plain key with an explicit value, or a value out of range.
        """
        default = self.default_obfuscator_bits
        if obfuscator_bits is None:
            return default
        if not self.is_djn:
            raise ValueError("obfuscator_bits applies only to a DJN key, which has hs")
        if isinstance(obfuscator_bits, bool) or not isinstance(obfuscator_bits, int):
            raise ValueError(f"obfuscator_bits must be an integer, got {obfuscator_bits!r}")
        low = min(MIN_OBFUSCATOR_BITS, default)
        high = self.n.bit_length()
        if not low <= obfuscator_bits <= high:
            raise ValueError(
                f"obfuscator_bits must be between {low} and {high} for a {high}-bit key, "
                f"got {obfuscator_bits}"
            )
        return obfuscator_bits

    def random_obfuscator(self, obfuscator_bits: int | None = None) -> int:
        """Compute a fresh obfuscator, an encryption of 0 to multiply a ciphertext with.

        A DJN key returns ``hs**r mod n**2`` with ``r`` drawn uniformly from
        ``[1, 2**obfuscator_bits)``. A plain key returns ``r**n mod n**2`` with
        ``r`` drawn uniformly from Z*_n. Both draws use :mod:`secrets`. Each
        obfuscator must be used for one ciphertext only, because two
        ciphertexts with the same obfuscator can be linked.
        """
        if self.hs is None:
            self.resolve_obfuscator_bits(obfuscator_bits)
            return _gmp.powmod(_gmp.random_unit(self.n), self.n, self._nsquare)
        bits = self.resolve_obfuscator_bits(obfuscator_bits)
        return _gmp.powmod(self.hs, draw_djn_exponent(bits), self._nsquare)

    def raw_encrypt(self, m: int, r: int | None = None) -> int:
        """Encrypt the plaintext ``m`` as ``c = g**m * obfuscator mod n**2``.

        ``m`` must satisfy ``0 <= m < n``. When ``r`` is None, the obfuscator
        comes from :meth:`random_obfuscator`, so a DJN key uses a DJN
        obfuscator. A given ``r`` must be in Z*_n and gives the plain Paillier
        obfuscator ``r**n``, also for a DJN key. Pass ``r`` only for
        known-answer tests, because reusing ``r`` links ciphertexts.

        Raises ValueError when ``m`` or ``r`` is out of range.
        """
        self._check_plaintext(m)
        if r is None:
            obfuscator = self.random_obfuscator()
        elif 0 < r < self.n and _gmp.gcd(r, self.n) == 1:
            obfuscator = _gmp.powmod(r, self.n, self._nsquare)
        else:
            raise ValueError("r must be in Z*_n: 0 < r < n and gcd(r, n) == 1")
        return self.raw_encrypt_with_obfuscator(m, obfuscator)

    def raw_encrypt_with_obfuscator(self, m: int, obfuscator: int) -> int:
        """Encrypt ``m`` as ``(1 + m*n) * obfuscator mod n**2``.

        ``obfuscator`` must come from :meth:`random_obfuscator` or an
        :class:`~gradchain.crypto.obfuscators.ObfuscatorPool` of this key and
        must not have been used before. It is not validated.
        Raises ValueError when ``m`` is out of range.
        """
        self._check_plaintext(m)
        # (n + 1)**m = 1 + m*n (mod n**2), because every binomial term with n**2
        # in it vanishes. With m < n, 1 + m*n < n**2 needs no reduction.
        g_to_m = 1 + m * self._n_mpz
        return int(g_to_m * obfuscator % self._nsquare_mpz)

    def _check_plaintext(self, m: int) -> None:
        if not 0 <= m < self.n:
            # The message gives the range but not m, because m is a plaintext.
            raise ValueError(
                f"plaintext must satisfy 0 <= m < n, where n has {self.n.bit_length()} bits"
            )

    def raw_add(self, c1: int, c2: int) -> int:
        """Return ``c1 * c2 mod n**2``, a ciphertext of ``m1 + m2 mod n``."""
        return int(_gmp.to_mpz(c1) * c2 % self._nsquare_mpz)

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
        """Multiply ``c`` by a fresh obfuscator from :meth:`random_obfuscator`.

        The result decrypts to the same plaintext but cannot be linked to ``c``
        by anyone without the private key.
        """
        return self.raw_add(c, self.random_obfuscator())

    def is_valid_ciphertext(self, c: int) -> bool:
        """Test whether ``c`` is in Z*_{n**2}: ``0 < c < n**2`` and ``gcd(c, n) == 1``."""
        return 0 < c < self._nsquare and _gmp.gcd(c, self.n) == 1

    def first_invalid_ciphertext(self, ciphertexts: Sequence[int]) -> int | None:
        """Return the index of the first ciphertext outside Z*_{n**2}, or None if all are valid.

        Equivalent to :meth:`is_valid_ciphertext` on each item, but faster for
        long vectors: the product of all ciphertexts modulo ``n`` shares a
        factor with ``n`` exactly when one of them does, because ``p`` and ``q``
        are prime. So one gcd replaces one per ciphertext, and the items are
        tested one by one only when that gcd fails.
        """
        product = _gmp.to_mpz(1)
        n = self._n_mpz
        nsquare = self._nsquare
        for index, c in enumerate(ciphertexts):
            if not 0 < c < nsquare:
                return index
            # Reducing c first makes both factors as long as n, which is faster.
            product = product * (_gmp.to_mpz(c) % n) % n
        if _gmp.gcd(product, self.n) == 1:
            return None
        for index, c in enumerate(ciphertexts):
            if _gmp.gcd(c, self.n) != 1:
                return index
        raise AssertionError("the product of the ciphertexts shares a factor with n, but none does")

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


def draw_djn_exponent(bits: int) -> int:
    """Draw a DJN exponent ``r`` uniformly from ``[1, 2**bits)`` with :mod:`secrets`.

    ``r = 0`` is left out because ``hs**0 = 1`` would leave the ciphertext
    unobfuscated.
    """
    return 1 + secrets.randbelow((1 << bits) - 1)


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

    For a DJN public key the constructor also checks that ``hs`` decrypts to
    0, which shows that it is an ``n``-th power and so an encryption of 0.
    """

    public_key: PublicKey
    p: int = field(repr=False)
    q: int = field(repr=False)
    _psquare: int = field(init=False, repr=False, compare=False)
    _qsquare: int = field(init=False, repr=False, compare=False)
    _hp: int = field(init=False, repr=False, compare=False)
    _hq: int = field(init=False, repr=False, compare=False)
    _q_inverse: int = field(init=False, repr=False, compare=False)
    _crt: tuple[_gmp.Mpz, ...] = field(init=False, repr=False, compare=False)

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
        crt = tuple(_gmp.to_mpz(v) for v in (p, q, psquare, qsquare, hp, hq, q_inverse))
        object.__setattr__(self, "_crt", crt)

        hs = self.public_key.hs
        if hs is not None and self.raw_decrypt(hs) != 0:
            raise CryptoError(
                f"hs of key {self.public_key.fingerprint} does not decrypt to 0, "
                "so it is not a valid DJN obfuscator base for this key"
            )

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

    def raw_decrypt_batch(self, ciphertexts: Sequence[int]) -> list[int]:
        """Decrypt several ciphertexts with the CRT, as :meth:`raw_decrypt` does for one.

        The two modular exponentiations per ciphertext run in gmpy2's
        ``powmod_base_list``, which releases the GIL, so threads that call this
        method on separate slices use separate cores.

        Raises CryptoError naming the index of the first ciphertext that is
        not in Z*_{n**2}.
        """
        invalid = self.public_key.first_invalid_ciphertext(ciphertexts)
        if invalid is not None:
            raise CryptoError(
                f"cannot decrypt ciphertext {invalid}: not a valid ciphertext for key "
                f"{self.public_key.fingerprint} (expected 0 < c < n**2 and gcd(c, n) == 1)"
            )

        p, q, psquare, qsquare, hp, hq, q_inverse = self._crt
        cps = _gmp.powmod_base_list([c % psquare for c in ciphertexts], self.p - 1, psquare)
        cqs = _gmp.powmod_base_list([c % qsquare for c in ciphertexts], self.q - 1, qsquare)
        plaintexts = []
        for cp, cq in zip(cps, cqs, strict=True):
            mp = (cp - 1) // p * hp % p
            mq = (cq - 1) // q * hq % q
            plaintexts.append(int(mq + q * ((mp - mq) * q_inverse % p)))
        return plaintexts


def generate_keypair(
    n_bits: int = DEFAULT_KEY_BITS, *, djn: bool = True
) -> tuple[PublicKey, PrivateKey]:
    """Generate a Paillier key pair whose modulus ``n`` has exactly ``n_bits`` bits.

    ``p`` and ``q`` are distinct random primes of ``n_bits / 2`` bits each,
    drawn with :mod:`secrets`, and ``gcd(n, (p - 1) * (q - 1)) == 1``. Both
    primes have their two top bits set, which makes ``n`` exactly ``n_bits``
    long, and they differ by more than ``2**(n_bits / 2 - 100)`` when
    ``n_bits / 2 > 100``. ``n_bits`` must be even and at least 16. Keys below
    2048 bits are only fit for tests.

    With ``djn`` (the default) the primes also satisfy ``p = q = 3 (mod 4)``
    and ``gcd(p - 1, q - 1) == 2``, and the public key carries
    ``hs = h**n mod n**2`` with ``h = -x**2 mod n`` for a random ``x`` in
    Z*_n. Without it the public key is a plain Paillier key with ``hs`` None.

    Raises ValueError for an invalid ``n_bits``.
    """
    if isinstance(n_bits, bool) or not isinstance(n_bits, int):
        raise ValueError(f"n_bits must be an even integer >= {MIN_KEY_BITS}, got {n_bits!r}")
    if n_bits < MIN_KEY_BITS or n_bits % 2 != 0:
        raise ValueError(f"n_bits must be an even integer >= {MIN_KEY_BITS}, got {n_bits}")

    prime_bits = n_bits // 2
    while True:
        p = _gmp.random_prime(prime_bits, blum=djn)
        q = _gmp.random_prime(prime_bits, blum=djn)
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
        if djn and _gmp.gcd(p - 1, q - 1) != 2:
            continue
        if (
            prime_bits > PRIME_GAP_MARGIN_BITS
            and abs(p - q) >> (prime_bits - PRIME_GAP_MARGIN_BITS) == 0
        ):
            continue
        break

    hs = _djn_base(n) if djn else None
    public_key = PublicKey(n=n, hs=hs)
    private_key = PrivateKey(public_key=public_key, p=p, q=q)
    kind = "DJN Paillier" if djn else "Paillier"
    logger.debug("generated %d-bit %s key %s", n_bits, kind, public_key.fingerprint)
    return public_key, private_key


def _djn_base(n: int) -> int:
    """Return ``hs = h**n mod n**2`` for ``h = -x**2 mod n`` with ``x`` drawn from Z*_n."""
    nsquare = n * n
    while True:
        x = _gmp.random_unit(n)
        h = -x * x % n
        hs = _gmp.powmod(h, n, nsquare)
        # hs is 1 or n**2 - 1 only when h is 1 or n - 1, which for a random x
        # happens with negligible probability. PublicKey rejects those values.
        if 1 < hs < nsquare - 1:
            return hs
