"""A real Paillier key and helpers to encrypt and decrypt vectors in the protocol tests.

The key has 512 bits so that a whole test session generates it in milliseconds.
The default encoding (frac_bits=32, clip=2**20) fits sums of many contributors
under such a key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest

from gradchain.crypto import (
    FixedPointEncoding,
    PrivateKey,
    PublicKey,
    decrypt_vector,
    encrypt_vector,
    generate_keypair,
)

KEY_BITS = 512


@dataclass(frozen=True, kw_only=True)
class Paillier:
    """A key pair and the job's encoding, with the vector helpers the nodes use."""

    public_key: PublicKey
    private_key: PrivateKey
    encoding: FixedPointEncoding

    def encrypt(self, values: Sequence[float]) -> tuple[int, ...]:
        ciphertexts, clipped = encrypt_vector(self.public_key, self.encoding, np.asarray(values))
        assert clipped == 0, "test values must lie inside the encoding's clip range"
        return tuple(ciphertexts)

    def decrypt(self, ciphertexts: Sequence[int], contributors: int) -> npt.NDArray[np.float64]:
        return decrypt_vector(self.private_key, self.encoding, ciphertexts, contributors)


@pytest.fixture(scope="session")
def paillier() -> Paillier:
    public_key, private_key = generate_keypair(KEY_BITS)
    return Paillier(public_key=public_key, private_key=private_key, encoding=FixedPointEncoding())
