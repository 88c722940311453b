"""Build the encoding and the obfuscator pool that a topology's ``[crypto]`` settings describe.

The functions take any object with the attributes of
:class:`gradchain.topology.CryptoSettings`, so this package does not import
the topology package.
"""

from __future__ import annotations

from typing import Protocol

from gradchain.crypto.encoding import Encoding, FixedPointEncoding
from gradchain.crypto.obfuscators import ObfuscatorPool
from gradchain.crypto.packing import PackedEncoding
from gradchain.crypto.paillier import PublicKey

#: Contributions that a pool of the default size can encrypt without computing on the spot.
DEFAULT_POOL_CONTRIBUTIONS = 2


class CryptoSettingsLike(Protocol):
    """The ``[crypto]`` settings that the factories read."""

    @property
    def key_bits(self) -> int: ...
    @property
    def frac_bits(self) -> int: ...
    @property
    def clip(self) -> float: ...
    @property
    def packing(self) -> bool: ...
    @property
    def value_bits(self) -> int | None: ...
    @property
    def obfuscator_bits(self) -> int | None: ...
    @property
    def pool_size(self) -> int | None: ...


def make_encoding(crypto_settings: CryptoSettingsLike, max_contributors: int) -> Encoding:
    """Return the encoding for a topology whose totals sum at most ``max_contributors`` vectors.

    Pass the topology's provider count as ``max_contributors``: it sizes the
    headroom of each packed slot. With ``packing`` off the result is a
    :class:`FixedPointEncoding`, which checks the contributor count against
    the key when it encodes and decodes instead.

    Raises ConfigError for settings that do not fit together.
    """
    if crypto_settings.packing:
        return PackedEncoding(
            key_bits=crypto_settings.key_bits,
            max_contributors=max_contributors,
            frac_bits=crypto_settings.frac_bits,
            clip=crypto_settings.clip,
            value_bits=crypto_settings.value_bits,
        )
    return FixedPointEncoding(frac_bits=crypto_settings.frac_bits, clip=crypto_settings.clip)


def make_obfuscator_pool(
    crypto_settings: CryptoSettingsLike,
    public_key: PublicKey,
    *,
    ciphertexts_per_contribution: int,
    processes: int | None = None,
) -> ObfuscatorPool:
    """Return an unstarted :class:`ObfuscatorPool` for ``public_key``.

    Its size is ``pool_size``, or room for :data:`DEFAULT_POOL_CONTRIBUTIONS`
    contributions of ``ciphertexts_per_contribution`` ciphertexts when
    ``pool_size`` is None. ``obfuscator_bits`` applies to a DJN key only.
    ``processes`` is passed on (None means one per core).
    """
    size = crypto_settings.pool_size
    if size is None:
        size = DEFAULT_POOL_CONTRIBUTIONS * ciphertexts_per_contribution
    obfuscator_bits = crypto_settings.obfuscator_bits if public_key.is_djn else None
    return ObfuscatorPool(
        public_key, size=size, obfuscator_bits=obfuscator_bits, processes=processes
    )
