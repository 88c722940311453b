"""Tests for gradchain.bench.analysis: critical paths from round_timing events, shapes and the cost model."""

from __future__ import annotations

import math

import pytest

from gradchain.bench.analysis import (
    STAGES,
    critical_path,
    fit_cost_model,
    predict,
    shape_of,
    summarise_paths,
)


def chain_round() -> dict[str, dict[str, object]]:
    """Events of one round of the chain p1 -> p2 -> learner, with round numbers for times.

    p1 and p2 start at 10.1. p1 encrypts from 10.1 to 10.3 and sends at 10.32.
    p2 encrypts until 10.2 and receives p1's sum at 10.4, which it adds in 0.01 s;
    it sends at 10.45 after encoding for 0.02 s. The learner receives the sum at
    10.5, handles it in 0.01 s, decrypts from 10.52 for 0.2 s and completes at 10.8.
    """
    return {
        "learner": {
            "start_at": 10.0,
            "inputs": {"p2": [10.5, 0.01]},
            "decrypt_at": 10.52,
            "decrypt_s": 0.2,
            "completed_at": 10.8,
            "contributors": 2,
        },
        "p2": {
            "start_at": 10.1,
            "encrypt_at": 10.1,
            "encrypt_s": 0.1,
            "inputs": {"p2": [10.2, 0.001], "p1": [10.4, 0.01]},
            "sent_at": 10.45,
            "encode_s": 0.02,
        },
        "p1": {
            "start_at": 10.1,
            "encrypt_at": 10.1,
            "encrypt_s": 0.2,
            "inputs": {"p1": [10.3, 0.001]},
            "sent_at": 10.32,
            "encode_s": 0.01,
        },
    }


def test_critical_path_walks_back_to_first_provider() -> None:
    path = critical_path(2, chain_round(), "learner")
    assert path is not None
    assert path.hops == 2
    assert path.latency_s == pytest.approx(0.8)
    assert path.contributors == 2


def test_critical_path_splits_latency_into_stages() -> None:
    path = critical_path(2, chain_round(), "learner")
    assert path is not None
    stages = path.stages
    assert stages["start"] == pytest.approx(0.1)
    assert stages["encrypt"] == pytest.approx(0.2)
    # Handling at the learner, p2 and p1 (own add), plus p2's and p1's encoding.
    assert stages["add"] == pytest.approx(0.01 + 0.01 + 0.001 + 0.02 + 0.01)
    # p1 -> p2 and p2 -> learner.
    assert stages["transfer"] == pytest.approx((10.4 - 10.32) + (10.5 - 10.45))
    # p2: 10.41 to 10.43; p1: 10.301 to 10.31; learner: 10.51 to 10.52.
    assert stages["wait"] == pytest.approx(0.02 + 0.009 + 0.01)
    assert stages["decrypt"] == pytest.approx(0.2)
    assert sum(stages[name] for name in STAGES) == pytest.approx(path.latency_s)


def test_critical_path_starts_at_late_encryption() -> None:
    timings = chain_round()
    # p2's own encryption now finishes after p1's sum arrives.
    timings["p2"]["inputs"] = {"p2": [10.42, 0.001], "p1": [10.4, 0.01]}
    path = critical_path(2, timings, "learner")
    assert path is not None
    assert path.hops == 1
    assert path.stages["encrypt"] == pytest.approx(0.1)


def test_critical_path_of_incomplete_round_is_none() -> None:
    timings = chain_round()
    del timings["learner"]["completed_at"]
    assert critical_path(2, timings, "learner") is None


def test_summary_shares_add_up_to_one() -> None:
    path = critical_path(2, chain_round(), "learner")
    assert path is not None
    summary = summarise_paths([path, path])
    assert summary["latency_s"]["median"] == pytest.approx(0.8)
    assert math.fsum(summary["critical_path"]["shares"].values()) == pytest.approx(1.0)
    assert summary["critical_path"]["hops_median"] == 2


@pytest.mark.parametrize(
    ("kind", "providers", "fanout", "hops", "extra_inputs"),
    [
        ("chain", 64, None, 64, 0),
        ("tree", 4, 2, 2, 2),
        ("tree", 64, 4, 3, 9),
        ("tree", 1000, 8, 4, 22),
        # Each aggregator adds one portion of every provider; the learner adds M sums.
        ("multi", 64, 2, 2, 64),
        ("multi", 10, 3, 2, 11),
    ],
)
def test_shape_of_matches_generated_topologies(
    kind: str, providers: int, fanout: int | None, hops: int, extra_inputs: int
) -> None:
    shape = shape_of(kind, providers, fanout)
    assert shape.hops == hops
    if kind == "tree":
        assert shape.hops == max(1, math.ceil(math.log(providers, fanout) - 1e-9))
    assert shape.extra_inputs == extra_inputs


def test_cost_model_recovers_known_costs() -> None:
    rows = [
        {
            "latency_s": 0.5 + 0.2 + 0.01 + 0.004 * hops + 0.003 * extra,
            "encrypt_s": 0.5,
            "decrypt_s": 0.2,
            "hops": hops,
            "extra_inputs": extra,
        }
        for hops, extra in [(4, 0), (8, 0), (16, 0), (2, 2), (3, 9), (2, 14)]
    ]
    model = fit_cost_model(rows)
    assert model["parameters"]["c0_s"] == pytest.approx(0.01, abs=1e-9)
    assert model["parameters"]["per_hop_s"] == pytest.approx(0.004)
    assert model["parameters"]["per_extra_input_s"] == pytest.approx(0.003)
    assert model["r_squared"] == pytest.approx(1.0)
    chain_of_1000 = shape_of("chain", 1000, None)
    assert predict(model, chain_of_1000) == pytest.approx(0.71 + 4.0)


def test_cost_model_reliability() -> None:
    def row(hops: int, extra: int, noise: float = 0.0) -> dict[str, float]:
        return {
            "latency_s": 0.71 + 0.004 * hops + 0.003 * extra + noise,
            "encrypt_s": 0.5,
            "decrypt_s": 0.2,
            "hops": hops,
            "extra_inputs": extra,
        }

    full = fit_cost_model([row(4, 0), row(8, 0), row(2, 2), row(3, 9)])
    # One shape only (every configuration 2 hops): the per-hop cost cannot be fitted.
    one_shape = fit_cost_model([row(2, 3), row(2, 3, 0.001), row(2, 3, -0.001)])
    noisy = fit_cost_model([row(4, 0, 0.3), row(8, 0, -0.3), row(2, 2, 0.2), row(3, 9, -0.25)])

    assert full["reliable"] is True
    assert one_shape["reliable"] is False
    assert noisy["r_squared"] < 0.8
    assert noisy["reliable"] is False
