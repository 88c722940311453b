"""Signed fixed-point encoding of float vectors as Paillier plaintexts.

A value ``x`` is clipped to ``[-clip, clip]`` and scaled to the integer
``round(x * 2**frac_bits)``, rounding half to even. Paillier plaintexts live in
``[0, n)``, so a negative integer ``v`` is stored as ``n + v`` (modular wrap).
Decoding reads a plaintext above ``n // 2`` as the negative number ``v - n``.

Modular wrap is used instead of adding a fixed offset because it commutes with
homomorphic addition: the sum of the plaintexts modulo ``n`` is exactly the
wrapped sum of the signed integers, whatever the number of terms. An offset
would be added once per contributor, so the decoder would need the exact
contributor count just to read the sign.

Correct decoding needs ``|sum| < n // 2``. The sum of ``contributors`` encoded
values is at most ``contributors * (clip * 2**frac_bits + 1)`` in magnitude,
because clipping bounds each value and rounding adds at most one unit. The
encoder and decoder check that this bound fits below ``n // 2`` and raise
ConfigError otherwise. A decoded total above the bound means a contribution
was not clipped or the contributor count is wrong. Decoding then raises
EncodingOverflowError instead of returning a wrong number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

import numpy as np
import numpy.typing as npt

from gradchain.crypto.paillier import PublicKey
from gradchain.errors import ConfigError, EncodingOverflowError

DEFAULT_FRAC_BITS = 32
DEFAULT_CLIP = 2.0**20


@dataclass(frozen=True, kw_only=True)
class EncodedVector:
    """Plaintexts of an encoded vector and how many input values were clipped."""

    plaintexts: list[int]
    clipped: int


class Encoding(Protocol):
    """What :func:`~gradchain.crypto.vector.encrypt_vector` and
    :func:`~gradchain.crypto.vector.decrypt_vector` need from an encoding.

    :class:`FixedPointEncoding` puts one value in each plaintext, and
    :class:`~gradchain.crypto.packing.PackedEncoding` puts many.
    """

    def ciphertext_count(self, length: int) -> int:
        """Return the number of ciphertexts that a vector of ``length`` values needs."""
        ...

    def check_capacity(
        self, public_key: PublicKey, contributors: int, *, round: int | None = None
    ) -> None:
        """Raise unless sums of ``contributors`` vectors can be decoded under ``public_key``."""
        ...

    def encode_vector(
        self, values: npt.ArrayLike, public_key: PublicKey, *, contributors: int = 1
    ) -> EncodedVector:
        """Clip and encode a vector of floats as plaintexts for ``public_key``."""
        ...

    def decode_vector(
        self,
        plaintexts: Sequence[int],
        public_key: PublicKey,
        contributors: int,
        round: int | None = None,
        *,
        length: int | None = None,
    ) -> npt.NDArray[np.float64]:
        """Decode plaintexts that hold sums of ``contributors`` encoded vectors."""
        ...


@dataclass(frozen=True, kw_only=True)
class FixedPointEncoding:
    """Fixed-point encoding with precision ``2**-frac_bits`` and range ``[-clip, clip]``.

    ``frac_bits`` and ``clip`` correspond to the ``[crypto]`` settings of the
    same names in a topology file.
    """

    frac_bits: int = DEFAULT_FRAC_BITS
    clip: float = DEFAULT_CLIP

    def __post_init__(self) -> None:
        frac_bits = self.frac_bits
        if isinstance(frac_bits, bool) or not isinstance(frac_bits, int) or frac_bits < 0:
            raise ConfigError(f"crypto.frac_bits must be a non-negative integer, got {frac_bits!r}")
        clip = self.clip
        if isinstance(clip, bool) or not isinstance(clip, int | float):
            raise ConfigError(f"crypto.clip must be a number, got {clip!r}")
        if not (math.isfinite(clip) and clip > 0):
            raise ConfigError(f"crypto.clip must be a finite number greater than 0, got {clip!r}")

    @property
    def scale(self) -> int:
        """Integer scale factor ``2**frac_bits``."""
        return 1 << self.frac_bits

    def max_magnitude(self, contributors: int) -> int:
        """Return the bound on the encoded magnitude of a sum of ``contributors`` values.

        The bound is ``contributors * (floor(clip * 2**frac_bits) + 1)``, which
        allows one unit of rounding per contributor.
        """
        scaled_clip = math.floor(Fraction(self.clip) * self.scale)
        return contributors * (scaled_clip + 1)

    def check_capacity(
        self, public_key: PublicKey, contributors: int, *, round: int | None = None
    ) -> None:
        """Raise ConfigError unless sums of ``contributors`` values fit ``public_key``.

        The requirement is ``contributors * (clip * 2**frac_bits + 1) < n // 2``.
        ``round`` is accepted for the :class:`Encoding` interface and unused,
        because a key that is too small is a setting error, not one round's.
        """
        _check_contributors(contributors)
        if self.max_magnitude(contributors) < public_key.n // 2:
            return
        raise ConfigError(
            f"the {public_key.n.bit_length()}-bit key is too small for sums of "
            f"{contributors} values with crypto.clip={self.clip} and "
            f"crypto.frac_bits={self.frac_bits}, because the encoding needs "
            "contributors * (clip * 2**frac_bits + 1) < n // 2. "
            "Lower crypto.frac_bits or crypto.clip, or raise crypto.key_bits."
        )

    def ciphertext_count(self, length: int) -> int:
        """Return the number of ciphertexts that a vector of ``length`` values needs.

        Each value gets its own ciphertext, so this equals ``length``.
        """
        if length < 0:
            raise ValueError(f"length must be non-negative, got {length}")
        return length

    def encode_vector(
        self,
        values: npt.ArrayLike,
        public_key: PublicKey,
        *,
        contributors: int = 1,
    ) -> EncodedVector:
        """Clip and encode a 1-D vector of finite floats as plaintexts for ``public_key``.

        ``contributors`` is the largest number of such vectors that will be
        summed before decoding. It only sizes the capacity check, so pass it
        when known to get the ConfigError at encoding time.

        Raises ValueError for a vector that is not 1-D or that contains NaN or
        infinity, naming the first such index. Raises ConfigError when the
        key is too small for the encoding (see :meth:`check_capacity`).
        """
        self.check_capacity(public_key, contributors)
        array = np.asarray(values, dtype=np.float64)
        if array.ndim != 1:
            raise ValueError(f"values must be a 1-D array, got shape {array.shape}")

        finite = np.isfinite(array)
        if not finite.all():
            index = int(np.flatnonzero(~finite)[0])
            kind = "NaN" if math.isnan(array[index]) else "infinite"
            raise ValueError(
                f"values[{index}] is {kind}, but the encoding accepts only finite numbers"
            )

        clip_mask = np.abs(array) > self.clip
        clipped = int(np.count_nonzero(clip_mask))
        array = np.clip(array, -self.clip, self.clip)

        n = public_key.n
        plaintexts = []
        for value in array.tolist():
            scaled = self._scale(value)
            plaintexts.append(scaled % n)
        return EncodedVector(plaintexts=plaintexts, clipped=clipped)

    def decode_vector(
        self,
        plaintexts: Sequence[int],
        public_key: PublicKey,
        contributors: int,
        round: int | None = None,
        *,
        length: int | None = None,
    ) -> npt.NDArray[np.float64]:
        """Decode plaintexts that hold sums of ``contributors`` encoded vectors.

        ``round`` only labels errors. ``length``, when given, is the expected
        vector length. Raises EncodingOverflowError with the round and slot
        when a decoded magnitude exceeds
        ``contributors * (clip * 2**frac_bits + 1)`` units, ConfigError when the
        key is too small (see :meth:`check_capacity`), and ValueError for a
        plaintext outside ``[0, n)`` or a plaintext count other than ``length``.
        """
        self.check_capacity(public_key, contributors)
        if length is not None and len(plaintexts) != length:
            raise ValueError(f"expected {length} plaintexts, got {len(plaintexts)}")
        n = public_key.n
        half = n // 2
        limit = self.max_magnitude(contributors)
        scale = self.scale

        decoded = np.empty(len(plaintexts), dtype=np.float64)
        for slot, plaintext in enumerate(plaintexts):
            if not 0 <= plaintext < n:
                raise ValueError(f"plaintexts[{slot}] is outside [0, n)")
            signed = plaintext - n if plaintext > half else plaintext
            if abs(signed) > limit:
                # The message leaves out the value, because it is a decrypted total.
                raise EncodingOverflowError(
                    "decoded magnitude exceeds contributors * clip = "
                    f"{contributors} * {self.clip}, so a contribution was not clipped "
                    "or the contributor count is wrong",
                    round=round,
                    slot=slot,
                )
            # Integer true division rounds correctly to the nearest float.
            decoded[slot] = signed / scale
        return decoded

    def _scale(self, value: float) -> int:
        """Return ``round(value * 2**frac_bits)`` computed exactly, rounding half to even."""
        # A float is a dyadic rational, so Fraction represents it exactly, and
        # Fraction's round() rounds half to even. Plain float arithmetic would
        # overflow when frac_bits is large.
        return round(Fraction(value) * self.scale)


def _check_contributors(contributors: int) -> None:
    if isinstance(contributors, bool) or not isinstance(contributors, int) or contributors < 1:
        raise ValueError(f"contributors must be an integer >= 1, got {contributors!r}")
