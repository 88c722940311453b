"""Keys shared by the crypto tests.

The tiny and medium keys use fixed, well-known primes so that expected values
can be computed by hand. The 2048-bit key is generated once per session.
"""

from __future__ import annotations

import pytest

from gradchain.crypto.paillier import PrivateKey, PublicKey, generate_keypair

TINY_P = 17
TINY_Q = 19

# Mersenne primes 2**61 - 1 and 2**89 - 1 give a 150-bit n, large enough for
# the default encoding (frac_bits=32, clip=2**20) summed over many contributors.
MEDIUM_P = 2**61 - 1
MEDIUM_Q = 2**89 - 1


def make_keypair(p: int, q: int) -> tuple[PublicKey, PrivateKey]:
    public_key = PublicKey(n=p * q)
    return public_key, PrivateKey(public_key=public_key, p=p, q=q)


@pytest.fixture(scope="session")
def tiny_keypair() -> tuple[PublicKey, PrivateKey]:
    return make_keypair(TINY_P, TINY_Q)


@pytest.fixture(scope="session")
def medium_keypair() -> tuple[PublicKey, PrivateKey]:
    return make_keypair(MEDIUM_P, MEDIUM_Q)


@pytest.fixture(scope="session")
def keypair_2048() -> tuple[PublicKey, PrivateKey]:
    return generate_keypair(2048)
