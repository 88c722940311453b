"""Randomisers: how a provider hides its gradient in the values it encrypts, and how the
learner turns the decrypted totals back into a descent direction.

A provider calls :meth:`Randomiser.randomise` on its gradient g_i and encrypts the
returned values. The nodes add the ciphertexts slot by slot, so the learner decrypts
the slot-wise sums over the round's contributors and calls :meth:`Randomiser.recover`
on them. Each payload carries, next to the randomised gradient, either the random
numbers or a count of 1. ``recover`` uses them to undo the randomisation in the
total. It also checks their totals against the number of contributors, so that a
contribution added twice or corrupted fails the round.

With ``draw_random`` off every randomiser becomes exact (all random scales 1, all
masks 0), and the learner's direction is the mean gradient, as in plaintext
distributed gradient descent. docs/randomisers.md compares what each randomiser
hides from the learner.

The module does no IO. Random numbers come from :func:`secrets.token_bytes`, a
cryptographic source, unless a caller passes a seeded :class:`numpy.random.Generator`,
which only tests should do.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from gradchain.crypto.encoding import DEFAULT_CLIP
from gradchain.errors import ConfigError

FloatArray = npt.NDArray[np.float64]

RANDOMISERS = ("scalar", "vector", "additive", "uniform")
"""Values accepted for ``job.randomiser``."""

DEFAULT_RANDOMISER = "scalar"

#: Bits of randomness in a number drawn from (0, 1]. A float64 significand has 53 bits.
RANDOM_BITS = 53

#: Allowed deviation of a scale or count total from its bound, per contributor. The
#: fixed-point encoding rounds each value to 2**-frac_bits, far below this.
TOTAL_TOLERANCE = 1e-6


class TotalsCheckError(ValueError):
    """Decrypted totals that fail a randomiser's consistency check.

    The message names the check and the total that failed it.
    """


@dataclass(frozen=True, kw_only=True)
class Randomised:
    """The values a provider encrypts, and how many gradient elements the randomiser clipped."""

    values: FloatArray
    clipped: int = 0


@dataclass(frozen=True, kw_only=True)
class Recovered:
    """The learner's descent direction from one round's totals.

    ``scale_total`` summarises the random scales in the total (Σ a_i, or the mean over
    the elements of the per-element scale totals), and is None for randomisers
    without random scales.
    """

    direction: FloatArray
    scale_total: float | None


class Randomiser(Protocol):
    """One way to randomise a provider's gradient and recover a direction from the totals."""

    @property
    def name(self) -> str:
        """The ``job.randomiser`` value that selects this randomiser."""
        ...

    def payload_length(self, parameters: int) -> int:
        """Return the number of values a provider encrypts for a gradient of ``parameters``."""
        ...

    def randomise(
        self,
        gradient: npt.ArrayLike,
        *,
        draw_random: bool,
        rng: np.random.Generator | None = None,
    ) -> Randomised:
        """Randomise a provider's gradient into the values it encrypts.

        With ``draw_random`` off the result carries the exact gradient. ``rng``
        replaces the cryptographic random source, for tests only.
        """
        ...

    def recover(self, totals: npt.ArrayLike, contributors: int, *, draw_random: bool) -> Recovered:
        """Check the decrypted totals of ``contributors`` providers and return the direction.

        Raises TotalsCheckError naming the check that failed, and ValueError for totals
        whose length no payload of this randomiser has.
        """
        ...


def draw_unit(size: int, rng: np.random.Generator | None = None) -> FloatArray:
    """Draw ``size`` numbers uniformly from (0, 1] in steps of 2**-53.

    The bits come from :func:`secrets.token_bytes` unless ``rng`` is given. Zero is
    excluded so that a scale can never erase a gradient or divide by zero.
    """
    raw = rng.bytes(8 * size) if rng is not None else secrets.token_bytes(8 * size)
    numerators = (np.frombuffer(raw, dtype=np.uint64) >> np.uint64(64 - RANDOM_BITS)) + 1
    unit: FloatArray = numerators.astype(np.float64) / float(2**RANDOM_BITS)
    return unit


