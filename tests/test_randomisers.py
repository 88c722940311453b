"""Tests for gradchain.randomisers: payloads, the expected values behind them, totals checks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest

from gradchain.errors import ConfigError
from gradchain.randomisers import (
    RANDOMISERS,
    AdditiveRandomiser,
    Randomiser,
    ScalarRandomiser,
    TotalsCheckError,
    UniformRandomiser,
    VectorRandomiser,
    draw_unit,
    get_randomiser,
)

FloatArray = npt.NDArray[np.float64]

# Gradients of three providers, with a zero element to cover that case.
GRADIENTS = [
    np.array([1.5, -2.0, 0.0, 4.0]),
    np.array([0.25, 4.0, 0.0, -1.0]),
    np.array([-3.0, 0.5, 0.0, 2.0]),
]
MEAN_GRADIENT = np.mean(GRADIENTS, axis=0)

#: Standard errors within which a statistical estimate must lie. A correct
#: randomiser fails such a check with probability below 1e-6, and the fixed
#: seeds make every run draw the same numbers.
STANDARD_ERRORS = 5.0

ALL_RANDOMISERS = [
    pytest.param(ScalarRandomiser(), id="scalar"),
    pytest.param(VectorRandomiser(), id="vector"),
    pytest.param(AdditiveRandomiser(), id="additive"),
    pytest.param(UniformRandomiser(), id="uniform"),
    pytest.param(UniformRandomiser(normalise=False), id="uniform-plain"),
]


def summed_payloads(
    randomiser: Randomiser,
    gradients: Sequence[FloatArray],
    *,
    draw_random: bool,
    rng: np.random.Generator | None = None,
) -> FloatArray:
    """Return the slot-wise sum of the providers' payloads, as the learner decrypts it."""
    payloads = [
        randomiser.randomise(gradient, draw_random=draw_random, rng=rng).values
        for gradient in gradients
    ]
    total: FloatArray = np.sum(payloads, axis=0)
    return total


# Payload layout


@pytest.mark.parametrize(
    ("randomiser", "length"),
    [
        pytest.param(ScalarRandomiser(), 6, id="scalar"),
        pytest.param(VectorRandomiser(), 10, id="vector"),
        pytest.param(AdditiveRandomiser(), 11, id="additive"),
        pytest.param(UniformRandomiser(), 10, id="uniform"),
        pytest.param(UniformRandomiser(normalise=False), 6, id="uniform-plain"),
    ],
)
def test_payload_length_for_five_parameters(randomiser: Randomiser, length: int) -> None:
    assert randomiser.payload_length(5) == length

    payload = randomiser.randomise(np.arange(5.0), draw_random=True)

    assert payload.values.shape == (length,)


@pytest.mark.parametrize(
    ("randomiser", "expected"),
    [
        pytest.param(ScalarRandomiser(), [1.5, -2.0, 0.0, 1.0], id="scalar"),
        pytest.param(VectorRandomiser(), [1.5, -2.0, 0.0, 1.0, 1.0, 1.0], id="vector"),
        pytest.param(AdditiveRandomiser(), [1.5, -2.0, 0.0, 0.0, 0.0, 0.0, 1.0], id="additive"),
        pytest.param(UniformRandomiser(), [1.5, -2.0, 0.0, 1.0, 1.0, 1.0], id="uniform"),
        pytest.param(UniformRandomiser(normalise=False), [1.5, -2.0, 0.0, 1.0], id="uniform-plain"),
    ],
)
def test_unrandomised_payload_is_exact(randomiser: Randomiser, expected: list[float]) -> None:
    payload = randomiser.randomise([1.5, -2.0, 0.0], draw_random=False)

    assert payload.values.tolist() == expected
    assert payload.clipped == 0


@pytest.mark.parametrize("randomiser", ALL_RANDOMISERS)
def test_randomised_payload_differs_from_gradient(randomiser: Randomiser) -> None:
    gradient = np.array([1.5, -2.0, 4.0])
    exact = randomiser.randomise(gradient, draw_random=False).values

    payload = randomiser.randomise(gradient, draw_random=True).values

    assert not np.array_equal(payload, exact)


