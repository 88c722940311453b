"""Step-size schedules, the learner's update rule and plaintext distributed gradient descent.

The learner minimises the model's objective plus the L2 penalty l2 * ||theta||^2.
With the default scalar randomiser it receives (sum a_i g_i) and (sum a_i) from
the providers each round, where g_i is provider i's gradient_sum and a_i in
(0, 1] its random scale, and updates

    theta_{k+1} = theta_k - eta_k * ((sum a_i g_i) / (sum a_i) + 2 * l2 * theta_k).

plaintext_distributed_gd runs the same rounds without encryption and with every
a_i = 1, so it gives the exact numbers the encrypted protocol should reproduce
when randomisation is off, whichever randomiser the job uses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt

from gradchain.errors import ConfigError
from gradchain.models.interface import (
    Model,
    create_local_state,
    initial_theta,
    parameter_count,
    provider_gradient,
)

FloatArray = npt.NDArray[np.float64]

ScheduleKind = Literal["constant", "inverse_sqrt", "inverse_square"]
SCHEDULE_KINDS: tuple[str, ...] = get_args(ScheduleKind)


@dataclass(frozen=True, kw_only=True)
class StepSchedule:
    """Step size eta_k for round k >= 1, given learning_rate = eta0.

    ``constant`` gives eta0, ``inverse_sqrt`` gives eta0 / sqrt(k) and
    ``inverse_square`` gives eta0 / k**2. Raises ConfigError for an unknown kind
    or a learning rate that is not a finite positive number.
    """

    kind: ScheduleKind
    learning_rate: float

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            known = ", ".join(repr(kind) for kind in SCHEDULE_KINDS)
            raise ConfigError(f"unknown step schedule {self.kind!r}, expected one of: {known}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(
                f"learning_rate must be a finite number > 0, got {self.learning_rate!r}"
            )

    def step_size(self, k: int) -> float:
        """Compute eta_k for round k, where the first round is k = 1.

        Raises ValueError for k < 1.
        """
        if k < 1:
            raise ValueError(f"round number k must be >= 1 (the first round is 1), got {k}")
        if self.kind == "constant":
            return float(self.learning_rate)
        if self.kind == "inverse_sqrt":
            return self.learning_rate / math.sqrt(k)
        return self.learning_rate / k**2


def _validate_l2(l2: float) -> None:
    if not (math.isfinite(l2) and l2 >= 0):
        raise ConfigError(f"l2 must be a finite number >= 0, got {l2!r}")


def randomised_direction(gradients: Sequence[npt.ArrayLike], scales: Sequence[float]) -> FloatArray:
    """Compute (sum a_i g_i) / (sum a_i), the learner's direction from its decrypted totals.

    ``gradients`` are the providers' gradient sums g_i and ``scales`` their
    random scales a_i in (0, 1]. With every a_i = 1 the result is the mean of
    the g_i. Raises ValueError for no gradients, a count or shape mismatch, or a
    scale outside (0, 1].
    """
    if len(gradients) == 0:
        raise ValueError("gradients is empty, expected at least one provider's gradient")
    if len(scales) != len(gradients):
        raise ValueError(
            f"expected one scale per gradient, got {len(scales)} scales "
            f"for {len(gradients)} gradients"
        )

    scale_array = np.asarray(scales, dtype=np.float64)
    invalid = ~((scale_array > 0.0) & (scale_array <= 1.0))
    if invalid.any():
        index = int(np.flatnonzero(invalid)[0])
        raise ValueError(
            f"scales must lie in (0, 1], got scales[{index}] = {float(scale_array[index])!r}"
        )

    gradient_arrays = [np.asarray(gradient, dtype=np.float64) for gradient in gradients]
    expected_shape = gradient_arrays[0].shape
    if len(expected_shape) != 1:
        raise ValueError(f"gradients must be 1-D vectors, got shape {expected_shape}")
    for index, gradient in enumerate(gradient_arrays):
        if gradient.shape != expected_shape:
            raise ValueError(
                f"gradients[{index}] has shape {gradient.shape}, expected {expected_shape} "
                "like gradients[0]"
            )

    weighted_sum = np.zeros(expected_shape, dtype=np.float64)
    for scale, gradient in zip(scale_array, gradient_arrays, strict=True):
        weighted_sum += scale * gradient
    direction: FloatArray = weighted_sum / scale_array.sum()
    return direction


def update(
    theta: npt.ArrayLike,
    direction: npt.ArrayLike,
    k: int,
    schedule: StepSchedule,
    l2: float,
) -> FloatArray:
    """Compute theta - eta_k * (direction + 2 * l2 * theta) as a new array.

    ``direction`` is the (randomised) mean gradient, and 2 * l2 * theta is the
    gradient of the penalty l2 * ||theta||^2. Raises ValueError when theta or
    direction is not a finite vector of the same shape or k < 1, and ConfigError
    when l2 is invalid or the step overflows, which means the step size is far
    too large.
    """
    theta_array = np.asarray(theta, dtype=np.float64)
    direction_array = np.asarray(direction, dtype=np.float64)
    if theta_array.ndim != 1:
        raise ValueError(f"theta must be a 1-D vector, got shape {theta_array.shape}")
    if direction_array.shape != theta_array.shape:
        raise ValueError(
            f"direction must have shape {theta_array.shape} like theta, "
            f"got shape {direction_array.shape}"
        )
    if not np.all(np.isfinite(theta_array)):
        raise ValueError("theta contains NaN or infinite values")
    if not np.all(np.isfinite(direction_array)):
        raise ValueError("direction contains NaN or infinite values")
    _validate_l2(l2)

    step_size = schedule.step_size(k)
    # Overflow is reported below as an error that names the settings, not as a numpy warning.
    with np.errstate(over="ignore", invalid="ignore"):
        new_theta: FloatArray = theta_array - step_size * (direction_array + 2.0 * l2 * theta_array)
    if not np.all(np.isfinite(new_theta)):
        raise ConfigError(
            f"gradient descent diverged in round {k}: theta overflowed with step size "
            f"{step_size:g} and l2 {l2:g} (lower learning_rate or l2)"
        )
    return new_theta


@dataclass(frozen=True, kw_only=True, eq=False)
class TrainingResult:
    """Outcome of a gradient descent run.

    ``history`` has one entry per round with the keys ``round``, ``step_size``
    (eta_k), ``step_norm`` (max |theta_{k+1} - theta_k|) and, when evaluation
    data was given, the model's evaluate() metrics for theta_{k+1}.
    """

    theta: FloatArray
    rounds_run: int
    converged: bool
    """True when the run stopped because step_norm fell below the tolerance."""
    history: list[dict[str, float]] = field(default_factory=list)


def plaintext_distributed_gd(
    shards: Sequence[tuple[npt.ArrayLike, npt.ArrayLike]],
    model: Model,
    schedule: StepSchedule,
    l2: float,
    rounds: int,
    tolerance: float,
    theta0: npt.ArrayLike | None = None,
    evaluate_on: tuple[npt.ArrayLike, npt.ArrayLike] | None = None,
    *,
    parameters: int | None = None,
) -> TrainingResult:
    """Run the learner's rounds on plaintext shards with every random scale a_i = 1.

    Each round the direction is the mean over shards of model.gradient_sum, which
    is what the encrypted protocol decrypts when randomisation is off. Training
    stops after ``rounds`` rounds, or earlier once max |theta_{k+1} - theta_k|
    < ``tolerance``. Passing the pooled rows as one shard gives plain gradient
    descent on the summed objective. ``evaluate_on`` is an optional (X, y)
    pair evaluated after every round.

    ``theta0`` defaults to the model's initial_theta for ``parameters``
    values, which are zeros for the stateless regressions. ``parameters``
    defaults to the largest count that a shard needs (the columns of X for
    the regressions). A model that keeps provider state gets one state per shard,
    created before round 1, as a provider daemon would.
    """
    if len(shards) == 0:
        raise ValueError("shards is empty, expected at least one (X, y) pair")
    if rounds < 1:
        raise ConfigError(f"rounds must be >= 1, got {rounds!r}")
    if not tolerance >= 0:
        raise ConfigError(f"tolerance must be >= 0, got {tolerance!r}")
    _validate_l2(l2)

    first_X = np.asarray(shards[0][0], dtype=np.float64)
    if first_X.ndim != 2:
        raise ValueError(
            "X of shards[0] must be a 2-D array of shape (rows, features), "
            f"got shape {first_X.shape}"
        )
    if parameters is None:
        # The largest count fits every shard, for example every item id that any shard rates.
        parameters = max(parameter_count(model, X, y) for X, y in shards)
    if theta0 is None:
        theta = initial_theta(model, parameters)
    else:
        theta = np.array(theta0, dtype=np.float64)
        if theta.shape != (parameters,):
            raise ValueError(
                f"theta0 must have shape ({parameters},) to match the model's {parameters} "
                f"parameters, got shape {theta.shape}"
            )

    states = [create_local_state(model, X, y) for X, y in shards]
    unit_scales = [1.0] * len(shards)
    history: list[dict[str, float]] = []
    for k in range(1, rounds + 1):
        gradients = [
            provider_gradient(model, theta, X, y, state)
            for (X, y), state in zip(shards, states, strict=True)
        ]
        direction = randomised_direction(gradients, unit_scales)
        new_theta = update(theta, direction, k, schedule, l2)
        step_norm = float(np.max(np.abs(new_theta - theta), initial=0.0))
        theta = new_theta

        record: dict[str, float] = {
            "round": k,
            "step_size": schedule.step_size(k),
            "step_norm": step_norm,
        }
        if evaluate_on is not None:
            record.update(model.evaluate(theta, evaluate_on[0], evaluate_on[1]))
        history.append(record)

        if step_norm < tolerance:
            return TrainingResult(theta=theta, rounds_run=k, converged=True, history=history)
    return TrainingResult(theta=theta, rounds_run=rounds, converged=False, history=history)