@dataclass(frozen=True)
class ScalarRandomiser:
    """One random scale a_i ~ U(0, 1] per provider. Payload [a_i·g_i, a_i], d + 1 values.

    The learner recovers Σ a_i·g_i / Σ a_i, a random convex combination of the
    providers' gradients rather than their mean. It learns Σ a_i but not the exact
    sum or mean of the gradients. The totals check requires 0 < Σ a_i <= count, and
    Σ a_i = count with randomisation off, so with randomisation on it detects a
    duplicated contribution only when that pushes Σ a_i above the count. A total of
    one provider gives the learner g_i exactly, because a_i travels with a_i·g_i.
    """

    name: ClassVar[str] = "scalar"

    def payload_length(self, parameters: int) -> int:
        """Return d + 1: the scaled gradient and the scale."""
        return parameters + 1

    def randomise(
        self,
        gradient: npt.ArrayLike,
        *,
        draw_random: bool,
        rng: np.random.Generator | None = None,
    ) -> Randomised:
        """Return [a·g, a] with a ~ U(0, 1], or [g, 1] with ``draw_random`` off."""
        values = _gradient_vector(gradient)
        scale = float(draw_unit(1, rng)[0]) if draw_random else 1.0
        return Randomised(values=np.append(scale * values, scale))

    def recover(self, totals: npt.ArrayLike, contributors: int, *, draw_random: bool) -> Recovered:
        """Return Σ a_i·g_i / Σ a_i after checking Σ a_i against ``contributors``."""
        array = _totals_vector(totals, minimum=2)
        weighted, scale_total = array[:-1], float(array[-1])
        _check_finite(array)
        if not _scale_total_fits(scale_total, contributors, draw_random=draw_random):
            raise TotalsCheckError(
                f"the decrypted scale total {scale_total:.6g} does not fit {contributors} "
                "contributors, so a contribution was counted twice or corrupted"
            )
        return Recovered(
            direction=_finite_direction(weighted / scale_total), scale_total=scale_total
        )


@dataclass(frozen=True)
class VectorRandomiser:
    """One random scale a_ij ~ U(0, 1] per provider and element. Payload [a_i⊗g_i, a_i], 2d values.

    The learner recovers, element by element, Σ_i a_ij·g_ij / Σ_i a_ij. Each element
    is a random convex combination of that element of the providers' gradients with
    its own weights, so the direction need not be parallel to any weighted mean of
    whole gradients. The learner learns the d scale totals Σ_i a_ij. The totals check
    applies the scalar randomiser's bound to each of them. A total of one provider
    gives the learner g_i exactly.
    """

    name: ClassVar[str] = "vector"

    def payload_length(self, parameters: int) -> int:
        """Return 2d: the scaled gradient and one scale per element."""
        return 2 * parameters

    def randomise(
        self,
        gradient: npt.ArrayLike,
        *,
        draw_random: bool,
        rng: np.random.Generator | None = None,
    ) -> Randomised:
        """Return [a⊗g, a] with every a_j ~ U(0, 1], or [g, ones] with ``draw_random`` off."""
        values = _gradient_vector(gradient)
        scales = draw_unit(values.size, rng) if draw_random else np.ones(values.size)
        return Randomised(values=np.concatenate([scales * values, scales]))

    def recover(self, totals: npt.ArrayLike, contributors: int, *, draw_random: bool) -> Recovered:
        """Return Σ a⊗g / Σ a element by element after checking every Σ a_j."""
        return _recover_elementwise(totals, contributors, draw_random=draw_random, label="scale")


