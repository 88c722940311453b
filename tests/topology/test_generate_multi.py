"""Tests for write_multi and ``gradchain topology multi``: providers split over aggregators."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gradchain.errors import ConfigError
from gradchain.topology import load_topology
from gradchain.topology.generate import write_multi


def test_portions_go_to_distinct_aggregators(tmp_path: Path) -> None:
    topology = load_topology(
        write_multi(tmp_path, "breast-cancer", 6, 2, aggregators=3, key_bits=512)
    )

    assert topology.job.id == "breast-cancer-multi"
    assert topology.providers == ("p1", "p2", "p3", "p4", "p5", "p6")
    assert [topology.nodes[p].next for p in topology.providers] == [
        ("a1", "a2"),
        ("a2", "a3"),
        ("a3", "a1"),
        ("a1", "a2"),
        ("a2", "a3"),
        ("a3", "a1"),
    ]
    for aggregator in ("a1", "a2", "a3"):
        assert topology.nodes[aggregator].next == ("learner",)
        assert topology.nodes[aggregator].data is None
    assert topology.hops() == 2


def test_aggregators_default_to_one_per_portion(tmp_path: Path) -> None:
    topology = load_topology(write_multi(tmp_path, "breast-cancer", 4, 3, key_bits=512))

    assert sorted(set(topology.nodes) - set(topology.providers)) == ["a1", "a2", "a3"]
    assert all(len(set(topology.nodes[p].next)) == 3 for p in topology.providers)


def test_settings_pass_through_like_write_chain(tmp_path: Path) -> None:
    topology = load_topology(
        write_multi(
            tmp_path, "breast-cancer", 4, 2, key_bits=512, rounds=7, randomise=False, frac_bits=24
        )
    )

    assert topology.job.rounds == 7
    assert topology.job.randomise is False
    assert topology.crypto.frac_bits == 24


@pytest.mark.parametrize(
    ("portions", "aggregators", "message"),
    [
        (1, None, "portions must be at least 2, got 1"),
        (3, 2, "3 portions need at least 3 aggregators, got 2"),
    ],
)
def test_impossible_shapes_rejected(
    tmp_path: Path, portions: int, aggregators: int | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        write_multi(tmp_path, "breast-cancer", 4, portions, aggregators=aggregators)
    assert not (tmp_path / "topology.toml").exists()


def test_unknown_setting_rejected(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="'fanout'"):
        write_multi(tmp_path, "breast-cancer", 4, 2, fanout=3)


def test_cli_writes_multi_topology(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "gradchain", "topology", "multi", "--providers", "5"]
    options = ["--portions", "2", "--aggregators", "4", "--out", str(tmp_path), "--key-bits", "512"]

    result = subprocess.run([*command, *options], capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    topology = load_topology(tmp_path / "topology.toml")
    assert topology.nodes["p4"].next == ("a4", "a1")
    assert len(topology.nodes) == 9


def test_shared_data_files_left_untouched(tmp_path: Path) -> None:
    from gradchain.topology import write_chain

    write_chain(tmp_path, "breast-cancer", 4, filename="chain.toml", key_bits=512)
    before = {path.name: path.read_bytes() for path in (tmp_path / "data").iterdir()}
    (tmp_path / "data" / "p1.npz").touch()
    stamp = (tmp_path / "data" / "p1.npz").stat().st_mtime_ns

    write_multi(tmp_path, "breast-cancer", 4, 2, filename="multi.toml", key_bits=512)

    after = {path.name: path.read_bytes() for path in (tmp_path / "data").iterdir()}
    assert after == before
    assert (tmp_path / "data" / "p1.npz").stat().st_mtime_ns == stamp


def test_learning_rate_default_per_dataset(tmp_path: Path) -> None:
    from gradchain.topology import write_chain

    # 4,422 warfarin training rows over 6 providers: 737 each, so 0.003 * 221 / 737.
    scaled = load_topology(
        write_chain(tmp_path / "a", "warfarin", 6, key_bits=512, min_contributors=1)
    )
    chosen = load_topology(
        write_chain(
            tmp_path / "b", "warfarin", 6, key_bits=512, min_contributors=1, learning_rate=0.01
        )
    )
    usual = load_topology(write_chain(tmp_path / "c", "breast-cancer", 6, key_bits=512))

    assert scaled.job.learning_rate == pytest.approx(0.0009, rel=1e-3)
    assert chosen.job.learning_rate == 0.01
    assert usual.job.learning_rate == 0.05
