"""Tests for gradchain.topology.load: reading, validating and loading data of topology files."""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomli_w

from gradchain.data import save_csv, save_npz
from gradchain.errors import ConfigError, TopologyError
from gradchain.models.interface import check_model_data
from gradchain.models.registry import get_model
from gradchain.randomisers import (
    AdditiveRandomiser,
    ScalarRandomiser,
    UniformRandomiser,
    VectorRandomiser,
)
from gradchain.topology import (
    CryptoSettings,
    JobSettings,
    load_eval_data,
    load_provider_data,
    load_topology,
)

Document = dict[str, Any]
Mutation = Callable[[Document], None]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def base_document() -> Document:
    """Return a valid topology: p1 -> p2 -> a1 <- p3, a1 -> learner."""
    return {
        "job": {"id": "test-job", "features": 2, "min_contributors": 2},
        "crypto": {"key_bits": 256},
        "learner": {"id": "learner"},
        "nodes": [
            {"id": "p1", "data": "data/p1.csv", "next": ["p2"]},
            {"id": "p2", "data": "data/p2.csv", "next": ["a1"]},
            {"id": "p3", "data": "data/p3.csv", "next": ["a1"]},
            {"id": "a1", "next": ["learner"]},
        ],
    }


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Return a folder with data/p1.csv to data/p3.csv, each with two features and two rows."""
    for number in (1, 2, 3):
        save_csv(
            tmp_path / "data" / f"p{number}.csv",
            [[1.0, -1.0], [0.5, 2.0]],
            [1.0, 0.0],
            feature_names=["a", "b"],
            label_name="label",
        )
    return tmp_path


def write_topology(folder: Path, document: Document) -> Path:
    path = folder / "topology.toml"
    path.write_text(tomli_w.dumps(document), encoding="utf-8")
    return path


def set_in(table: str, **values: object) -> Mutation:
    def mutate(document: Document) -> None:
        document[table].update(values)

    return mutate


def remove(table: str, key: str) -> Mutation:
    def mutate(document: Document) -> None:
        del document[table][key]

    return mutate


def set_node(node_id: str, **values: object) -> Mutation:
    def mutate(document: Document) -> None:
        node = next(entry for entry in document["nodes"] if entry["id"] == node_id)
        node.update(values)

    return mutate


def add_node(**values: object) -> Mutation:
    def mutate(document: Document) -> None:
        document["nodes"].append(values)

    return mutate


def set_top(key: str, value: object) -> Mutation:
    def mutate(document: Document) -> None:
        document[key] = value

    return mutate


def remove_top(key: str) -> Mutation:
    def mutate(document: Document) -> None:
        del document[key]

    return mutate


def combine(*mutations: Mutation) -> Mutation:
    def mutate(document: Document) -> None:
        for mutation in mutations:
            mutation(document)

    return mutate


# Each case: mutation of the base document, node id and key the error must name,
# and a fragment of the message.
HOSTILE_CASES = [
    pytest.param(
        set_top("jobs", {}),
        None,
        "jobs",
        "unknown key (allowed keys: job, crypto, learner, nodes, model, signing)",
        id="unknown-top-level-table",
    ),
    pytest.param(
        set_top("signing", "keys"),
        None,
        "signing",
        "expected a table [signing]",
        id="signing-not-table",
    ),
    pytest.param(
        set_top("signing", {"keys": "keys", "sign": True}),
        None,
        "signing.sign",
        "unknown key (allowed keys: keys, required, seal)",
        id="signing-unknown-key",
    ),
    pytest.param(
        set_top("signing", {"keys": "keys", "seal": "yes"}),
        None,
        "signing.seal",
        "expected true or false",
        id="signing-seal-not-bool",
    ),
    pytest.param(
        set_top("signing", {"keys": ""}),
        None,
        "signing.keys",
        "expected the folder of the signing key files, got string ''",
        id="signing-keys-empty",
    ),
    pytest.param(
        set_top("signing", {"keys": 3}),
        None,
        "signing.keys",
        "expected the folder of the signing key files",
        id="signing-keys-not-string",
    ),
    pytest.param(
        set_top("signing", {"required": "yes"}),
        None,
        "signing.required",
        "expected true or false, got string 'yes'",
        id="signing-required-not-bool",
    ),
    pytest.param(remove_top("job"), None, "job", "missing required table [job]", id="no-job"),
    pytest.param(set_top("job", 5), None, "job", "expected a table", id="job-not-table"),
    pytest.param(remove("job", "id"), None, "job.id", "missing required key", id="no-job-id"),
    pytest.param(
        remove("job", "features"), None, "job.features", "missing required key", id="no-features"
    ),
    pytest.param(
        set_in("job", learning_rat=0.1),
        None,
        "job.learning_rat",
        "allowed keys: id, model, features, rounds",
        id="misspelt-job-key",
    ),
    pytest.param(
        set_in("job", rounds="60"),
        None,
        "job.rounds",
        "expected an integer, got string '60'",
        id="rounds-string",
    ),
    pytest.param(
        set_in("job", rounds=True),
        None,
        "job.rounds",
        "expected an integer, got boolean true",
        id="rounds-boolean",
    ),
    pytest.param(
        set_in("job", features=2.5),
        None,
        "job.features",
        "expected an integer, got float 2.5",
        id="features-float",
    ),
    pytest.param(
        set_in("job", learning_rate="fast"),
        None,
        "job.learning_rate",
        "expected a number, got string 'fast'",
        id="learning-rate-string",
    ),
    pytest.param(
        set_in("job", learning_rate=math.nan),
        None,
        "job.learning_rate",
        "expected a finite number",
        id="learning-rate-nan",
    ),
    pytest.param(
        set_in("job", randomise=1),
        None,
        "job.randomise",
        "expected true or false, got integer 1",
        id="randomise-integer",
    ),
    pytest.param(
        set_in("job", id="job/1"), None, "job.id", "invalid id 'job/1'", id="job-id-slash"
    ),
    pytest.param(
        set_in("job", model="svm"), None, "job.model", "unknown model 'svm'", id="unknown-model"
    ),
    pytest.param(
        set_in("job", schedule="linear"),
        None,
        "job.schedule",
        "use one of: constant, inverse_sqrt, inverse_square",
        id="unknown-schedule",
    ),
    pytest.param(
        set_in("job", features=0), None, "job.features", "at least 1, got 0", id="features-zero"
    ),
    pytest.param(
        set_in("job", rounds=0), None, "job.rounds", "at least 1, got 0", id="rounds-zero"
    ),
    pytest.param(
        set_in("job", learning_rate=0.0),
        None,
        "job.learning_rate",
        "greater than 0, got 0.0",
        id="learning-rate-zero",
    ),
    pytest.param(
        set_in("job", learning_rate=-0.1),
        None,
        "job.learning_rate",
        "greater than 0, got -0.1",
        id="learning-rate-negative",
    ),
    pytest.param(
        set_in("job", round_timeout=-1),
        None,
        "job.round_timeout",
        "greater than 0",
        id="round-timeout-negative",
    ),
    pytest.param(
        set_in("job", tolerance=-1e-6),
        None,
        "job.tolerance",
        "0 or greater",
        id="tolerance-negative",
    ),
    pytest.param(set_in("job", l2=-0.5), None, "job.l2", "0 or greater", id="l2-negative"),
    pytest.param(
        set_in("job", min_contributors=0),
        None,
        "job.min_contributors",
        "at least 1, got 0",
        id="min-contributors-zero",
    ),
    pytest.param(
        set_in("job", min_contributors=4),
        None,
        "job.min_contributors",
        "is 4, but the topology has only 3 providers",
        id="min-contributors-above-providers",
    ),
    pytest.param(
        set_top("crypto", "big"), None, "crypto", "expected a table", id="crypto-not-table"
    ),
    pytest.param(
        set_in("crypto", keybits=2048),
        None,
        "crypto.keybits",
        "allowed keys: key_bits, frac_bits, clip, packing, value_bits, djn, obfuscator_bits, "
        "pool_size",
        id="misspelt-crypto-key",
    ),
    pytest.param(
        set_in("crypto", key_bits=32),
        None,
        "crypto.key_bits",
        "at least 64, got 32",
        id="key-bits-too-small",
    ),
    pytest.param(
        set_in("crypto", frac_bits=0),
        None,
        "crypto.frac_bits",
        "at least 1, got 0",
        id="frac-bits-zero",
    ),
    pytest.param(set_in("crypto", clip=0), None, "crypto.clip", "greater than 0", id="clip-zero"),
    pytest.param(
        set_in("crypto", key_bits=64, frac_bits=60, packing=False),
        None,
        "crypto.frac_bits",
        "can need 82 bits, but a 64-bit key leaves 62 bits",
        id="encoding-wraps-modulus",
    ),
    pytest.param(
        set_in("crypto", key_bits=64, frac_bits=41, packing=False),
        None,
        "crypto.frac_bits",
        "can need 63 bits",
        id="encoding-one-bit-too-wide",
    ),
    pytest.param(
        set_in("crypto", key_bits=64, frac_bits=10**9, packing=False),
        None,
        "crypto.frac_bits",
        "can need 1000000000 bits",
        id="frac-bits-huge",
    ),
    pytest.param(
        set_in("crypto", key_bits=64, frac_bits=41),
        None,
        "crypto.frac_bits",
        "a packed slot needs 65 bits (63 value bits and 2 headroom bits for 3 providers), "
        "but a 64-bit key leaves 63 plaintext bits",
        id="packed-slot-wider-than-plaintext",
    ),
    pytest.param(
        set_in("crypto", frac_bits=60),
        None,
        "crypto.frac_bits",
        "a packed value needs 82 bits, but packing supports at most 63",
        id="packed-value-too-wide",
    ),
    pytest.param(
        set_in("crypto", frac_bits=10**9),
        None,
        "crypto.frac_bits",
        "packing supports at most 63",
        id="packed-frac-bits-huge",
    ),
    pytest.param(
        set_in("crypto", value_bits=40),
        None,
        "crypto.value_bits",
        "is 40, but clip 1.04858e+06 with frac_bits 32 needs 54 bits per value",
        id="value-bits-too-small",
    ),
    pytest.param(
        set_in("crypto", value_bits=64),
        None,
        "crypto.value_bits",
        "packing supports at most 63",
        id="value-bits-too-large",
    ),
    pytest.param(
        set_in("crypto", key_bits=64, value_bits=62),
        None,
        "crypto.value_bits",
        "a packed slot needs 64 bits",
        id="value-bits-slot-too-wide",
    ),
    pytest.param(
        set_in("crypto", value_bits=60, packing=False),
        None,
        "crypto.value_bits",
        "applies only to the packed encoding",
        id="value-bits-without-packing",
    ),
    pytest.param(
        set_in("crypto", value_bits=0),
        None,
        "crypto.value_bits",
        "at least 1, got 0",
        id="value-bits-zero",
    ),
    pytest.param(
        set_in("crypto", clip=2.0**-40),
        None,
        "crypto.frac_bits",
        "rounds to 0 fixed-point units",
        id="clip-below-one-unit",
    ),
    pytest.param(
        set_in("crypto", packing="yes"),
        None,
        "crypto.packing",
        "expected true or false",
        id="packing-not-bool",
    ),
    pytest.param(
        set_in("crypto", djn=1),
        None,
        "crypto.djn",
        "expected true or false",
        id="djn-not-bool",
    ),
    pytest.param(
        set_in("crypto", obfuscator_bits=128, djn=False),
        None,
        "crypto.obfuscator_bits",
        "applies only to DJN keys",
        id="obfuscator-bits-without-djn",
    ),
    pytest.param(
        set_in("crypto", key_bits=2048, obfuscator_bits=255),
        None,
        "crypto.obfuscator_bits",
        "must be between 256 and 2048 for a 2048-bit key, got 255",
        id="obfuscator-bits-too-short",
    ),
    pytest.param(
        set_in("crypto", obfuscator_bits=257),
        None,
        "crypto.obfuscator_bits",
        "must be between 128 and 256 for a 256-bit key, got 257",
        id="obfuscator-bits-longer-than-key",
    ),
    pytest.param(
        set_in("crypto", obfuscator_bits=512.0),
        None,
        "crypto.obfuscator_bits",
        "expected an integer",
        id="obfuscator-bits-float",
    ),
    pytest.param(
        set_in("crypto", pool_size=-1),
        None,
        "crypto.pool_size",
        "at least 0, got -1",
        id="pool-size-negative",
    ),
    pytest.param(
        set_in("crypto", key_bits=513),
        None,
        "crypto.key_bits",
        "must be even",
        id="key-bits-odd",
    ),
    pytest.param(remove_top("learner"), None, "learner", "missing required table", id="no-learner"),
    pytest.param(
        remove("learner", "id"), None, "learner.id", "missing required key", id="no-learner-id"
    ),
    pytest.param(
        set_in("learner", id="learn er"),
        None,
        "learner.id",
        "invalid id 'learn er'",
        id="learner-id-space",
    ),
    pytest.param(
        set_in("learner", eval="data/p1.csv"),
        None,
        "learner.eval",
        "allowed keys: id, public_key, private_key, eval_data",
        id="misspelt-learner-key",
    ),
    pytest.param(
        set_in("learner", eval_data="data/missing.npz"),
        None,
        "learner.eval_data",
        "data file not found",
        id="eval-data-missing",
    ),
    pytest.param(remove_top("nodes"), None, "nodes", "missing [[nodes]]", id="no-nodes"),
    pytest.param(set_top("nodes", []), None, "nodes", "no nodes", id="empty-nodes"),
    pytest.param(
        set_top("nodes", ["p1"]), None, "nodes", "entry 1 is string 'p1'", id="node-not-table"
    ),
    pytest.param(
        add_node(data="data/p1.csv"),
        None,
        "id",
        "[[nodes]] table number 5 has no id",
        id="node-without-id",
    ),
    pytest.param(
        set_node("p3", next=["p9"]),
        "p3",
        "next",
        "unknown node id 'p9' (use one of: p1, p2, p3, a1, learner)",
        id="next-unknown-id",
    ),
    pytest.param(
        add_node(id="p2", data="data/p2.csv", next=["learner"]),
        "p2",
        "id",
        "duplicate node id",
        id="duplicate-id",
    ),
    pytest.param(
        add_node(id="learner", data="data/p1.csv", next=["a1"]),
        "learner",
        "id",
        "the node id equals the learner id 'learner'",
        id="node-id-is-learner-id",
    ),
    pytest.param(
        set_node("p1", id="p+1"), "p+1", "id", "invalid id 'p+1'", id="id-with-mqtt-wildcard"
    ),
    pytest.param(
        set_node("p1", id="p/1"), "p/1", "id", "invalid id 'p/1'", id="id-with-topic-separator"
    ),
    pytest.param(set_node("p1", id="p 1"), "p 1", "id", "invalid id 'p 1'", id="id-with-space"),
    pytest.param(set_node("p1", id=""), None, "id", "expected a non-empty string", id="id-empty"),
    pytest.param(
        set_node("p1", nxt=["p2"]),
        "p1",
        "nxt",
        "unknown key (allowed keys: id, data, next)",
        id="misspelt-node-key",
    ),
    pytest.param(
        set_node("p1", next="p2"),
        "p1",
        "next",
        "expected an array of strings, got string 'p2'",
        id="next-string",
    ),
    pytest.param(
        set_node("p1", next=[2]),
        "p1",
        "next",
        "found integer 2",
        id="next-integer-entry",
    ),
    pytest.param(set_node("p1", next=[]), "p1", "next", "is empty", id="next-empty"),
    pytest.param(
        set_node("p1", next=["p2", "p3"]),
        "p1",
        "next",
        "the portions sent to 'p2' and 'p3' both pass through 'a1'",
        id="portions-meet-at-an-aggregator",
    ),
    pytest.param(
        set_node("a1", next=["learner", "p1"]),
        "a1",
        "next",
        "only a provider can split its contribution",
        id="aggregator-splits",
    ),
    pytest.param(
        set_node("p3", next=["a1", "learner"]),
        "p3",
        "next",
        "sends a portion straight to the learner 'learner'",
        id="portion-straight-to-learner",
    ),
    pytest.param(
        set_node("p3", next=["a1", "a1"]),
        "p3",
        "next",
        "names a1 more than once",
        id="portions-to-one-aggregator",
    ),
    pytest.param(
        set_node("p2", next=["a1", "p3"]),
        "p2",
        "next",
        "splits its contribution across 2 next hops but receives from p1",
        id="splitting-node-with-inputs",
    ),
    pytest.param(
        set_node("p2", next=["p1"]),
        "p1",
        "next",
        "cycle p1 -> p2 -> p1: these nodes never reach the learner 'learner'",
        id="cycle-of-two",
    ),
    pytest.param(
        set_node("a1", next=["a1"]), "a1", "next", "cycle a1 -> a1", id="node-points-at-itself"
    ),
    pytest.param(
        combine(set_node("p2", next=["p3"]), set_node("p3", next=["p2"])),
        "p2",
        "next",
        "cycle p2 -> p3 -> p2: these nodes never reach the learner 'learner'; "
        "nodes leading into it: p1",
        id="cycle-with-upstream-node",
    ),
    pytest.param(
        add_node(id="a2", next=["learner"]),
        "a2",
        "data",
        "no data and no inputs",
        id="aggregator-without-inputs",
    ),
    pytest.param(
        set_node("p1", data=5), "p1", "data", "expected a string, got integer 5", id="data-integer"
    ),
    pytest.param(
        set_node("p1", data="data/p1.txt"),
        "p1",
        "data",
        "unsupported data file type 'data/p1.txt'",
        id="data-unsupported-suffix",
    ),
]


@pytest.mark.parametrize(("mutation", "node_id", "key", "message"), HOSTILE_CASES)
def test_hostile_topology_rejected(
    folder: Path, mutation: Mutation, node_id: str | None, key: str, message: str
) -> None:
    document = base_document()
    mutation(document)
    path = write_topology(folder, document)

    with pytest.raises(TopologyError) as caught:
        load_topology(path)

    error = caught.value
    assert error.path == str(path)
    assert error.node_id == node_id
    assert error.key == key
    assert message in str(error)
    assert f"key {key!r}" in str(error)
    if node_id is not None:
        assert f"node {node_id!r}" in str(error)


def test_base_document_is_valid(folder: Path) -> None:
    topology = load_topology(write_topology(folder, base_document()))

    assert topology.providers == ("p1", "p2", "p3")


def test_split_provider_paths_loaded(folder: Path) -> None:
    document = base_document()
    document["nodes"].append({"id": "a2", "next": ["x2"]})
    document["nodes"].append({"id": "x2", "next": ["learner"]})
    set_node("p3", next=["a1", "a2"])(document)

    topology = load_topology(write_topology(folder, document))

    assert topology.nodes["p3"].portions == 2
    assert topology.portion_paths("p3") == (("a1", "learner"), ("a2", "x2", "learner"))
    assert topology.portion_paths("p1") == (("p2", "a1", "learner"),)
    assert topology.portion_routes() == {"p3": (frozenset({"a1"}), frozenset({"a2", "x2"}))}
    # Both portions count p3 upstream of the nodes they pass.
    assert "p3" in topology.providers_upstream_of("a1")
    assert "p3" in topology.providers_upstream_of("x2")
    assert "p3" in topology.nodes_upstream_of("x2")
    assert topology.hops() == 3


def test_settings_digest_ignores_paths(folder: Path, tmp_path: Path) -> None:
    original = load_topology(write_topology(folder, base_document()))

    # The same job on another machine, with its data and keys elsewhere.
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(folder / "data", elsewhere / "files")
    moved = base_document()
    for node in moved["nodes"]:
        if "data" in node:
            node["data"] = node["data"].replace("data/", "files/")
    moved["learner"]["public_key"] = "keys/other.pub.json"
    assert load_topology(write_topology(elsewhere, moved)).settings_digest == (
        original.settings_digest
    )

    for mutation in (
        set_in("crypto", frac_bits=24),
        set_in("job", learning_rate=0.5),
        set_node("p3", next=["p1"]),
    ):
        changed = base_document()
        mutation(changed)
        digest = load_topology(write_topology(folder, changed)).settings_digest
        assert digest != original.settings_digest


def test_missing_provider_data_names_resolved_path(folder: Path) -> None:
    document = base_document()
    set_node("p2", data="data/../data/absent.csv")(document)
    path = write_topology(folder, document)

    with pytest.raises(TopologyError) as caught:
        load_topology(path)

    assert caught.value.node_id == "p2"
    assert caught.value.key == "data"
    assert str((folder / "data" / "absent.csv").resolve()) in str(caught.value)


def test_missing_file_rejected(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="file not found"):
        load_topology(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("[job\nid = 1\n", id="unclosed-table-header"),
        pytest.param('[job]\nid = "a"\nid = "b"\n', id="duplicate-key"),
        pytest.param("[job]\nid = \n", id="missing-value"),
    ],
)
def test_invalid_toml_rejected(tmp_path: Path, text: str) -> None:
    path = tmp_path / "topology.toml"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(TopologyError, match="invalid TOML") as caught:
        load_topology(path)

    assert caught.value.path == str(path)
    assert isinstance(caught.value.__cause__, Exception)


def test_non_utf8_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "topology.toml"
    path.write_bytes(b'[job]\nid = "\xff"\n')

    with pytest.raises(TopologyError, match="invalid TOML"):
        load_topology(path)


def test_minimal_file_gets_defaults(folder: Path) -> None:
    document: Document = {
        "job": {"id": "minimal", "features": 2},
        "learner": {"id": "boss"},
        "nodes": [
            {"id": "p1", "data": "data/p1.csv", "next": ["p2"]},
            {"id": "p2", "data": "data/p2.csv", "next": ["p3"]},
            {"id": "p3", "data": "data/p3.csv"},
        ],
    }
    topology = load_topology(write_topology(folder, document))

    assert topology.job == JobSettings(id="minimal", features=2)
    assert topology.crypto == CryptoSettings()
    assert topology.learner.public_key == (folder / "keys" / "boss.pub.json").resolve()
    assert topology.learner.private_key == (folder / "keys" / "boss.key.json").resolve()
    assert topology.learner.eval_data is None
    assert topology.nodes["p3"].next == ("boss",)


def test_settings_read_from_file(folder: Path) -> None:
    document = base_document()
    document["job"].update(
        model="logistic",
        rounds=7,
        tolerance=0,
        learning_rate=1,
        schedule="inverse_sqrt",
        l2=0.25,
        min_contributors=3,
        randomise=False,
        round_timeout=9.5,
    )
    document["crypto"].update(key_bits=512, frac_bits=20, clip=100)
    topology = load_topology(write_topology(folder, document))

    assert topology.job == JobSettings(
        id="test-job",
        features=2,
        model="logistic",
        rounds=7,
        tolerance=0.0,
        learning_rate=1.0,
        schedule="inverse_sqrt",
        l2=0.25,
        min_contributors=3,
        randomise=False,
        round_timeout=9.5,
    )
    assert topology.crypto == CryptoSettings(key_bits=512, frac_bits=20, clip=100.0)
    assert isinstance(topology.job.learning_rate, float)
    assert isinstance(topology.crypto.clip, float)


def test_paths_resolve_against_topology_folder(
    folder: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_topology(folder, base_document())
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))

    topology = load_topology(path)

    assert topology.path == path.resolve()
    assert topology.nodes["p1"].data == (folder / "data" / "p1.csv").resolve()
    assert topology.nodes["a1"].data is None


def test_nodes_keep_file_order(folder: Path) -> None:
    document = base_document()
    document["nodes"].reverse()
    topology = load_topology(write_topology(folder, document))

    assert list(topology.nodes) == ["a1", "p3", "p2", "p1"]
    assert topology.providers == ("p3", "p2", "p1")


def test_small_key_logs_warning(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_topology(folder, base_document())

    with caplog.at_level(logging.WARNING, logger="gradchain.topology.load"):
        load_topology(path)

    assert "key_bits = 256 is below 2048" in caplog.text


def test_2048_bit_key_logs_no_warning(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    document = base_document()
    document["crypto"]["key_bits"] = 2048
    path = write_topology(folder, document)

    with caplog.at_level(logging.WARNING, logger="gradchain.topology.load"):
        load_topology(path)

    assert caplog.text == ""


def test_provider_data_loaded(folder: Path) -> None:
    topology = load_topology(write_topology(folder, base_document()))

    X, y = load_provider_data(topology, "p1")

    np.testing.assert_array_equal(X, [[1.0, -1.0], [0.5, 2.0]])
    np.testing.assert_array_equal(y, [1.0, 0.0])


def test_provider_data_feature_mismatch(folder: Path) -> None:
    save_npz(folder / "data" / "wide.npz", np.ones((2, 3)), [0.0, 1.0])
    document = base_document()
    set_node("p2", data="data/wide.npz")(document)
    topology = load_topology(write_topology(folder, document))

    with pytest.raises(ConfigError) as caught:
        load_provider_data(topology, "p2")

    message = str(caught.value)
    assert "node 'p2'" in message
    assert "has 3 feature columns but job.features is 2" in message
    assert str(folder / "data" / "wide.npz") in message


def test_provider_labels_must_be_binary(folder: Path) -> None:
    save_npz(folder / "data" / "signs.npz", np.ones((2, 2)), [1.0, -1.0])
    document = base_document()
    set_node("p3", data="data/signs.npz")(document)
    topology = load_topology(write_topology(folder, document))

    with pytest.raises(ConfigError, match=r"node 'p3'.*label -1.0 in row 2"):
        load_provider_data(topology, "p3")


def test_aggregator_has_no_provider_data(folder: Path) -> None:
    topology = load_topology(write_topology(folder, base_document()))

    with pytest.raises(ValueError, match="'a1' is an aggregator"):
        load_provider_data(topology, "a1")


def test_eval_data_absent_returns_none(folder: Path) -> None:
    topology = load_topology(write_topology(folder, base_document()))

    assert load_eval_data(topology) is None


def test_eval_data_feature_mismatch(folder: Path) -> None:
    save_npz(folder / "data" / "eval.npz", np.ones((4, 5)), [0.0, 1.0, 1.0, 0.0])
    document = base_document()
    document["learner"]["eval_data"] = "data/eval.npz"
    topology = load_topology(write_topology(folder, document))

    with pytest.raises(ConfigError, match=r"learner 'learner'.*has 5 feature columns"):
        load_eval_data(topology)


@pytest.mark.parametrize(
    "name",
    [
        "phones/topology.toml",
        "breast-cancer-chain.toml",
        "breast-cancer-tree.toml",
        "breast-cancer-multi.toml",
        "breast-cancer-vector.toml",
        "breast-cancer-additive.toml",
        "breast-cancer-uniform.toml",
        "digit-attributes-chain.toml",
        "digits-pca-tree.toml",
        "warfarin-chain.toml",
    ],
)
def test_shipped_example_loads(name: str) -> None:
    topology = load_topology(EXAMPLES / name)

    assert topology.crypto.key_bits == 2048
    assert topology.signing is not None
    assert topology.signing.required
    assert topology.signing.keys == topology.learner.public_key.parent
    model = get_model(topology.job.model, topology.model_settings)
    # job.features counts the model's parameters, which each provider's rows must fit.
    for provider in topology.providers:
        X, y = load_provider_data(topology, provider)
        check_model_data(model, X, y, topology.job.features)
    evaluation = load_eval_data(topology)
    if evaluation is not None:
        check_model_data(model, *evaluation, topology.job.features)


def test_shipped_breast_cancer_examples_have_12_providers() -> None:
    chain = load_topology(EXAMPLES / "breast-cancer-chain.toml")
    tree = load_topology(EXAMPLES / "breast-cancer-tree.toml")

    assert len(chain.providers) == 12
    assert len(tree.providers) == 12
    assert chain.hops() == 12
    assert tree.hops() == 2


def test_crypto_settings_read_from_file(folder: Path) -> None:
    document = base_document()
    document["crypto"].update(
        key_bits=2048, packing=True, value_bits=60, djn=True, obfuscator_bits=512, pool_size=7
    )

    topology = load_topology(write_topology(folder, document))

    assert topology.crypto == CryptoSettings(
        key_bits=2048, value_bits=60, obfuscator_bits=512, pool_size=7
    )


def test_crypto_defaults_pack_with_djn(folder: Path) -> None:
    topology = load_topology(write_topology(folder, base_document()))

    assert topology.crypto.packing is True
    assert topology.crypto.djn is True
    assert topology.crypto.value_bits is None
    assert topology.crypto.obfuscator_bits is None
    assert topology.crypto.pool_size is None


def test_short_obfuscator_bits_logs_warning(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    document = base_document()
    document["crypto"].update(key_bits=2048, obfuscator_bits=256)

    with caplog.at_level(logging.WARNING, logger="gradchain.topology.load"):
        topology = load_topology(write_topology(folder, document))

    assert topology.crypto.obfuscator_bits == 256
    assert "shorter than the default ceil(key_bits / 2) = 1024" in caplog.text


def test_packed_slot_at_capacity_accepted(folder: Path) -> None:
    # 2 * 2**20 * 2**39 needs 61 bits, and 3 providers need 2 headroom bits: 63 of 63.
    document = base_document()
    document["crypto"].update(key_bits=64, frac_bits=39, clip=2.0**20)

    topology = load_topology(write_topology(folder, document))

    assert topology.crypto.frac_bits == 39


def test_encoding_at_capacity_accepted(folder: Path) -> None:
    # 3 * (2**20 * 2**40 + 1) < 2**62, the limit for a 64-bit key.
    document = base_document()
    document["crypto"].update(key_bits=64, frac_bits=40, clip=2.0**20, packing=False)

    topology = load_topology(write_topology(folder, document))

    assert topology.crypto.frac_bits == 40


def test_topology_without_model_table_has_no_settings(folder: Path) -> None:
    topology = load_topology(write_topology(folder, base_document()))

    assert topology.model_settings == {}


def test_model_table_read(folder: Path) -> None:
    document = base_document()
    document["job"].update(model="pca", features=4)
    document["model"] = {"components": 2, "seed": 5}

    topology = load_topology(write_topology(folder, document))

    assert topology.model_settings == {"components": 2, "seed": 5}


@pytest.mark.parametrize(
    ("model", "table", "key", "message"),
    [
        pytest.param("pca", {"rank": 2}, "model.rank", "unknown key", id="unknown-key"),
        pytest.param(
            "pca", {"components": "two"}, "model.components", "expected an integer", id="type"
        ),
        pytest.param(
            "pca", {"components": 0}, "model.components", "must be at least 1", id="minimum"
        ),
        pytest.param(
            "factorisation",
            {"user_l2": 0},
            "model.user_l2",
            "must be greater than 0.0",
            id="exclusive-minimum",
        ),
        pytest.param(
            "logistic", {"rank": 2}, "model.rank", "model 'logistic' takes no settings", id="none"
        ),
    ],
)
def test_invalid_model_table_rejected(
    folder: Path, model: str, table: dict[str, object], key: str, message: str
) -> None:
    document = base_document()
    document["job"]["model"] = model
    document["model"] = table

    with pytest.raises(TopologyError, match=message) as caught:
        load_topology(write_topology(folder, document))

    assert caught.value.key == key


def test_pca_data_needs_columns_times_components(folder: Path) -> None:
    document = base_document()
    document["job"].update(model="pca", features=2)
    document["model"] = {"components": 2}
    topology = load_topology(write_topology(folder, document))

    with pytest.raises(ConfigError) as caught:
        load_provider_data(topology, "p1")

    message = str(caught.value)
    assert "node 'p1'" in message
    assert "2 feature columns with 2 components need job.features = 4" in message


def test_multilabel_reads_label_matrix(folder: Path) -> None:
    save_npz(folder / "data" / "labels.npz", np.ones((2, 2)), [[0.0, 1.0], [1.0, 1.0]])
    document = base_document()
    document["job"].update(model="multilabel-logistic", features=4)
    for node in document["nodes"][:3]:
        node["data"] = "data/labels.npz"
    topology = load_topology(write_topology(folder, document))

    X, y = load_provider_data(topology, "p1")

    assert X.shape == (2, 2)
    assert y.shape == (2, 2)


def test_logistic_rejects_label_matrix(folder: Path) -> None:
    save_npz(folder / "data" / "labels.npz", np.ones((2, 2)), [[0.0, 1.0], [1.0, 1.0]])
    document = base_document()
    set_node("p1", data="data/labels.npz")(document)
    topology = load_topology(write_topology(folder, document))

    with pytest.raises(ConfigError, match=r"node 'p1'.*label matrix of shape \(2, 2\)"):
        load_provider_data(topology, "p1")


def test_shipped_warfarin_example_loads() -> None:
    topology = load_topology(EXAMPLES / "warfarin-chain.toml")

    assert topology.job.model == "linear"
    assert len(topology.providers) == 20
    for provider in topology.providers:
        X, _ = load_provider_data(topology, provider)
        assert X.shape[1] == topology.job.features
    evaluation = load_eval_data(topology)
    assert evaluation is not None
    assert evaluation[0].shape == (1106, topology.job.features)


# Randomisers


def test_randomiser_defaults_to_scalar(folder: Path) -> None:
    topology = load_topology(write_topology(folder, base_document()))

    assert topology.job.randomiser == "scalar"
    assert topology.job.uniform_normalise is True
    assert topology.randomiser == ScalarRandomiser()


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        pytest.param({"randomiser": "vector"}, VectorRandomiser(), id="vector"),
        pytest.param({"randomiser": "additive"}, AdditiveRandomiser(clip=100.0), id="additive"),
        pytest.param({"randomiser": "uniform"}, UniformRandomiser(), id="uniform"),
        pytest.param(
            {"randomiser": "uniform", "uniform_normalise": False},
            UniformRandomiser(normalise=False),
            id="uniform-plain",
        ),
    ],
)
def test_randomiser_read_from_file(
    folder: Path, settings: dict[str, object], expected: object
) -> None:
    document = base_document()
    document["job"].update(settings)
    document["crypto"]["clip"] = 100

    topology = load_topology(write_topology(folder, document))

    assert topology.job.randomiser == settings["randomiser"]
    assert topology.randomiser == expected


@pytest.mark.parametrize(
    ("settings", "key", "message"),
    [
        pytest.param(
            {"randomiser": "gaussian"},
            "job.randomiser",
            "unknown randomiser 'gaussian' (use one of: scalar, vector, additive, uniform)",
            id="unknown-name",
        ),
        pytest.param(
            {"randomiser": 3}, "job.randomiser", "expected a string, got integer 3", id="integer"
        ),
        pytest.param(
            {"uniform_normalise": False},
            "job.uniform_normalise",
            "applies only to the uniform randomiser, but randomiser is 'scalar'",
            id="normalise-without-uniform",
        ),
        pytest.param(
            {"randomiser": "uniform", "uniform_normalise": "no"},
            "job.uniform_normalise",
            "expected true or false, got string 'no'",
            id="normalise-string",
        ),
    ],
)
def test_invalid_randomiser_setting_rejected(
    folder: Path, settings: dict[str, object], key: str, message: str
) -> None:
    document = base_document()
    document["job"].update(settings)
    path = write_topology(folder, document)

    with pytest.raises(TopologyError) as caught:
        load_topology(path)

    error = caught.value
    assert error.path == str(path)
    assert error.key == key
    assert message in str(error)


# The [signing] table


def test_signing_absent_by_default(folder: Path) -> None:
    topology = load_topology(write_topology(folder, base_document()))

    assert topology.signing is None


def test_signing_defaults(folder: Path) -> None:
    document = base_document()
    document["signing"] = {}

    topology = load_topology(write_topology(folder, document))

    assert topology.signing is not None
    assert topology.signing.keys == (folder / "keys").resolve()
    assert topology.signing.required is True
    assert topology.signing.seal is True


def test_sealing_can_be_turned_off(folder: Path) -> None:
    document = base_document()
    document["signing"] = {"seal": False}

    topology = load_topology(write_topology(folder, document))

    assert topology.signing is not None
    assert topology.signing.seal is False


def test_signing_keys_relative_to_file(folder: Path) -> None:
    document = base_document()
    document["signing"] = {"keys": "secrets/signing", "required": False}

    topology = load_topology(write_topology(folder, document))

    assert topology.signing is not None
    assert topology.signing.keys == (folder / "secrets" / "signing").resolve()
    assert topology.signing.required is False


@pytest.mark.parametrize(
    ("table", "key", "fix"),
    [
        ({"keys": ""}, "signing.keys", 'set keys = "keys"'),
        ({"required": 1}, "signing.required", "set required = true"),
        ({"seal": 0}, "signing.seal", "set seal = true"),
    ],
)
def test_signing_error_names_fix(folder: Path, table: Document, key: str, fix: str) -> None:
    document = base_document()
    document["signing"] = table

    with pytest.raises(TopologyError) as caught:
        load_topology(write_topology(folder, document))

    assert caught.value.key == key
    assert caught.value.fix is not None
    assert fix in caught.value.fix