@dataclass(frozen=True)
class AdditiveRandomiser:
    """A random mask b_ij per provider and element. Payload [g_i + b_i, b_i, 1], 2d + 1 values.

    The provider clips g_i to ±clip/2 and draws b_ij uniformly from (-clip/2, clip/2],
    so every masked value stays inside the encoding's ±clip range and is never clipped
    there. The learner subtracts Σ b_i and divides by the count slot, so it recovers
    the exact mean gradient: the masks hide nothing from the learner that the sum does
    not already hide, because their sum travels with the masked sum. Totals of two
    rounds at the same θ over provider sets that differ by one provider give that
    provider's gradient exactly. The totals check requires the count slot to equal the
    number of contributors, which fails for every contribution added twice or
    missing, and requires the recovered mean to lie within ±clip/2.

    NOTE: masked values reach magnitudes near clip/2, so float64 limits their
    precision to about clip·2**-54, which with the default clip of 2**20 is 2**-34,
    finer than the default fixed-point step of 2**-32. A much larger clip or
    frac_bits makes the float64 rounding the larger error.
    """

    name: ClassVar[str] = "additive"
    clip: float = DEFAULT_CLIP

    def __post_init__(self) -> None:
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ConfigError(
                "invalid clip for the additive randomiser: expected a finite number > 0, "
                f"got {self.clip!r}"
            )

    @property
    def gradient_clip(self) -> float:
        """Bound on each gradient element, and on each mask: half the encoding's clip."""
        return self.clip / 2

    def payload_length(self, parameters: int) -> int:
        """Return 2d + 1: the masked gradient, the masks and a count of 1."""
        return 2 * parameters + 1

    def randomise(
        self,
        gradient: npt.ArrayLike,
        *,
        draw_random: bool,
        rng: np.random.Generator | None = None,
    ) -> Randomised:
        """Return [g + b, b, 1] with g clipped to ±clip/2.

        With ``draw_random`` off every mask b is 0.
        """
        values = _gradient_vector(gradient)
        bound = self.gradient_clip
        clipped = int(np.count_nonzero(np.abs(values) > bound))
        values = np.clip(values, -bound, bound)
        if draw_random:
            masks = (2.0 * draw_unit(values.size, rng) - 1.0) * bound
        else:
            masks = np.zeros(values.size)
        return Randomised(values=np.concatenate([values + masks, masks, [1.0]]), clipped=clipped)

    def recover(self, totals: npt.ArrayLike, contributors: int, *, draw_random: bool) -> Recovered:
        """Return (Σ (g + b) - Σ b) / count after checking the count slot and the mean's bound."""
        array = _totals_vector(totals, minimum=3)
        if array.size % 2 != 1:
            raise ValueError(
                f"invalid additive totals: expected an odd length 2d + 1, got {array.size}"
            )
        parameters = (array.size - 1) // 2
        masked, masks = array[:parameters], array[parameters:-1]
        _check_finite(array)
        _check_count_total(float(array[-1]), contributors)
        tolerance = TOTAL_TOLERANCE * max(contributors, 1)
        if not draw_random:
            element = _first_index(np.abs(masks) > tolerance)
            if element is not None:
                raise TotalsCheckError(
                    f"the decrypted mask total of element {element} is {masks[element]:.6g}, "
                    "but it must be 0 with randomisation off, so a contribution was corrupted"
                )
        mean = (masked - masks) / contributors
        element = _first_index(np.abs(mean) > self.gradient_clip + tolerance)
        if element is not None:
            raise TotalsCheckError(
                f"the recovered mean gradient {mean[element]:.6g} of element {element} exceeds "
                f"the gradient clip {self.gradient_clip:g}, so a contribution was corrupted"
            )
        return Recovered(direction=_finite_direction(mean), scale_total=None)


@dataclass(frozen=True)
class UniformRandomiser:
    """Each element sampled uniformly between 0 and g_ij: g'_ij = u_ij·g_ij, u_ij ~ U(0, 1].

    With ``normalise`` (the default) the payload is [g'_i, u_i], 2d values, where
    u_ij = g'_ij / g_ij is the reciprocal of the normalisation factor r_ij = g_ij / g'_ij.
    r_ij itself is unbounded as u_ij nears 0 and cannot be fixed-point encoded, so the
    provider sends u_ij. The learner recovers Σ_i g'_ij / Σ_i u_ij element by element,
    with the vector randomiser's checks. The messages then have the same distribution as
    the vector randomiser's, and a total of one provider gives g_i exactly. For a zero
    element u_ij is drawn all the same, so the ratio totals do not show which elements
    were zero.

    Without ``normalise`` the payload is [g'_i, 1], d + 1 values. E[2·g'_ij] = g_ij, so
    the learner uses 2·Σ g'_i / count, an unbiased estimate of the mean gradient whose
    elements have standard deviation sqrt(Σ_i g_ij² / 3) / count. The totals check
    requires the count slot to equal the number of contributors. This is the only
    randomiser whose random numbers do not travel with the contribution: a total of one
    provider shows the learner g'_i, so the sign of each element and a lower bound on
    its magnitude, but not g_i. With ``draw_random`` off g' = g and the learner uses
    Σ g / count.
    """

    name: ClassVar[str] = "uniform"
    normalise: bool = True

    def payload_length(self, parameters: int) -> int:
        """Return 2d with normalisation, d + 1 without."""
        return 2 * parameters if self.normalise else parameters + 1

    def randomise(
        self,
        gradient: npt.ArrayLike,
        *,
        draw_random: bool,
        rng: np.random.Generator | None = None,
    ) -> Randomised:
        """Return [g', u], or [g', 1] without normalisation.

        With ``draw_random`` off g' = g and u = 1.
        """
        values = _gradient_vector(gradient)
        ratios = draw_unit(values.size, rng) if draw_random else np.ones(values.size)
        samples = ratios * values
        if self.normalise:
            return Randomised(values=np.concatenate([samples, ratios]))
        return Randomised(values=np.append(samples, 1.0))

    def recover(self, totals: npt.ArrayLike, contributors: int, *, draw_random: bool) -> Recovered:
        """Return Σ g' / Σ u element by element, or (2 or 1)·Σ g' / count without normalisation."""
        if self.normalise:
            return _recover_elementwise(
                totals, contributors, draw_random=draw_random, label="ratio"
            )
        array = _totals_vector(totals, minimum=2)
        _check_finite(array)
        _check_count_total(float(array[-1]), contributors)
        factor = 2.0 if draw_random else 1.0
        return Recovered(
            direction=_finite_direction(factor * array[:-1] / contributors), scale_total=None
        )


