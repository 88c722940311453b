"""Paillier encryption, key files and fixed-point encodings for gradchain.

Only the learner has a :class:`PrivateKey`. Providers and aggregators use
the :class:`PublicKey` to encrypt their contributions and to add ciphertexts.
A provider keeps an :class:`ObfuscatorPool` so that encrypting a
contribution costs one multiplication per ciphertext once the pool is full.
"""

from gradchain.crypto.encoding import EncodedVector, Encoding, FixedPointEncoding
from gradchain.crypto.keyfile import (
    load_private_key,
    load_public_key,
    save_private_key,
    save_public_key,
)
from gradchain.crypto.obfuscators import ObfuscatorPool, ObfuscatorStats
from gradchain.crypto.packing import PackedEncoding
from gradchain.crypto.paillier import PrivateKey, PublicKey, generate_keypair
from gradchain.crypto.settings import make_encoding, make_obfuscator_pool
from gradchain.crypto.vector import (
    add_vectors,
    decrypt_ciphertexts,
    decrypt_vector,
    encode_unencrypted_vector,
    encrypt_portions,
    encrypt_vector,
    open_unencrypted_vector,
)

__all__ = [
    "EncodedVector",
    "Encoding",
    "FixedPointEncoding",
    "ObfuscatorPool",
    "ObfuscatorStats",
    "PackedEncoding",
    "PrivateKey",
    "PublicKey",
    "add_vectors",
    "decrypt_ciphertexts",
    "decrypt_vector",
    "encode_unencrypted_vector",
    "encrypt_portions",
    "encrypt_vector",
    "generate_keypair",
    "load_private_key",
    "load_public_key",
    "make_encoding",
    "make_obfuscator_pool",
    "open_unencrypted_vector",
    "save_private_key",
    "save_public_key",
]
