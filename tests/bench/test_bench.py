"""Run a small benchmark grid against mosquitto and check its results. No test asserts a timing."""

from __future__ import annotations

import asyncio
import copy
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

from gradchain.bench.analysis import STAGES
from gradchain.bench.grid import run_bench
from gradchain.bench.options import BenchOptions
from gradchain.node.broker import find_mosquitto, mosquitto_broker

pytestmark = pytest.mark.integration

ROUNDS = 2
PROVIDERS = 4


def options(broker_url: str, out: Path, **changes: Any) -> BenchOptions:
    settings: dict[str, Any] = {
        "providers": (PROVIDERS,),
        "sizes": (20,),
        "topologies": ("chain", "tree-2", "multi-2"),
        "modes": ("encrypted", "plaintext"),
        "rounds": ROUNDS,
        "warmup": 1,
        "key_bits": 256,
        "hosts": 1,
        "broker_url": broker_url,
        "embedded": False,
        "link_latency": None,
        "link_bandwidth_mbps": None,
        "max_obfuscators": 0,
        "out": out,
        "work": None,
        "command": "pytest tests/bench/test_bench.py",
    }
    settings.update(changes)
    return BenchOptions(**settings)


def empty_fields(value: Any, path: str = "") -> list[str]:
    """Return the paths of every None, NaN or empty container inside ``value``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return [path]
    if isinstance(value, dict):
        if not value:
            return [path]
        return [
            found for key, item in value.items() for found in empty_fields(item, f"{path}.{key}")
        ]
    if isinstance(value, list):
        if not value and not path.endswith(("skipped", "not_available")):
            return [path]
        return [
            found
            for index, item in enumerate(value)
            for found in empty_fields(item, f"{path}[{index}]")
        ]
    return []


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the grid once for the module against its own mosquitto, as the conftest fixture starts it.

    The conftest ``mosquitto`` fixture lives for one test, and this grid
    takes about 20 s, so the module starts mosquitto the same way once.
    """
    executable = find_mosquitto()
    if executable is None:
        reason = "mosquitto is not installed (apt-get install mosquitto)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}, and CI is set, so this is an error")
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("bench") / "results"

    async def run() -> None:
        async with mosquitto_broker(executable=executable) as broker:
            await run_bench(options(broker.address.url, out))

    asyncio.run(run())
    return out


@pytest.fixture(scope="module")
def report(results: Path) -> dict[str, Any]:
    return json.loads((results / "topology.json").read_text())


def test_bench_writes_every_output(results: Path) -> None:
    for name in ("topology.json", "topology.md", "latency_vs_providers.png", "stage_shares.png"):
        assert (results / name).stat().st_size > 0, name
    markdown = (results / "topology.md").read_text()
    assert "Command: `pytest tests/bench/test_bench.py`" in markdown
    assert "| chain | 4 | 20 | plaintext |" in markdown


def test_bench_json_has_every_field_filled(report: dict[str, Any]) -> None:
    report = copy.deepcopy(report)
    assert report["settings"]["link"] is None
    report["settings"].pop("link")
    for row in report["configurations"]:
        if row["kind"] == "chain":
            assert row.pop("fanout") is None
    assert empty_fields(report) == []
    assert len(report["configurations"]) == 6
    assert {(row["topology"], row["mode"]) for row in report["configurations"]} == {
        (topology, mode)
        for topology in ("chain", "tree-2", "multi-2")
        for mode in ("encrypted", "plaintext")
    }


def test_bench_hops_match_topologies(report: dict[str, Any]) -> None:
    # A chain takes N hops, a tree of fan-out 2 log2 N, and split portions
    # travel provider -> aggregator -> learner.
    expected_hops = {"chain": PROVIDERS, "tree-2": math.ceil(math.log2(PROVIDERS)), "multi-2": 2}
    for row in report["configurations"]:
        expected = expected_hops[row["topology"]]
        assert row["hops"] == expected, row["id"]
        assert row["critical_path"]["hops_median"] <= expected, row["id"]
        assert row["critical_path"]["hops_median"] >= 1, row["id"]


def test_bench_rounds_complete_with_every_provider(report: dict[str, Any]) -> None:
    for row in report["configurations"]:
        assert row["rounds_measured"] == ROUNDS, row["id"]
        assert row["complete_rounds"] == ROUNDS, row["id"]
        assert len(row["latency_s"]["rounds"]) == ROUNDS, row["id"]
        assert set(row["critical_path"]["stages_s"]) == set(STAGES), row["id"]


def test_bench_counts_broker_bytes(report: dict[str, Any]) -> None:
    for row in report["configurations"]:
        by_type = row["broker"]["by_type_last_round"]
        assert by_type["contribution"]["messages"] >= row["nodes"], row["id"]
        assert by_type["ack"]["messages"] >= row["nodes"], row["id"]
        assert by_type["round_start"]["messages"] == 1, row["id"]
        assert (
            row["broker"]["delivered_bytes_per_round"] > row["broker"]["published_bytes_per_round"]
        ), row["id"]


def test_bench_samples_learner_and_hosts(report: dict[str, Any]) -> None:
    for row in report["configurations"]:
        roles = row["processes"]["roles"]
        assert set(roles) == {"learner", "host"}, row["id"]
        assert roles["host"]["nodes"] == row["nodes"], row["id"]
        assert roles["learner"]["cpu_s"] > 0, row["id"]
        assert row["processes"]["per_node"]["peak_rss_mb"] > 0, row["id"]


def test_bench_runs_the_multi_aggregator_shape(report: dict[str, Any]) -> None:
    assert report["not_available"] == []
    rows = [row for row in report["configurations"] if row["topology"] == "multi-2"]
    assert {row["mode"] for row in rows} == {"encrypted", "plaintext"}
    for row in rows:
        assert row["nodes"] == PROVIDERS + 2, row["id"]
        # Each provider sends two portions, and each aggregator one sum.
        contributions = row["broker"]["by_type_last_round"]["contribution"]["messages"]
        assert contributions >= 2 * PROVIDERS + 2, row["id"]


def test_bench_fits_cost_model_per_mode(report: dict[str, Any]) -> None:
    modes = {model["mode"] for model in report["cost_model"]}
    assert modes == {"encrypted", "plaintext"}
    for model in report["cost_model"]:
        predictions = {(item["topology"], item["providers"]): item for item in model["predictions"]}
        assert predictions[("chain", 1000)]["hops"] == 1000
        assert predictions[("tree-2", 1000)]["hops"] == 10
