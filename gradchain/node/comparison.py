"""The ``pooled_reference`` block of metrics.json: a run's theta next to the exact pooled solution.

``gradchain run`` has every provider's data file on one machine, so after
the run it can solve the job's objective on the pooled rows
(:mod:`gradchain.models.reference`). The block reports how far the
encrypted run and the plaintext gradient descent baseline are from that
solution.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..models import get_model
from ..models.reference import compare_with_pooled, solve_pooled
from ..topology import Topology, load_eval_data, load_provider_data

logger = logging.getLogger(__name__)


def pooled_reference(
    topology: Topology, *, theta: Sequence[float] | None, baseline_theta: Sequence[float] | None
) -> dict[str, Any] | None:
    """Solve the job on the pooled provider rows and compare two thetas with the solution.

    Returns a JSON-ready dict with ``method``, ``converged``, ``scores``
    (the solution's held-out scores, empty without held-out data),
    ``comparison`` (for ``theta``, the encrypted run's result, or None when
    the run produced none) and ``baseline_comparison`` (for
    ``baseline_theta``, plaintext gradient descent). Returns None, with a
    warning when solving failed, when the model has no pooled solver.
    """
    job = topology.job
    model = get_model(job.model, topology.model_settings)
    shards = [load_provider_data(topology, node_id) for node_id in topology.providers]
    try:
        solution = solve_pooled(model, shards, l2=job.l2, parameters=job.features)
    except (ValueError, np.linalg.LinAlgError) as error:
        logger.warning("solving job %s on the pooled rows failed: %s", job.id, error)
        return None
    if solution is None:
        return None

    evaluate_on = load_eval_data(topology)
    scores: dict[str, float] = {}
    if evaluate_on is not None:
        scores = {
            name: float(value)
            for name, value in model.evaluate(solution.theta, *evaluate_on).items()
        }
    comparison = None
    if theta:
        comparison = compare_with_pooled(model, np.asarray(theta), solution, shards)
    return {
        "method": solution.method,
        "converged": solution.converged,
        "scores": scores,
        "comparison": comparison,
        "baseline_comparison": None
        if not baseline_theta
        else compare_with_pooled(model, np.asarray(baseline_theta), solution, shards),
    }


def describe_comparison(comparison: Mapping[str, Any] | None) -> str | None:
    """Describe a ``comparison`` dict of :func:`pooled_reference` in one line, or return None."""
    if not comparison:
        return None
    if "max_principal_angle_degrees" in comparison:
        angles = ", ".join(f"{angle:.3g}" for angle in comparison["principal_angles_degrees"])
        return (
            f"max principal angle {comparison['max_principal_angle_degrees']:.3g} degrees "
            f"(all: {angles}); explained variance ratio "
            f"{comparison['explained_variance_ratio']:.4f} of the optimum "
            f"{comparison['optimal_explained_variance_ratio']:.4f} on the pooled training rows"
        )
    text = f"largest parameter difference {comparison['theta_max_difference']:.3g}"
    if "theta_relative_difference" in comparison:
        text += f", relative difference {comparison['theta_relative_difference']:.3g}"
    return text


def describe_flagged(flagged: Mapping[str, int] | None) -> str | None:
    """Describe the providers' counts of flagged rows in one line, or return None when off."""
    if flagged is None:
        return None
    counts = ", ".join(
        f"{node} {count}" for node, count in sorted(flagged.items(), key=_node_order)
    )
    return (
        f"{sum(flagged.values())} rows flagged, counted by each provider on its own rows "
        f"({len(flagged)} providers reported: {counts or 'none'})"
    )


def _node_order(item: tuple[str, int]) -> tuple[int, str]:
    """Sort p2 before p10: by the length of the id, then the id."""
    return len(item[0]), item[0]
