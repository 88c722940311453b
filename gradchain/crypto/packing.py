"""Packed fixed-point encoding: many values in the slots of one Paillier plaintext.

A value ``x`` is clipped to ``[-clip, clip]``, scaled to the integer
``v = round(x * 2**frac_bits)`` (half to even) and stored with an offset as
``u = v + C``, where ``C = round(clip * 2**frac_bits)``. Every ``u`` lies in
``[0, 2*C]``, so no slot ever contains a negative number and a sum of slots
never borrows from its neighbour. ``value_bits`` is the width of one ``u``, at least
the bit length of ``2*C`` (54 bits with the defaults ``frac_bits = 32`` and
``clip = 2**20``).

Homomorphic addition adds slot by slot. A slot that holds the sum of ``k``
contributions contains ``sum(u) = sum(v) + k*C``, at most ``k * 2*C``. Each
slot therefore gets ``headroom_bits = ceil(log2(max_contributors))`` bits on
top of ``value_bits``, where ``max_contributors`` is the largest number of
contributions a ciphertext can receive (the topology's provider count), so
``slot_bits = value_bits + headroom_bits`` holds any such sum without a carry
into the next slot. The decoder subtracts ``k*C`` and divides by
``2**frac_bits``, which gives exactly the number that
:class:`~gradchain.crypto.encoding.FixedPointEncoding` decodes for the same
inputs.

A plaintext holds ``slots = (key_bits - 1) // slot_bits`` slots. Slot ``j`` of
ciphertext ``i`` carries element ``i*slots + j`` at bit ``j*slot_bits``, the
lowest slot first. Slots past the end of the vector are 0. The packed integer
stays below ``2**(key_bits - 1)``, and a key with ``key_bits`` bits has
``n >= 2**(key_bits - 1)``, so plaintexts and their sums never wrap modulo ``n``.

Decoding detects overflow and raises EncodingOverflowError naming the round
and the slot, instead of returning a wrong number:

* a total with more contributors than ``max_contributors``, before any slot
  is read;
* a slot sum above ``contributors * 2*C``, which happens only when a
  contribution was not clipped or was encoded with other settings;
* a non-zero slot past the end of the vector, or bits above the last slot.

NOTE: these checks rely on the contributor count that the caller passes. A
contribution added twice under one name can overflow a slot into its
neighbour without tripping them. The protocol rejects duplicate contributor
names, and the learner checks the scale or count totals of the job's
randomiser against the count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from gradchain.crypto.encoding import DEFAULT_CLIP, DEFAULT_FRAC_BITS, EncodedVector
from gradchain.crypto.paillier import MIN_KEY_BITS, PublicKey
from gradchain.errors import ConfigError, EncodingOverflowError

#: Widest ``value_bits``. The encoder scales values in numpy int64, and
#: ``2*C < 2**63`` keeps every offset value inside that type.
MAX_VALUE_BITS = 63


def scaled_clip(frac_bits: int, clip: float) -> int:
    """Return ``C = round(clip * 2**frac_bits)``, computed exactly, rounding half to even."""
    return round(Fraction(clip) * (1 << frac_bits))


def required_value_bits(frac_bits: int, clip: float) -> int:
    """Return the bits one offset value needs: the bit length of ``2 * C``.

    When that exceeds :data:`MAX_VALUE_BITS` the result may be a lower bound,
    so that a huge ``frac_bits`` never builds a huge integer.
    """
    _, exponent = math.frexp(clip)
    # clip >= 2**(exponent - 1), so 2 * C >= 2**(frac_bits + exponent) needs
    # at least frac_bits + exponent + 1 bits.
    if frac_bits + exponent >= MAX_VALUE_BITS:
        return frac_bits + exponent + 1
    return (2 * scaled_clip(frac_bits, clip)).bit_length()


def headroom_bits(max_contributors: int) -> int:
    """Return ``ceil(log2(max_contributors))``, the bits a slot needs on top of ``value_bits``."""
    return (max_contributors - 1).bit_length()


@dataclass(frozen=True, kw_only=True)
class PackedEncoding:
    """Packed fixed-point encoding for keys of ``key_bits`` bits.

    ``max_contributors`` is the largest number of encoded vectors that one
    total may sum. ``value_bits`` None means :func:`required_value_bits`, and
    construction replaces it with that number. ``frac_bits``, ``clip`` and
    ``value_bits`` correspond to the ``[crypto]`` settings of the same names
    in a topology file.

    Raises ConfigError naming the setting when the settings are invalid or a
    slot does not fit in a plaintext.
    """

    key_bits: int
    max_contributors: int
    frac_bits: int = DEFAULT_FRAC_BITS
    clip: float = DEFAULT_CLIP
    value_bits: int | None = None
    offset: int = field(init=False, repr=False)
    headroom_bits: int = field(init=False, repr=False)
    slot_bits: int = field(init=False, repr=False)
    slots: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._check_types()
        required = required_value_bits(self.frac_bits, self.clip)
        value_bits = required if self.value_bits is None else self.value_bits
        if value_bits < required:
            raise ConfigError(
                f"crypto.value_bits is {value_bits}, but clip * 2**frac_bits needs {required} "
                f"bits per contribution. Set crypto.value_bits to at least {required}, or "
                "remove it."
            )
        if value_bits > MAX_VALUE_BITS:
            raise ConfigError(
                f"a packed value needs {value_bits} bits, but packing supports at most "
                f"{MAX_VALUE_BITS}. Lower crypto.frac_bits or crypto.clip, or set "
                "crypto.packing = false."
            )

        offset = scaled_clip(self.frac_bits, self.clip)
        if offset < 1:
            raise ConfigError(
                f"crypto.clip={self.clip} with crypto.frac_bits={self.frac_bits} rounds to 0 "
                "fixed-point units, so every value would encode as 0. Raise crypto.frac_bits."
            )

        headroom = headroom_bits(self.max_contributors)
        slot_bits = value_bits + headroom
        plaintext_bits = self.key_bits - 1
        if slot_bits > plaintext_bits:
            raise ConfigError(
                f"a slot needs {slot_bits} bits ({value_bits} value bits and {headroom} "
                f"headroom bits for {self.max_contributors} contributors), but a "
                f"{self.key_bits}-bit key leaves {plaintext_bits} plaintext bits. Lower "
                "crypto.frac_bits or crypto.clip, or raise crypto.key_bits."
            )

        object.__setattr__(self, "value_bits", value_bits)
        object.__setattr__(self, "offset", offset)
        object.__setattr__(self, "headroom_bits", headroom)
        object.__setattr__(self, "slot_bits", slot_bits)
        object.__setattr__(self, "slots", plaintext_bits // slot_bits)

    def _check_types(self) -> None:
        key_bits = self.key_bits
        if isinstance(key_bits, bool) or not isinstance(key_bits, int) or key_bits < MIN_KEY_BITS:
            raise ConfigError(
                f"crypto.key_bits must be an integer >= {MIN_KEY_BITS}, got {key_bits!r}"
            )
        contributors = self.max_contributors
        if isinstance(contributors, bool) or not isinstance(contributors, int) or contributors < 1:
            raise ConfigError(f"max_contributors must be an integer >= 1, got {contributors!r}")
        frac_bits = self.frac_bits
        if isinstance(frac_bits, bool) or not isinstance(frac_bits, int) or frac_bits < 0:
            raise ConfigError(f"crypto.frac_bits must be a non-negative integer, got {frac_bits!r}")
        clip = self.clip
        if isinstance(clip, bool) or not isinstance(clip, int | float):
            raise ConfigError(f"crypto.clip must be a number, got {clip!r}")
        if not (math.isfinite(clip) and clip > 0):
            raise ConfigError(f"crypto.clip must be a finite number greater than 0, got {clip!r}")
        value_bits = self.value_bits
        if value_bits is not None and (
            isinstance(value_bits, bool) or not isinstance(value_bits, int) or value_bits < 1
        ):
            raise ConfigError(f"crypto.value_bits must be a positive integer, got {value_bits!r}")

    @property
    def scale(self) -> int:
        """Integer scale factor ``2**frac_bits``."""
        return 1 << self.frac_bits

    @property
    def unit_bound(self) -> int:
        """Largest offset value of one contribution, ``2 * C``."""
        return 2 * self.offset

    def max_slot_sum(self, contributors: int) -> int:
        """Return the largest slot value a sum of ``contributors`` contributions can hold."""
        return contributors * self.unit_bound

    def ciphertext_count(self, length: int) -> int:
        """Return the number of ciphertexts that a vector of ``length`` values needs."""
        if length < 0:
            raise ValueError(f"length must be non-negative, got {length}")
        return -(-length // self.slots)

    def check_capacity(
        self, public_key: PublicKey, contributors: int, *, round: int | None = None
    ) -> None:
        """Raise unless a total of ``contributors`` contributions under ``public_key`` decodes.

        Raises ValueError for ``contributors < 1``, ConfigError when ``n`` has
        fewer than ``key_bits`` bits, and EncodingOverflowError labelled with
        ``round`` when ``contributors`` exceeds ``max_contributors``.
        """
        _check_contributors(contributors)
        bits = public_key.n.bit_length()
        if bits < self.key_bits:
            raise ConfigError(
                f"the packed encoding was laid out for {self.key_bits}-bit keys, but key "
                f"{public_key.fingerprint} has {bits} bits. Set crypto.key_bits to {bits}."
            )
        if contributors > self.max_contributors:
            raise EncodingOverflowError(
                f"the total sums {contributors} contributions, but the slots have headroom "
                f"for at most {self.max_contributors}, so a slot sum could have wrapped",
                round=round,
            )

    def encode_vector(
        self,
        values: npt.ArrayLike,
        public_key: PublicKey,
        *,
        contributors: int = 1,
    ) -> EncodedVector:
        """Clip, offset and pack a 1-D vector of finite floats into plaintexts for ``public_key``.

        ``contributors`` is the largest number of such vectors that will be
        summed. It must not exceed ``max_contributors``. ``clipped`` in the
        result counts the values whose magnitude exceeded ``clip``.

        Raises ValueError for a vector that is not 1-D or that contains NaN or
        infinity, naming the first such index, and ConfigError when the key
        is too small or ``contributors`` exceeds ``max_contributors``.
        """
        try:
            self.check_capacity(public_key, contributors)
        except EncodingOverflowError as exc:
            raise ConfigError(
                f"cannot encode for sums of {contributors} contributions: the packed encoding "
                f"has headroom for {self.max_contributors}. Build it with max_contributors "
                "set to the topology's provider count."
            ) from exc
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

        clipped = int(np.count_nonzero(np.abs(array) > self.clip))
        array = np.clip(array, -self.clip, self.clip)
        # ldexp multiplies by 2**frac_bits exactly below the overflow threshold,
        # and np.rint rounds half to even like round(Fraction(...)). The result
        # has magnitude at most C < 2**62, which int64 represents exactly.
        scaled = np.rint(np.ldexp(array, self.frac_bits)).astype(np.int64)
        offset_values: list[int] = (scaled + self.offset).tolist()
        return EncodedVector(plaintexts=self._pack(offset_values), clipped=clipped)

    def _pack(self, offset_values: list[int]) -> list[int]:
        """Pack offset values into integers, ``slots`` per integer, lowest slot first."""
        slot_bits = self.slot_bits
        plaintexts = []
        for start in range(0, len(offset_values), self.slots):
            packed = 0
            for value in reversed(offset_values[start : start + self.slots]):
                packed = (packed << slot_bits) | value
            plaintexts.append(packed)
        return plaintexts

    def decode_vector(
        self,
        plaintexts: Sequence[int],
        public_key: PublicKey,
        contributors: int,
        round: int | None = None,
        *,
        length: int | None = None,
    ) -> npt.NDArray[np.float64]:
        """Unpack and decode plaintexts that hold sums of ``contributors`` encoded vectors.

        ``length`` is the vector length. Without it every slot of every
        plaintext is decoded. ``round`` only labels errors.

        Raises EncodingOverflowError naming the round and slot on overflow
        (see the module docstring), ConfigError when the key is too small,
        and ValueError for a plaintext outside ``[0, n)`` or a plaintext count
        that does not fit ``length``.
        """
        self.check_capacity(public_key, contributors, round=round)
        if length is None:
            length = len(plaintexts) * self.slots
        elif len(plaintexts) != self.ciphertext_count(length):
            raise ValueError(
                f"a vector of {length} values needs {self.ciphertext_count(length)} "
                f"plaintexts, got {len(plaintexts)}"
            )

        n = public_key.n
        slot_bits = self.slot_bits
        slots = self.slots
        mask = (1 << slot_bits) - 1
        used_bits = slots * slot_bits
        bound = self.max_slot_sum(contributors)
        total_offset = contributors * self.offset
        scale = self.scale

        decoded = np.empty(length, dtype=np.float64)
        for index, plaintext in enumerate(plaintexts):
            if not 0 <= plaintext < n:
                raise ValueError(f"plaintexts[{index}] is outside [0, n)")
            first = index * slots
            if plaintext >> used_bits:
                raise self._overflow(
                    "the plaintext has bits above its last slot", round, first + slots - 1
                )
            rest = plaintext
            for slot in range(first, first + slots):
                value = rest & mask
                rest >>= slot_bits
                if slot >= length:
                    if value:
                        raise self._overflow(
                            "a slot past the end of the vector is not 0", round, slot
                        )
                    continue
                if value > bound:
                    raise self._overflow(
                        f"the slot sum exceeds contributors * 2 * clip for {contributors} "
                        "contributors, so a contribution was not clipped or was encoded with "
                        "other settings",
                        round,
                        slot,
                    )
                # Integer true division rounds correctly to the nearest float.
                decoded[slot] = (value - total_offset) / scale
        return decoded

    @staticmethod
    def _overflow(reason: str, round: int | None, slot: int) -> EncodingOverflowError:
        # The message leaves out the slot value, because it is a decrypted total.
        return EncodingOverflowError(reason, round=round, slot=slot)


def _check_contributors(contributors: int) -> None:
    if isinstance(contributors, bool) or not isinstance(contributors, int) or contributors < 1:
        raise ValueError(f"contributors must be an integer >= 1, got {contributors!r}")