@pytest.mark.parametrize("randomiser", ALL_RANDOMISERS)
def test_gradient_must_be_vector(randomiser: Randomiser) -> None:
    with pytest.raises(ValueError, match=r"1-D array, got shape \(2, 2\)"):
        randomiser.randomise(np.ones((2, 2)), draw_random=True)


# Random numbers


def test_draw_unit_range() -> None:
    values = draw_unit(100_000, np.random.default_rng(1))

    assert values.min() > 0.0
    assert values.max() <= 1.0
    # The mean of U(0, 1] has standard error sqrt(1/12) / sqrt(n).
    assert abs(values.mean() - 0.5) <= STANDARD_ERRORS * math.sqrt(1 / 12 / values.size)


def test_draw_unit_fresh_without_generator() -> None:
    first = draw_unit(8)
    second = draw_unit(8)

    assert not np.array_equal(first, second)
    assert np.all(first > 0.0)
    assert np.all(first <= 1.0)


def test_seeded_generator_repeats_draws() -> None:
    randomiser = VectorRandomiser()

    first = randomiser.randomise([1.0, 2.0], draw_random=True, rng=np.random.default_rng(7))
    second = randomiser.randomise([1.0, 2.0], draw_random=True, rng=np.random.default_rng(7))

    assert np.array_equal(first.values, second.values)


# Recovery of the direction from summed payloads


@pytest.mark.parametrize("randomiser", ALL_RANDOMISERS)
def test_unrandomised_recovery_is_mean_gradient(randomiser: Randomiser) -> None:
    totals = summed_payloads(randomiser, GRADIENTS, draw_random=False)

    recovered = randomiser.recover(totals, len(GRADIENTS), draw_random=False)

    np.testing.assert_allclose(recovered.direction, MEAN_GRADIENT, rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    ("randomiser", "scale_total"),
    [
        pytest.param(ScalarRandomiser(), 3.0, id="scalar"),
        pytest.param(VectorRandomiser(), 3.0, id="vector"),
        pytest.param(AdditiveRandomiser(), None, id="additive"),
        pytest.param(UniformRandomiser(), 3.0, id="uniform"),
        pytest.param(UniformRandomiser(normalise=False), None, id="uniform-plain"),
    ],
)
def test_unrandomised_scale_total(randomiser: Randomiser, scale_total: float | None) -> None:
    totals = summed_payloads(randomiser, GRADIENTS, draw_random=False)

    recovered = randomiser.recover(totals, len(GRADIENTS), draw_random=False)

    assert recovered.scale_total == scale_total


def test_scalar_recovers_weighted_mean() -> None:
    randomiser = ScalarRandomiser()
    rng = np.random.default_rng(3)
    payloads = [randomiser.randomise(g, draw_random=True, rng=rng).values for g in GRADIENTS]
    scales = np.array([payload[-1] for payload in payloads])

    recovered = randomiser.recover(np.sum(payloads, axis=0), 3, draw_random=True)

    expected = np.sum([a * g for a, g in zip(scales, GRADIENTS, strict=True)], axis=0)
    np.testing.assert_allclose(recovered.direction, expected / scales.sum(), rtol=1e-12)
    assert recovered.scale_total == pytest.approx(scales.sum(), rel=1e-15)
    assert np.all(scales > 0.0)
    assert np.all(scales <= 1.0)
    # Three providers give a random convex combination, not the mean.
    assert not np.allclose(recovered.direction, MEAN_GRADIENT)


