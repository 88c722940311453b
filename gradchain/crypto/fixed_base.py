"""Fixed-base modular exponentiation with a precomputed table.

DJN encryption raises the same base ``hs`` to a fresh exponent for every
ciphertext, so a table that depends only on ``hs`` pays off. Write the
exponent in base ``2**w`` as ``r = sum(d_i * 2**(w*i))`` with digits
``0 <= d_i < 2**w``. Then

    hs**r = prod_i (hs**(2**(w*i)))**d_i,

and the table stores ``hs**(d * 2**(w*i)) mod m`` for every window ``i`` and
every non-zero digit ``d``. One exponentiation then costs at most one modular
multiplication per window, ``ceil(bits / w)`` in all, and no squarings. A
general ``powmod`` needs about ``bits`` squarings plus ``bits / (w + 1)``
multiplications.

The table has ``ceil(bits / w) * (2**w - 1)`` entries of the modulus's size.
For a 2048-bit key (``n**2`` of 4096 bits, exponents of 1024 bits) and the
default ``w = 6`` that is 171 * 63 entries of 512 bytes, about 5.5 MB, and
building it takes as many multiplications. benchmarks/crypto.py measures the
build time and the cost per exponentiation against ``gmpy2.powmod``.

The multiplications run as ``mpz`` operators, which hold the GIL for a few
microseconds each, so a thread computing with a table lets other threads run
between multiplications but does not run in parallel with other Python code.
"""

from __future__ import annotations

from gradchain.crypto import _gmp

#: Window width ``w`` in bits. Measured on the benchmark machine (2-core AMD
#: EPYC, gmpy2 2.3.2, 2048-bit key): w = 6 takes about 0.9 ms per exponentiation
#: with a 5.5 MB table, w = 8 about 0.7 ms with 16.8 MB, gmpy2.powmod about 4.6 ms.
DEFAULT_WINDOW_BITS = 6

MAX_WINDOW_BITS = 12


class FixedBaseTable:
    """Table for computing ``base**e mod modulus`` with ``0 <= e < 2**exponent_bits``.

    Raises ValueError for a modulus below 2, an exponent length below 1 or a
    window width outside ``[1, MAX_WINDOW_BITS]``.
    """

    def __init__(
        self,
        base: int,
        modulus: int,
        exponent_bits: int,
        window_bits: int = DEFAULT_WINDOW_BITS,
    ) -> None:
        if modulus < 2:
            raise ValueError(f"modulus must be at least 2, got {modulus}")
        if exponent_bits < 1:
            raise ValueError(f"exponent_bits must be at least 1, got {exponent_bits}")
        if not 1 <= window_bits <= MAX_WINDOW_BITS:
            raise ValueError(
                f"window_bits must be between 1 and {MAX_WINDOW_BITS}, got {window_bits}"
            )
        self.modulus = modulus
        self.exponent_bits = exponent_bits
        self.window_bits = window_bits
        self._modulus = _gmp.to_mpz(modulus)
        self._rows = self._build(_gmp.to_mpz(base) % self._modulus)

    def _build(self, base: _gmp.Mpz) -> list[list[_gmp.Mpz]]:
        """Return rows[i][d] = base**(d * 2**(w*i)) mod m for d in [0, 2**w)."""
        windows = -(-self.exponent_bits // self.window_bits)
        digits = 1 << self.window_bits
        one = _gmp.to_mpz(1)
        rows = []
        window_base = base
        for _ in range(windows):
            row = [one, window_base]
            power = window_base
            for _ in range(2, digits):
                power = power * window_base % self._modulus
                row.append(power)
            rows.append(row)
            # The next window's base is window_base**(2**w), one more step along this row.
            window_base = power * window_base % self._modulus
        return rows

    @property
    def entries(self) -> int:
        """Number of stored powers, leaving out the 1 kept for digit 0."""
        return len(self._rows) * ((1 << self.window_bits) - 1)

    def power(self, exponent: int) -> _gmp.Mpz:
        """Return ``base**exponent mod modulus`` as an ``mpz``.

        Raises ValueError when ``exponent`` is negative or has more than
        ``exponent_bits`` bits.
        """
        if exponent < 0 or exponent.bit_length() > self.exponent_bits:
            raise ValueError(f"exponent must satisfy 0 <= exponent < 2**{self.exponent_bits}")
        mask = (1 << self.window_bits) - 1
        modulus = self._modulus
        result = _gmp.to_mpz(1)
        window = 0
        while exponent:
            digit = exponent & mask
            if digit:
                result = result * self._rows[window][digit] % modulus
            exponent >>= self.window_bits
            window += 1
        return result
