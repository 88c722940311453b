"""Encrypt, add and decrypt whole vectors under any :class:`~gradchain.crypto.encoding.Encoding`.

:func:`encrypt_vector` takes its obfuscators from an
:class:`~gradchain.crypto.obfuscators.ObfuscatorPool` when one is given, so
that its online part is one multiplication modulo ``n**2`` per ciphertext.
:func:`decrypt_vector` splits the CRT exponentiations across threads that
call gmpy2's GIL-releasing ``powmod_base_list``, one thread per core by
default. Both functions block, and the daemons call them in a worker thread.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt

from gradchain.crypto import _gmp
from gradchain.crypto.encoding import Encoding
from gradchain.crypto.obfuscators import ObfuscatorPool, shared_source
from gradchain.crypto.paillier import PrivateKey, PublicKey
from gradchain.errors import CryptoError

#: Ciphertexts below which decrypt_vector stays in the calling thread,
#: because starting threads costs more than it saves.
MIN_CIPHERTEXTS_PER_THREAD = 4


def encrypt_vector(
    public_key: PublicKey,
    encoding: Encoding,
    values: npt.ArrayLike,
    *,
    obfuscators: ObfuscatorPool | None = None,
    contributors: int = 1,
) -> tuple[list[int], int]:
    """Encode and encrypt ``values`` and return the ciphertexts and the clipped count.

    ``obfuscators`` supplies precomputed obfuscators and must belong to
    ``public_key``. Without it every obfuscator is computed on the spot in
    this thread, with a fixed-base table for a DJN key that is kept per key
    across calls. ``contributors`` is passed to the encoding (see
    :meth:`Encoding.encode_vector`).

    Raises ValueError and ConfigError as the encoding's ``encode_vector``
    does, and ValueError when ``obfuscators`` belongs to another key.
    """
    split, clipped = encrypt_portions(
        public_key,
        encoding,
        values,
        1,
        obfuscators=obfuscators,
        contributors=contributors,
    )
    return split[0], clipped


def encrypt_portions(
    public_key: PublicKey,
    encoding: Encoding,
    values: npt.ArrayLike,
    portions: int,
    *,
    obfuscators: ObfuscatorPool | None = None,
    contributors: int = 1,
    encrypt: bool = True,
) -> tuple[list[list[int]], int]:
    """Encode ``values``, split each plaintext into ``portions`` random shares and encrypt them.

    The first ``portions - 1`` shares of a plaintext m are drawn uniformly
    from [0, n) with a cryptographic random source, and the last is m minus
    their sum mod n. Any ``portions - 1`` shares are therefore independent of
    m, and only the sum of all of them, which Paillier computes by adding the
    ciphertexts, gives m back. Returns one ciphertext vector per portion and
    the clipped count. ``encrypt=False`` encodes each share as
    :func:`encode_unencrypted_vector` does, for benchmarks only. Other
    arguments and errors are as for :func:`encrypt_vector`, plus ValueError
    for ``portions < 1``.
    """
    if isinstance(portions, bool) or not isinstance(portions, int) or portions < 1:
        raise ValueError(f"portions must be an integer >= 1, got {portions!r}")
    if obfuscators is not None and obfuscators.public_key != public_key:
        raise ValueError(
            f"the obfuscator pool belongs to key {obfuscators.public_key.fingerprint}, "
            f"not to key {public_key.fingerprint}"
        )
    encoded = encoding.encode_vector(values, public_key, contributors=contributors)
    n = public_key.n
    shares: list[list[int]] = [[] for _ in range(portions)]
    for plaintext in encoded.plaintexts:
        drawn = [secrets.randbelow(n) for _ in range(portions - 1)]
        for portion, share in enumerate(drawn):
            shares[portion].append(share)
        shares[-1].append((plaintext - sum(drawn)) % n)
    count = len(encoded.plaintexts) * portions
    if not encrypt:
        masks = [1] * count
    elif obfuscators is not None:
        masks = obfuscators.take(count)
    else:
        masks = shared_source(public_key).compute(count)
    width = len(encoded.plaintexts)
    ciphertexts = [
        [
            public_key.raw_encrypt_with_obfuscator(share, mask)
            for share, mask in zip(
                portion_shares, masks[index * width : (index + 1) * width], strict=True
            )
        ]
        for index, portion_shares in enumerate(shares)
    ]
    return ciphertexts, encoded.clipped


def encode_unencrypted_vector(
    public_key: PublicKey,
    encoding: Encoding,
    values: npt.ArrayLike,
    *,
    contributors: int = 1,
) -> tuple[list[int], int]:
    """Encode ``values`` as Paillier ciphertexts without an obfuscator, for benchmarks only.

    Each ciphertext is ``1 + m*n mod n**2``, a valid ciphertext that anyone
    can read as ``(c - 1) / n``, so this is no encryption at all. Sums of
    such ciphertexts travel and add exactly like encrypted ones, which makes
    them a plaintext reference with the same message sizes and additions.
    Returns the ciphertexts and the clipped count, as :func:`encrypt_vector` does.
    """
    split, clipped = encrypt_portions(
        public_key, encoding, values, 1, contributors=contributors, encrypt=False
    )
    return split[0], clipped


def open_unencrypted_vector(
    public_key: PublicKey,
    encoding: Encoding,
    ciphertexts: Sequence[int],
    contributors: int,
    round: int | None = None,
    *,
    length: int | None = None,
) -> npt.NDArray[np.float64]:
    """Read a sum of vectors from :func:`encode_unencrypted_vector` without the private key.

    A product of ciphertexts ``1 + m_i*n`` is ``1 + (Σ m_i)*n mod n**2``, so
    ``(c - 1) // n`` is the plaintext total. Arguments and errors are as for
    :func:`decrypt_vector`, plus CryptoError for a ciphertext that is not of that form.
    """
    encoding.check_capacity(public_key, contributors, round=round)
    plaintexts = []
    for index, ciphertext in enumerate(ciphertexts):
        total, remainder = divmod(ciphertext - 1, public_key.n)
        if remainder != 0 or not 0 <= total < public_key.n:
            where = f"round {round}, slot {index}" if round is not None else f"slot {index}"
            raise CryptoError(
                f"{where}: not an unencrypted ciphertext 1 + m*n for key {public_key.fingerprint}"
            )
        plaintexts.append(total)
    return encoding.decode_vector(plaintexts, public_key, contributors, round, length=length)


def add_vectors(public_key: PublicKey, a: Sequence[int], b: Sequence[int]) -> list[int]:
    """Add two encrypted vectors element by element, as :meth:`PublicKey.raw_add` does.

    Neither input is validated here, so ciphertexts from another party must
    pass :meth:`PublicKey.first_invalid_ciphertext` or
    :meth:`PublicKey.ciphertext_from_bytes` first.

    Raises ValueError when the lengths differ.
    """
    if len(a) != len(b):
        raise ValueError(f"cannot add encrypted vectors of lengths {len(a)} and {len(b)}")
    nsquare = _gmp.to_mpz(public_key.nsquare)
    return [int(_gmp.to_mpz(x) * y % nsquare) for x, y in zip(a, b, strict=True)]


def decrypt_vector(
    private_key: PrivateKey,
    encoding: Encoding,
    ciphertexts: Sequence[int],
    contributors: int,
    round: int | None = None,
    *,
    length: int | None = None,
    workers: int | None = None,
) -> npt.NDArray[np.float64]:
    """Decrypt and decode a sum of ``contributors`` encrypted vectors.

    ``round`` only labels errors. ``length`` is the vector length, which a
    packed encoding needs to drop the unused slots of the last ciphertext.
    ``workers`` is the number of threads for the CRT exponentiations: None
    means ``os.cpu_count()``, and 1 decrypts in the calling thread.

    Raises CryptoError naming the slot when a ciphertext is invalid, and
    EncodingOverflowError, ConfigError or ValueError as the encoding's
    ``decode_vector`` does.
    """
    if workers is None:
        workers = os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1 or None, got {workers!r}")
    # Checking the capacity first avoids decrypting a vector that cannot be decoded.
    encoding.check_capacity(private_key.public_key, contributors, round=round)

    invalid = private_key.public_key.first_invalid_ciphertext(ciphertexts)
    if invalid is not None:
        where = f"round {round}, slot {invalid}" if round is not None else f"slot {invalid}"
        raise CryptoError(
            f"{where}: not a valid ciphertext for key {private_key.public_key.fingerprint} "
            "(expected 0 < c < n**2 and gcd(c, n) == 1)"
        )

    plaintexts = decrypt_ciphertexts(private_key, ciphertexts, workers=workers)
    return encoding.decode_vector(
        plaintexts, private_key.public_key, contributors, round, length=length
    )


def decrypt_ciphertexts(
    private_key: PrivateKey, ciphertexts: Sequence[int], *, workers: int | None = None
) -> list[int]:
    """Decrypt ``ciphertexts`` to plaintexts, in order, with up to ``workers`` threads.

    Raises CryptoError when a ciphertext is invalid.
    """
    if workers is None:
        workers = os.cpu_count() or 1
    threads = min(workers, len(ciphertexts) // MIN_CIPHERTEXTS_PER_THREAD)
    if threads < 2:
        return private_key.raw_decrypt_batch(ciphertexts)

    size = -(-len(ciphertexts) // threads)
    chunks = [ciphertexts[start : start + size] for start in range(0, len(ciphertexts), size)]
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="gradchain-decrypt") as pool:
        results = list(pool.map(private_key.raw_decrypt_batch, chunks))
    return [plaintext for chunk in results for plaintext in chunk]