@pytest.mark.parametrize(
    "randomiser",
    [
        pytest.param(ScalarRandomiser(), id="scalar"),
        pytest.param(VectorRandomiser(), id="vector"),
        pytest.param(UniformRandomiser(), id="uniform"),
    ],
)
def test_equal_gradients_recovered_exactly(randomiser: Randomiser) -> None:
    gradient = np.array([1.5, -2.0, 0.0, 4.0])
    totals = summed_payloads(
        randomiser, [gradient] * 5, draw_random=True, rng=np.random.default_rng(4)
    )

    recovered = randomiser.recover(totals, 5, draw_random=True)

    np.testing.assert_allclose(recovered.direction, gradient, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    "randomiser",
    [
        pytest.param(ScalarRandomiser(), id="scalar"),
        pytest.param(VectorRandomiser(), id="vector"),
        pytest.param(UniformRandomiser(), id="uniform"),
    ],
)
def test_many_providers_approach_mean(randomiser: Randomiser) -> None:
    providers = 20_000
    rng = np.random.default_rng(5)
    gradients = list(rng.normal(loc=[1.0, -2.0, 0.5], scale=1.0, size=(providers, 3)))
    mean = np.mean(gradients, axis=0)

    totals = summed_payloads(randomiser, gradients, draw_random=True, rng=rng)
    recovered = randomiser.recover(totals, providers, draw_random=True)

    # direction - mean = Σ a_i (g_i - mean) / Σ a_i. The a_i ~ U(0, 1] are independent
    # of the g_i, so the numerator has variance Σ (g_i - mean)² / 12. The denominator
    # is about N / 2, which gives each element the standard error below.
    spread = np.sqrt(np.sum((np.array(gradients) - mean) ** 2, axis=0) / 12)
    standard_error = spread / (providers / 2)
    assert np.all(np.abs(recovered.direction - mean) <= STANDARD_ERRORS * standard_error)
    assert recovered.scale_total == pytest.approx(providers / 2, rel=0.01)


def test_uniform_sample_doubled_has_mean_gradient() -> None:
    randomiser = UniformRandomiser(normalise=False)
    gradient = np.array([3.0, -2.0, 0.5, 0.0])
    rng = np.random.default_rng(6)
    draws = 20_000

    samples = np.array(
        [
            randomiser.randomise(gradient, draw_random=True, rng=rng).values[:-1]
            for _ in range(draws)
        ]
    )

    # g' = u·g with u ~ U(0, 1], so 2·g' has mean g and standard deviation |g| / sqrt(3).
    standard_error = np.abs(gradient) / math.sqrt(3) / math.sqrt(draws)
    assert np.all(np.abs(2 * samples.mean(axis=0) - gradient) <= STANDARD_ERRORS * standard_error)
    assert np.all(samples[:, 3] == 0.0)
    # Each sample lies between 0 and its gradient element.
    assert np.all(samples[:, 0] > 0.0)
    assert np.all(samples[:, 0] <= 3.0)
    assert np.all(samples[:, 1] < 0.0)
    assert np.all(samples[:, 1] >= -2.0)


def test_uniform_sends_sampling_ratios() -> None:
    gradient = np.array([3.0, -2.0, 0.0])

    values = UniformRandomiser().randomise(gradient, draw_random=True).values

    samples, ratios = values[:3], values[3:]
    assert np.all(ratios > 0.0)
    assert np.all(ratios <= 1.0)
    np.testing.assert_allclose(samples, ratios * gradient, rtol=0, atol=0)
    # A zero element gets a random ratio as well, so Σ u does not show it.
    assert ratios[2] != 1.0


def test_plain_uniform_doubles_mean_sample() -> None:
    randomiser = UniformRandomiser(normalise=False)
    providers = 20_000
    rng = np.random.default_rng(8)
    gradients = list(rng.normal(loc=[1.0, -2.0], scale=0.5, size=(providers, 2)))
    mean = np.mean(gradients, axis=0)

    totals = summed_payloads(randomiser, gradients, draw_random=True, rng=rng)
    recovered = randomiser.recover(totals, providers, draw_random=True)

    # 2·g'_i has variance g_i² / 3, so 2·Σ g' / N has standard error sqrt(Σ g_i² / 3) / N.
    standard_error = np.sqrt(np.sum(np.array(gradients) ** 2, axis=0) / 3) / providers
    assert np.all(np.abs(recovered.direction - mean) <= STANDARD_ERRORS * standard_error)
    assert totals[-1] == providers
    assert recovered.scale_total is None


