"""Encrypt, add and decrypt whole vectors, one ciphertext per value.

These helpers run in a single process and encrypt each value with its own
ciphertext. A 2048-bit encryption is one modular exponentiation with gmpy2,
so a vector of d values costs d of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from gradchain.crypto.encoding import FixedPointEncoding
from gradchain.crypto.paillier import PrivateKey, PublicKey
from gradchain.errors import CryptoError


def encrypt_vector(
    public_key: PublicKey,
    encoding: FixedPointEncoding,
    values: npt.ArrayLike,
) -> tuple[list[int], int]:
    """Encode and encrypt ``values`` and return the ciphertexts and the clipped count.

    Raises ValueError and ConfigError as :meth:`FixedPointEncoding.encode_vector` does.
    """
    encoded = encoding.encode_vector(values, public_key)
    ciphertexts = [public_key.raw_encrypt(plaintext) for plaintext in encoded.plaintexts]
    return ciphertexts, encoded.clipped


def add_vectors(public_key: PublicKey, a: Sequence[int], b: Sequence[int]) -> list[int]:
    """Add two encrypted vectors element by element with :meth:`PublicKey.raw_add`.

    Neither input is validated here, so ciphertexts from another party must
    pass :meth:`PublicKey.ciphertext_from_bytes` first.

    Raises ValueError when the lengths differ.
    """
    if len(a) != len(b):
        raise ValueError(f"cannot add encrypted vectors of lengths {len(a)} and {len(b)}")
    return [public_key.raw_add(x, y) for x, y in zip(a, b, strict=True)]


def decrypt_vector(
    private_key: PrivateKey,
    encoding: FixedPointEncoding,
    ciphertexts: Sequence[int],
    contributors: int,
    round: int | None = None,
) -> npt.NDArray[np.float64]:
    """Decrypt and decode a sum of ``contributors`` encrypted vectors.

    ``round`` only labels errors. Raises CryptoError naming the slot when a
    ciphertext is invalid, and EncodingOverflowError or ConfigError as
    :meth:`FixedPointEncoding.decode_vector` does.
    """
    # Checking the capacity first avoids decrypting a vector that cannot be decoded.
    encoding.check_capacity(private_key.public_key, contributors)

    plaintexts = []
    for slot, ciphertext in enumerate(ciphertexts):
        try:
            plaintexts.append(private_key.raw_decrypt(ciphertext))
        except CryptoError as exc:
            where = f"round {round}, slot {slot}" if round is not None else f"slot {slot}"
            raise CryptoError(f"{where}: {exc}") from exc
    return encoding.decode_vector(plaintexts, private_key.public_key, contributors, round)
