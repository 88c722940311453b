"""Paillier encryption, key files and fixed-point encoding for gradchain.

Only the learner has a :class:`PrivateKey`. Providers and aggregators use
the :class:`PublicKey` to encrypt their contributions and to add ciphertexts.
"""

from gradchain.crypto.encoding import EncodedVector, FixedPointEncoding
from gradchain.crypto.keyfile import (
    load_private_key,
    load_public_key,
    save_private_key,
    save_public_key,
)
from gradchain.crypto.paillier import PrivateKey, PublicKey, generate_keypair
from gradchain.crypto.vector import add_vectors, decrypt_vector, encrypt_vector

__all__ = [
    "EncodedVector",
    "FixedPointEncoding",
    "PrivateKey",
    "PublicKey",
    "add_vectors",
    "decrypt_vector",
    "encrypt_vector",
    "generate_keypair",
    "load_private_key",
    "load_public_key",
    "save_private_key",
    "save_public_key",
]
