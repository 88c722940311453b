"""Tests for gradchain.topology.generate: chain and tree files that load back."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gradchain.data import load_builtin, load_data_file, train_test_split
from gradchain.errors import ConfigError, TopologyError
from gradchain.topology import load_provider_data, load_topology, write_chain, write_tree
from tests.models.helpers import movielens_folder

BREAST_CANCER_ROWS = 569


def provider_rows(path: Path) -> list[np.ndarray]:
    topology = load_topology(path)
    return [load_provider_data(topology, provider)[0] for provider in topology.providers]


def test_chain_round_trip(tmp_path: Path) -> None:
    path = write_chain(tmp_path, "breast-cancer", 5)

    topology = load_topology(path)

    assert path == tmp_path / "topology.toml"
    assert topology.job.id == "breast-cancer-chain"
    assert topology.job.features == 31
    assert topology.providers == ("p1", "p2", "p3", "p4", "p5")
    assert [topology.successor_of(p) for p in topology.providers] == [
        "p2",
        "p3",
        "p4",
        "p5",
        "learner",
    ]
    assert topology.hops() == 5


@pytest.mark.parametrize("providers", [1, 3, 12])
def test_chain_hops_equal_providers(tmp_path: Path, providers: int) -> None:
    path = write_chain(tmp_path, "breast-cancer", providers, min_contributors=1)

    assert load_topology(path).hops() == providers


def test_chain_settings_written(tmp_path: Path) -> None:
    path = write_chain(
        tmp_path,
        "breast-cancer",
        4,
        job_id="custom",
        rounds=9,
        learning_rate=0.5,
        schedule="inverse_square",
        l2=0.0,
        min_contributors=4,
        randomise=False,
        tolerance=0.0,
        round_timeout=5.0,
        key_bits=512,
        frac_bits=16,
        clip=10.0,
    )

    topology = load_topology(path)

    assert topology.job.id == "custom"
    assert topology.job.rounds == 9
    assert topology.job.learning_rate == 0.5
    assert topology.job.schedule == "inverse_square"
    assert topology.job.l2 == 0.0
    assert topology.job.min_contributors == 4
    assert topology.job.randomise is False
    assert topology.job.tolerance == 0.0
    assert topology.job.round_timeout == 5.0
    assert topology.crypto.key_bits == 512
    assert topology.crypto.frac_bits == 16
    assert topology.crypto.clip == 10.0


def test_crypto_settings_written(tmp_path: Path) -> None:
    path = write_tree(
        tmp_path,
        "breast-cancer",
        4,
        2,
        key_bits=1024,
        packing=True,
        value_bits=58,
        djn=True,
        obfuscator_bits=400,
        pool_size=3,
    )

    topology = load_topology(path)

    assert topology.crypto.packing is True
    assert topology.crypto.value_bits == 58
    assert topology.crypto.djn is True
    assert topology.crypto.obfuscator_bits == 400
    assert topology.crypto.pool_size == 3


def test_unset_crypto_settings_left_out(tmp_path: Path) -> None:
    path = write_chain(tmp_path, "breast-cancer", 3, packing=False, djn=False)

    document = tomllib.loads(path.read_text(encoding="utf-8"))

    assert document["crypto"] == {
        "key_bits": 2048,
        "frac_bits": 32,
        "clip": 2.0**20,
        "packing": False,
        "djn": False,
    }


def test_invalid_crypto_setting_rejected_before_writing(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match=r"crypto\.obfuscator_bits"):
        write_chain(tmp_path, "breast-cancer", 3, djn=False, obfuscator_bits=512)

    assert not (tmp_path / "topology.toml").exists()


def test_written_paths_are_relative(tmp_path: Path) -> None:
    path = write_chain(tmp_path, "breast-cancer", 3)

    document = tomllib.loads(path.read_text(encoding="utf-8"))

    assert document["learner"] == {
        "id": "learner",
        "public_key": "keys/learner.pub.json",
        "private_key": "keys/learner.key.json",
        "eval_data": "data/eval.npz",
    }
    assert [node["data"] for node in document["nodes"]] == [
        "data/p1.npz",
        "data/p2.npz",
        "data/p3.npz",
    ]


def test_key_files_not_created(tmp_path: Path) -> None:
    topology = load_topology(write_chain(tmp_path, "breast-cancer", 3))

    assert topology.learner.public_key == (tmp_path / "keys" / "learner.pub.json").resolve()
    assert not topology.learner.public_key.exists()
    assert not topology.learner.private_key.exists()


def test_rows_dealt_without_overlap(tmp_path: Path) -> None:
    path = write_chain(tmp_path, "breast-cancer", 12)

    shards = provider_rows(path)
    eval_X, _ = load_data_file(tmp_path / "data" / "eval.npz")
    every_row = np.vstack([*shards, eval_X])

    assert all(len(shard) > 0 for shard in shards)
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert len(every_row) == BREAST_CANCER_ROWS
    assert len(np.unique(every_row, axis=0)) == BREAST_CANCER_ROWS


def test_eval_file_holds_test_split(tmp_path: Path) -> None:
    write_chain(tmp_path, "breast-cancer", 3, test_fraction=0.3, seed=4)

    X, y = load_data_file(tmp_path / "data" / "eval.npz")
    _, expected = train_test_split(load_builtin("breast-cancer", test_fraction=0.3, seed=4), 0.3, 4)

    np.testing.assert_array_equal(X, expected.X)
    np.testing.assert_array_equal(y, expected.y)


def test_zero_test_fraction_writes_no_eval_file(tmp_path: Path) -> None:
    path = write_chain(tmp_path, "breast-cancer", 3, test_fraction=0.0)

    assert load_topology(path).learner.eval_data is None
    assert not (tmp_path / "data" / "eval.npz").exists()
    assert sum(map(len, provider_rows(path))) == BREAST_CANCER_ROWS


def test_same_seed_same_shards(tmp_path: Path) -> None:
    first = provider_rows(write_chain(tmp_path / "a", "breast-cancer", 4, seed=7))
    second = provider_rows(write_chain(tmp_path / "b", "breast-cancer", 4, seed=7))

    for left, right in zip(first, second, strict=True):
        np.testing.assert_array_equal(left, right)


def test_other_seed_other_shards(tmp_path: Path) -> None:
    first = provider_rows(write_chain(tmp_path / "a", "breast-cancer", 4, seed=7))
    second = provider_rows(write_chain(tmp_path / "b", "breast-cancer", 4, seed=8))

    assert not np.array_equal(first[0], second[0])


# Each case: providers, fanout, aggregator count, hops.
TREE_SHAPES = [
    pytest.param(14, 7, 2, 2, id="14-providers-fanout-7"),
    pytest.param(12, 4, 3, 2, id="12-providers-fanout-4"),
    pytest.param(4, 4, 0, 1, id="providers-equal-fanout"),
    pytest.param(1, 2, 0, 1, id="single-provider"),
    pytest.param(5, 4, 2, 2, id="one-above-fanout"),
    pytest.param(17, 4, 7, 3, id="three-levels"),
    pytest.param(50, 3, 25, 4, id="four-levels"),
]


@pytest.mark.parametrize(("providers", "fanout", "aggregators", "hops"), TREE_SHAPES)
def test_tree_shape(
    tmp_path: Path, providers: int, fanout: int, aggregators: int, hops: int
) -> None:
    path = write_tree(tmp_path, "breast-cancer", providers, fanout, min_contributors=1)

    topology = load_topology(path)
    aggregator_ids = [node_id for node_id in topology.nodes if node_id not in topology.providers]

    assert len(topology.providers) == providers
    assert aggregator_ids == [f"a{number}" for number in range(1, aggregators + 1)]
    assert topology.hops() == hops
    assert 1 <= len(topology.inputs_of("learner")) <= fanout
    for aggregator in aggregator_ids:
        assert 1 <= len(topology.inputs_of(aggregator)) <= fanout
    for provider in topology.providers:
        assert topology.inputs_of(provider) == frozenset()


def test_tree_14_providers_fanout_7(tmp_path: Path) -> None:
    topology = load_topology(write_tree(tmp_path, "breast-cancer", 14, 7))

    assert topology.job.id == "breast-cancer-tree"
    assert topology.inputs_of("a1") == frozenset(f"p{number}" for number in range(1, 8))
    assert topology.inputs_of("a2") == frozenset(f"p{number}" for number in range(8, 15))
    assert topology.inputs_of("learner") == frozenset({"a1", "a2"})
    assert topology.nodes["a1"].data is None
    assert topology.nodes["a2"].data is None


def test_tree_groups_differ_by_at_most_one(tmp_path: Path) -> None:
    topology = load_topology(write_tree(tmp_path, "breast-cancer", 10, 4, min_contributors=1))

    sizes = [len(topology.inputs_of(aggregator)) for aggregator in ("a1", "a2", "a3")]

    assert sizes == [4, 3, 3]


def test_tree_rejects_fanout_below_2(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fanout must be at least 2, got 1"):
        write_tree(tmp_path, "breast-cancer", 4, 1)

    assert list(tmp_path.iterdir()) == []


def test_existing_topology_not_overwritten(tmp_path: Path) -> None:
    path = write_chain(tmp_path, "breast-cancer", 3)
    before = path.read_text(encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        write_chain(tmp_path, "breast-cancer", 3, rounds=5)

    assert str(path) in str(caught.value)
    assert "overwrite=True" in str(caught.value)
    assert path.read_text(encoding="utf-8") == before


def test_overwrite_flag_replaces_topology(tmp_path: Path) -> None:
    write_chain(tmp_path, "breast-cancer", 3)

    path = write_chain(tmp_path, "breast-cancer", 3, rounds=5, overwrite=True)

    assert load_topology(path).job.rounds == 5


def test_other_data_in_data_dir_not_overwritten(tmp_path: Path) -> None:
    write_chain(tmp_path, "breast-cancer", 3, filename="chain.toml")
    before = (tmp_path / "data" / "p1.npz").read_bytes()

    with pytest.raises(ConfigError, match=r"p1\.npz already exists with different data"):
        write_chain(tmp_path, "breast-cancer", 3, filename="other.toml", seed=1)

    assert (tmp_path / "data" / "p1.npz").read_bytes() == before
    assert not (tmp_path / "other.toml").exists()


def test_chain_and_tree_share_data_dir(tmp_path: Path) -> None:
    chain = write_chain(tmp_path, "breast-cancer", 6, filename="chain.toml", data_dir="shared")
    tree = write_tree(tmp_path, "breast-cancer", 6, 3, filename="tree.toml", data_dir="shared")

    assert load_topology(chain).nodes["p4"].data == load_topology(tree).nodes["p4"].data


def test_nested_layout(tmp_path: Path) -> None:
    path = write_tree(
        tmp_path,
        "breast-cancer",
        12,
        4,
        filename="bc-tree.toml",
        data_dir="bc/data",
        keys_dir="bc/keys",
    )

    topology = load_topology(path)

    assert path == tmp_path / "bc-tree.toml"
    assert topology.nodes["p12"].data == (tmp_path / "bc" / "data" / "p12.npz").resolve()
    assert topology.learner.public_key == (tmp_path / "bc" / "keys" / "learner.pub.json").resolve()


def test_more_providers_than_rows_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="into 4 parts: it has only 3 rows"):
        write_chain(tmp_path, "phones", 4, min_contributors=1, test_fraction=0.0)

    assert list(tmp_path.iterdir()) == []


def test_phones_one_row_per_provider(tmp_path: Path) -> None:
    path = write_chain(tmp_path, "phones", 3, test_fraction=0.0)

    rows = provider_rows(path)

    assert [len(shard) for shard in rows] == [1, 1, 1]
    assert load_topology(path).job.features == 2


def test_invalid_settings_rejected_before_writing(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="unknown schedule 'linear'"):
        write_chain(tmp_path, "breast-cancer", 3, schedule="linear")

    assert list(tmp_path.iterdir()) == []


def test_min_contributors_above_providers_rejected(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="only 2 providers"):
        write_chain(tmp_path, "breast-cancer", 2)


def test_chain_zero_providers_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="providers must be at least 1, got 0"):
        write_chain(tmp_path, "breast-cancer", 0)


def test_tree_zero_providers_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="providers must be at least 1, got 0"):
        write_tree(tmp_path, "breast-cancer", 0, 4)


def test_absolute_data_dir_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data_dir must be relative"):
        write_chain(tmp_path, "breast-cancer", 3, data_dir=str(tmp_path / "data"))


def test_unknown_dataset_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown data set 'iris'"):
        write_chain(tmp_path, "iris", 3)


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_warfarin_chain_from_shipped_copy(tmp_path: Path) -> None:
    path = write_chain(tmp_path, "warfarin", 20)

    topology = load_topology(path)
    rows = provider_rows(path)

    assert topology.job.model == "linear"
    assert topology.job.features == 21
    assert len(topology.providers) == 20
    assert sum(len(shard) for shard in rows) == 4422
    assert {len(shard) for shard in rows} == {221, 222}
    assert (tmp_path / "data" / "standardisation.json").is_file()


def test_shipped_warfarin_data_reproduced(tmp_path: Path) -> None:
    shipped = load_topology(EXAMPLES / "warfarin-chain.toml")
    job = shipped.job

    path = write_chain(
        tmp_path,
        "warfarin",
        20,
        data_dir="warfarin/data",
        learning_rate=job.learning_rate,
        l2=job.l2,
        rounds=job.rounds,
        data_path=EXAMPLES / "warfarin" / "patients.csv",
    )

    generated = load_topology(path)
    for provider in shipped.providers:
        expected_X, expected_y = load_provider_data(shipped, provider)
        X, y = load_provider_data(generated, provider)
        np.testing.assert_array_equal(X, expected_X)
        np.testing.assert_array_equal(y, expected_y)
    statistics = "warfarin/data/standardisation.json"
    assert (tmp_path / statistics).read_text() == (EXAMPLES / statistics).read_text()


def test_digits_tree_with_components(tmp_path: Path) -> None:
    path = write_tree(tmp_path, "digits", 8, 4, model_settings={"components": 3})

    topology = load_topology(path)
    document = tomllib.loads(path.read_text())

    assert topology.job.model == "pca"
    assert topology.job.features == 64 * 3
    assert topology.model_settings == {"components": 3}
    assert document["model"] == {"components": 3}
    X, _ = load_provider_data(topology, "p1")
    assert X.shape[1] == 64


def test_invalid_model_setting_rejected_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model setting 'rank' is unknown"):
        write_chain(tmp_path, "digits", 3, model_settings={"rank": 4})

    assert list(tmp_path.iterdir()) == []


def test_builtin_dataset_rejects_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'digits' is built in and takes no path"):
        write_chain(tmp_path, "digits", 3, data_path=tmp_path)


def test_movielens_needs_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'movielens' needs the path"):
        write_chain(tmp_path, "movielens", 3)


def test_movielens_keeps_each_user_at_one_provider(tmp_path: Path) -> None:
    folder = movielens_folder()

    path = write_chain(
        tmp_path, "movielens", 10, data_path=folder, model_settings={"rank": 4}, test_fraction=0.1
    )

    topology = load_topology(path)
    users = [set(shard[:, 0].tolist()) for shard in provider_rows(path)]
    evaluation = load_data_file(tmp_path / "data" / "eval.npz")[0]
    assert topology.job.model == "factorisation"
    assert topology.job.features == 1682 * 5
    assert sum(len(group) for group in users) == len(set().union(*users))
    assert set(evaluation[:, 0].tolist()).isdisjoint(set().union(*users))
    assert set(evaluation[:, 2].tolist()) == {0.0, 1.0}


@pytest.mark.parametrize("write", [write_chain, write_tree], ids=["chain", "tree"])
def test_randomiser_written(tmp_path: Path, write: Any) -> None:
    shape = (4,) if write is write_chain else (4, 2)

    path = write(tmp_path, "breast-cancer", *shape, randomiser="additive", key_bits=512)

    document = tomllib.loads(path.read_text(encoding="utf-8"))
    assert document["job"]["randomiser"] == "additive"
    assert "uniform_normalise" not in document["job"]
    assert load_topology(path).job.randomiser == "additive"


def test_uniform_normalise_written(tmp_path: Path) -> None:
    path = write_chain(
        tmp_path, "breast-cancer", 4, randomiser="uniform", uniform_normalise=False, key_bits=512
    )

    topology = load_topology(path)
    assert topology.job.randomiser == "uniform"
    assert topology.job.uniform_normalise is False


def test_normalise_without_uniform_rejected(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match=r"job\.uniform_normalise"):
        write_chain(tmp_path, "breast-cancer", 4, uniform_normalise=False, key_bits=512)

    assert not (tmp_path / "topology.toml").exists()


def test_unknown_randomiser_rejected_before_writing(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="unknown randomiser 'gaussian'"):
        write_chain(tmp_path, "breast-cancer", 4, randomiser="gaussian", key_bits=512)

    assert not (tmp_path / "topology.toml").exists()


def test_cli_writes_randomiser(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "gradchain", "topology", "tree", "--providers", "4"]
    options = ["--out", str(tmp_path), "--key-bits", "512"]
    randomiser = ["--randomiser", "uniform", "--no-uniform-normalise"]

    result = subprocess.run(
        [*command, *options, *randomiser], capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stderr
    topology = load_topology(tmp_path / "topology.toml")
    assert topology.job.randomiser == "uniform"
    assert topology.job.uniform_normalise is False


def test_cli_rejects_unknown_randomiser(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "gradchain", "topology", "chain", "--providers", "4"]

    result = subprocess.run(
        [*command, "--out", str(tmp_path), "--randomiser", "gaussian"],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 2
    assert "unknown randomiser 'gaussian' (use one of: scalar, vector" in result.stderr