def test_additive_recovers_exact_mean() -> None:
    randomiser = AdditiveRandomiser()
    totals = summed_payloads(randomiser, GRADIENTS, draw_random=True, rng=np.random.default_rng(9))

    recovered = randomiser.recover(totals, len(GRADIENTS), draw_random=True)

    # The masks reach clip/2 = 2**19, where float64 resolves steps of 2**-33.
    np.testing.assert_allclose(recovered.direction, MEAN_GRADIENT, rtol=0, atol=1e-8)
    assert recovered.scale_total is None


def test_additive_masks_hide_gradient() -> None:
    randomiser = AdditiveRandomiser(clip=8.0)

    values = randomiser.randomise([1.0, -1.0], draw_random=True).values

    masked, masks = values[:2], values[2:4]
    assert np.all(np.abs(masks) <= 4.0)
    np.testing.assert_allclose(masked - masks, [1.0, -1.0], rtol=0, atol=1e-15)
    assert values[-1] == 1.0
    assert not np.allclose(masked, [1.0, -1.0])


def test_additive_keeps_masked_values_inside_clip() -> None:
    randomiser = AdditiveRandomiser(clip=8.0)
    rng = np.random.default_rng(10)

    for _ in range(1000):
        payload = randomiser.randomise([100.0, -3.0, 4.0, -4.5], draw_random=True, rng=rng)
        assert np.all(np.abs(payload.values) <= 8.0)
        assert payload.clipped == 2

    unrandomised = randomiser.randomise([100.0, -3.0, 4.0, -4.5], draw_random=False)
    assert unrandomised.values[:4].tolist() == [4.0, -3.0, 4.0, -4.0]


def test_additive_rejects_invalid_clip() -> None:
    with pytest.raises(ConfigError, match="invalid clip for the additive randomiser"):
        AdditiveRandomiser(clip=0.0)


# Totals checks


@pytest.mark.parametrize(
    ("randomiser", "check"),
    [
        pytest.param(ScalarRandomiser(), "scale total 4 does not fit 3", id="scalar"),
        pytest.param(VectorRandomiser(), "scale total 4 of element 0 does not fit 3", id="vector"),
        pytest.param(AdditiveRandomiser(), "count total 4 does not equal the 3", id="additive"),
        pytest.param(
            UniformRandomiser(), "ratio total 4 of element 0 does not fit 3", id="uniform"
        ),
        pytest.param(
            UniformRandomiser(normalise=False),
            "count total 4 does not equal the 3",
            id="uniform-plain",
        ),
    ],
)
def test_unrandomised_duplicate_fails_check(randomiser: Randomiser, check: str) -> None:
    totals = summed_payloads(randomiser, [*GRADIENTS, GRADIENTS[0]], draw_random=False)

    with pytest.raises(TotalsCheckError, match=check):
        randomiser.recover(totals, len(GRADIENTS), draw_random=False)


@pytest.mark.parametrize("randomiser", ALL_RANDOMISERS)
def test_unrandomised_missing_contribution_fails_check(randomiser: Randomiser) -> None:
    totals = summed_payloads(randomiser, GRADIENTS[:2], draw_random=False)

    with pytest.raises(TotalsCheckError, match=r"does not (fit|equal)"):
        randomiser.recover(totals, len(GRADIENTS), draw_random=False)


@pytest.mark.parametrize(
    "randomiser",
    [
        pytest.param(AdditiveRandomiser(), id="additive"),
        pytest.param(UniformRandomiser(normalise=False), id="uniform-plain"),
    ],
)
@pytest.mark.parametrize("extra", [0, 2], ids=["missing", "duplicate"])
def test_randomised_count_check_is_exact(randomiser: Randomiser, extra: int) -> None:
    gradients = [*GRADIENTS, GRADIENTS[0], GRADIENTS[1]][: 2 + extra]
    totals = summed_payloads(randomiser, gradients, draw_random=True)

    with pytest.raises(TotalsCheckError, match="count total"):
        randomiser.recover(totals, 3, draw_random=True)