def get_randomiser(
    name: str, *, clip: float = DEFAULT_CLIP, uniform_normalise: bool = True
) -> Randomiser:
    """Return the randomiser that ``job.randomiser = name`` selects.

    ``clip`` is the encoding's ``crypto.clip``, which bounds the additive randomiser's
    masked values. ``uniform_normalise`` is ``job.uniform_normalise``. Raises
    ConfigError for an unknown name, listing the accepted names.
    """
    if name == "scalar":
        return ScalarRandomiser()
    if name == "vector":
        return VectorRandomiser()
    if name == "additive":
        return AdditiveRandomiser(clip=clip)
    if name == "uniform":
        return UniformRandomiser(normalise=uniform_normalise)
    raise ConfigError(f"unknown randomiser {name!r}: use one of {', '.join(RANDOMISERS)}")


def _gradient_vector(gradient: npt.ArrayLike) -> FloatArray:
    values = np.asarray(gradient, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"the gradient must be a 1-D array, got shape {values.shape}")
    return values


def _totals_vector(totals: npt.ArrayLike, *, minimum: int) -> FloatArray:
    array = np.asarray(totals, dtype=np.float64)
    if array.ndim != 1 or array.size < minimum:
        raise ValueError(
            f"the totals must be a 1-D array of at least {minimum} values, got shape {array.shape}"
        )
    return array


def _first_index(mask: npt.NDArray[np.bool_]) -> int | None:
    indices = np.flatnonzero(mask)
    return int(indices[0]) if indices.size else None


def _check_finite(totals: FloatArray) -> None:
    slot = _first_index(~np.isfinite(totals))
    if slot is not None:
        raise TotalsCheckError(
            f"the decrypted total in slot {slot} is {totals[slot]}, not a finite number, "
            "so a contribution was corrupted"
        )


def _finite_direction(direction: FloatArray) -> FloatArray:
    element = _first_index(~np.isfinite(direction))
    if element is not None:
        raise TotalsCheckError(
            f"the recovered direction is {direction[element]} in element {element}, "
            "not a finite number, so a contribution was corrupted"
        )
    return direction


def _scale_total_fits(total: float, contributors: int, *, draw_random: bool) -> bool:
    """Return whether ``contributors`` scales from (0, 1] can add up to ``total``.

    Without ``draw_random`` every scale is 1, so the total must equal the count.
    """
    tolerance = TOTAL_TOLERANCE * max(contributors, 1)
    if draw_random:
        return 0.0 < total <= contributors + tolerance
    return abs(total - contributors) <= tolerance


def _check_count_total(total: float, contributors: int) -> None:
    if abs(total - contributors) > TOTAL_TOLERANCE * max(contributors, 1):
        raise TotalsCheckError(
            f"the decrypted count total {total:.6g} does not equal the {contributors} "
            "contributors, so a contribution was counted twice, left out or corrupted"
        )


def _recover_elementwise(
    totals: npt.ArrayLike, contributors: int, *, draw_random: bool, label: str
) -> Recovered:
    """Recover a direction from [Σ a⊗g, Σ a] totals, checking each Σ a_j like a scalar scale total.

    ``label`` names the random numbers in error messages.
    """
    array = _totals_vector(totals, minimum=2)
    if array.size % 2 != 0:
        raise ValueError(f"invalid {label} totals: expected an even length 2d, got {array.size}")
    parameters = array.size // 2
    weighted, scale_totals = array[:parameters], array[parameters:]
    _check_finite(array)
    for element, total in enumerate(scale_totals.tolist()):
        if not _scale_total_fits(total, contributors, draw_random=draw_random):
            raise TotalsCheckError(
                f"the decrypted {label} total {total:.6g} of element {element} does not fit "
                f"{contributors} contributors, so a contribution was counted twice or corrupted"
            )
    return Recovered(
        direction=_finite_direction(weighted / scale_totals),
        scale_total=float(np.mean(scale_totals)),
    )
