"""Typed wrappers around the gmpy2 calls that the Paillier code needs.

Every gmpy2 function call in gradchain is in this module. Most wrappers
convert their results with ``int()``, so code outside :mod:`gradchain.crypto`
works with plain Python ``int`` values. gmpy2 (checked with 2.3.2) ships
without type stubs, which is one more reason for the conversion.

The hot loops of gradchain.crypto (fixed-base exponentiation, obfuscating and
adding whole vectors) keep their operands as gmpy2 ``mpz`` values from
:func:`to_mpz` instead, because ``a * b % m`` on 4096-bit numbers takes about
4 microseconds with ``mpz`` operands and about 35 with Python ints (measured
on the 2-core AMD EPYC machine that runs benchmarks/crypto.py). Those values
are converted back with ``int()`` before they leave the package.

The ``*_list`` wrappers call gmpy2's ``powmod_base_list`` and
``powmod_exp_list``, which release the GIL while they compute, so several
threads can run them on several cores. ``gmpy2.powmod`` and the ``mpz``
operators keep the GIL. benchmarks/crypto.py measures both.

All randomness comes from :mod:`secrets`, which reads the operating system's
cryptographically secure generator.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

import gmpy2  # type: ignore[import-untyped]

#: An ``mpz`` value. gmpy2 has no type stubs, so the alias only documents intent.
Mpz = Any

# Rounds passed to gmpy2.is_prime, which calls GMP's mpz_probab_prime_p. Current
# GMP source (mpz/millerrabin.c) replaces the first 24 Miller-Rabin rounds with
# one Baillie-PSW test, so 40 means Baillie-PSW plus 16 Miller-Rabin rounds.
# Each such round lets a composite pass for at most 1/4 of the bases.
# gmpy2 2.3.2 reports GMP 6.3.0 in gmpy2.mp_version().
PRIMALITY_ROUNDS = 40


def powmod(base: int, exponent: int, modulus: int) -> int:
    """Return ``base ** exponent % modulus``.

    A negative exponent uses the modular inverse of ``base``. Raises
    ZeroDivisionError, as :func:`invert` does, when that inverse does not exist.
    """
    if exponent < 0:
        base = invert(base, modulus)
        exponent = -exponent
    return int(gmpy2.powmod(base, exponent, modulus))


def to_mpz(value: int) -> Mpz:
    """Convert ``value`` to a gmpy2 ``mpz`` for arithmetic in a hot loop."""
    return gmpy2.mpz(value)


def powmod_exp_list(base: int, exponents: Sequence[int], modulus: int) -> list[Mpz]:
    """Return ``[base**e % modulus for e in exponents]`` as ``mpz`` values, without the GIL.

    The exponents must be non-negative.
    """
    return list(gmpy2.powmod_exp_list(base, list(exponents), modulus))


def powmod_base_list(bases: Sequence[int], exponent: int, modulus: int) -> list[Mpz]:
    """Return ``[b**exponent % modulus for b in bases]`` as ``mpz`` values, without the GIL.

    The exponent must be non-negative.
    """
    return list(gmpy2.powmod_base_list(list(bases), exponent, modulus))


def invert(value: int, modulus: int) -> int:
    """Return the inverse of ``value`` modulo ``modulus``.

    Raises ZeroDivisionError when ``gcd(value, modulus) != 1``.
    """
    return int(gmpy2.invert(value, modulus))


def gcd(a: int, b: int) -> int:
    """Return the greatest common divisor of ``a`` and ``b``."""
    return int(gmpy2.gcd(a, b))


def is_probable_prime(value: int) -> bool:
    """Test ``value`` for primality with trial division, Baillie-PSW and Miller-Rabin.

    False means ``value`` is composite or less than 2. True means probably
    prime, because no composite is known to pass Baillie-PSW. The further
    Miller-Rabin rounds use pseudo-random bases chosen by GMP.
    """
    return bool(gmpy2.is_prime(value, PRIMALITY_ROUNDS))


def random_unit(modulus: int) -> int:
    """Draw ``r`` uniformly from Z*_modulus, the integers in [1, modulus) coprime to it.

    Candidates that share a factor with ``modulus`` are drawn again. For a
    Paillier modulus that happens with probability about 2 / sqrt(modulus).
    """
    if modulus < 2:
        raise ValueError(f"modulus must be at least 2, got {modulus}")
    while True:
        candidate = 1 + secrets.randbelow(modulus - 1)
        if gcd(candidate, modulus) == 1:
            return candidate


def random_prime(bits: int, *, blum: bool = False) -> int:
    """Draw a random prime of exactly ``bits`` bits whose two top bits are set.

    With the two top bits set, the product of two such primes has exactly
    ``2 * bits`` bits, because it is at least (1.5 * 2**(bits - 1))**2 = 2.25 * 2**(2*bits - 2).
    Each candidate is an odd number drawn uniformly from that range, so every
    prime in the range is equally likely. With ``blum`` the two low bits are
    set as well, so the prime is 3 mod 4, as Damgård-Jurik-Nielsen keys need.
    """
    if bits < 3:
        raise ValueError(f"bits must be at least 3, got {bits}")
    top_bits = 0b11 << (bits - 2)
    low_bits = 0b11 if blum else 0b01
    while True:
        candidate = secrets.randbits(bits) | top_bits | low_bits
        if is_probable_prime(candidate):
            return candidate