@pytest.mark.parametrize(
    ("randomiser", "totals", "check"),
    [
        pytest.param(
            ScalarRandomiser(), [1.0, 2.0, 3.5], "scale total 3.5 does not fit 3", id="scalar"
        ),
        pytest.param(
            ScalarRandomiser(), [1.0, 2.0, 0.0], "scale total 0 does not fit 3", id="scalar-zero"
        ),
        pytest.param(
            VectorRandomiser(),
            [1.0, 2.0, 1.5, 3.25],
            "scale total 3.25 of element 1 does not fit 3",
            id="vector",
        ),
        pytest.param(
            UniformRandomiser(),
            [1.0, 2.0, 0.0, 1.5],
            "ratio total 0 of element 0 does not fit 3",
            id="uniform",
        ),
    ],
)
def test_randomised_scale_total_outside_bounds_fails(
    randomiser: Randomiser, totals: list[float], check: str
) -> None:
    with pytest.raises(TotalsCheckError, match=check):
        randomiser.recover(np.array(totals), 3, draw_random=True)


def test_randomised_scale_total_below_count_accepted() -> None:
    recovered = VectorRandomiser().recover(np.array([1.0, 2.0, 0.5, 2.5]), 3, draw_random=True)

    np.testing.assert_allclose(recovered.direction, [2.0, 0.8])
    assert recovered.scale_total == 1.5


def test_additive_nonzero_mask_total_fails_unrandomised() -> None:
    randomiser = AdditiveRandomiser()
    totals = summed_payloads(randomiser, GRADIENTS, draw_random=False)
    totals[5] = 0.5

    with pytest.raises(TotalsCheckError, match=r"mask total of element 1 is 0\.5"):
        randomiser.recover(totals, 3, draw_random=False)


def test_additive_mean_beyond_gradient_clip_fails() -> None:
    randomiser = AdditiveRandomiser(clip=8.0)
    # Σ (g + b) = 20 and Σ b = 4 give a mean of 16 / 2 = 8, above clip / 2 = 4.
    totals = np.array([20.0, 4.0, 2.0])

    with pytest.raises(TotalsCheckError, match="mean gradient 8 of element 0 exceeds"):
        randomiser.recover(totals, 2, draw_random=True)


@pytest.mark.parametrize("randomiser", ALL_RANDOMISERS)
def test_non_finite_total_fails_check(randomiser: Randomiser) -> None:
    totals = summed_payloads(randomiser, GRADIENTS, draw_random=False)
    totals[0] = math.inf

    with pytest.raises(TotalsCheckError, match="slot 0 is inf"):
        randomiser.recover(totals, 3, draw_random=False)


@pytest.mark.parametrize(
    ("randomiser", "length"),
    [
        pytest.param(VectorRandomiser(), 5, id="vector-odd"),
        pytest.param(UniformRandomiser(), 5, id="uniform-odd"),
        pytest.param(AdditiveRandomiser(), 6, id="additive-even"),
        pytest.param(ScalarRandomiser(), 1, id="scalar-too-short"),
    ],
)
def test_totals_of_impossible_length_raise(randomiser: Randomiser, length: int) -> None:
    with pytest.raises(ValueError) as caught:
        randomiser.recover(np.ones(length), 1, draw_random=True)

    assert not isinstance(caught.value, TotalsCheckError)


# Registry


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("scalar", ScalarRandomiser()),
        ("vector", VectorRandomiser()),
        ("additive", AdditiveRandomiser(clip=64.0)),
        ("uniform", UniformRandomiser(normalise=False)),
    ],
)
def test_get_randomiser_by_name(name: str, expected: Randomiser) -> None:
    randomiser = get_randomiser(name, clip=64.0, uniform_normalise=False)

    assert randomiser == expected
    assert randomiser.name == name


def test_every_registered_name_resolves() -> None:
    assert [get_randomiser(name).name for name in RANDOMISERS] == list(RANDOMISERS)


def test_unknown_randomiser_rejected() -> None:
    with pytest.raises(ConfigError) as caught:
        get_randomiser("gaussian")

    assert "unknown randomiser 'gaussian'" in str(caught.value)
    assert "scalar, vector, additive, uniform" in str(caught.value)
