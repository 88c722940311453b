"""Tests for the graph methods of gradchain.topology.model.Topology."""

from __future__ import annotations

import pytest

from gradchain.topology import Topology, parse_topology


def build(edges: dict[str, str], providers: set[str], min_contributors: int = 1) -> Topology:
    """Build a topology from node -> next hop edges without touching any file."""
    document = {
        "job": {"id": "graph", "features": 1, "min_contributors": min_contributors},
        "learner": {"id": "L"},
        "nodes": [
            {"id": node_id, "next": [successor]}
            | ({"data": f"data/{node_id}.npz"} if node_id in providers else {})
            for node_id, successor in edges.items()
        ],
    }
    return parse_topology(document, "graph.toml", check_files=False)


def chain(length: int) -> Topology:
    ids = [f"p{number}" for number in range(1, length + 1)]
    return build(dict(zip(ids, [*ids[1:], "L"], strict=True)), set(ids))


def two_level_tree() -> Topology:
    """p1, p2 -> a1; p3, p4 -> a2; a1, a2 -> L."""
    return build(
        {"p1": "a1", "p2": "a1", "p3": "a2", "p4": "a2", "a1": "L", "a2": "L"},
        {"p1", "p2", "p3", "p4"},
    )


def mixed() -> Topology:
    """p1 -> p2 -> a1 <- p3, a1 -> L, and p4 -> L directly. p2 is a provider with an input."""
    return build(
        {"p1": "p2", "p2": "a1", "p3": "a1", "a1": "L", "p4": "L"},
        {"p1", "p2", "p3", "p4"},
    )


def test_providers_in_file_order() -> None:
    topology = build({"a1": "L", "p2": "a1", "p1": "a1"}, {"p1", "p2"})

    assert topology.providers == ("p2", "p1")


@pytest.mark.parametrize(
    ("node_id", "expected"),
    [
        pytest.param("L", {"a1", "p4"}, id="learner"),
        pytest.param("a1", {"p2", "p3"}, id="aggregator"),
        pytest.param("p2", {"p1"}, id="provider-with-input"),
        pytest.param("p1", set(), id="first-provider"),
    ],
)
def test_inputs_of(node_id: str, expected: set[str]) -> None:
    assert mixed().inputs_of(node_id) == frozenset(expected)


def test_inputs_of_unknown_id() -> None:
    with pytest.raises(KeyError, match="'p9'"):
        mixed().inputs_of("p9")


@pytest.mark.parametrize(
    ("node_id", "expected"),
    [
        pytest.param("p1", "p2", id="provider-to-provider"),
        pytest.param("p3", "a1", id="provider-to-aggregator"),
        pytest.param("a1", "L", id="aggregator-to-learner"),
    ],
)
def test_successor_of(node_id: str, expected: str) -> None:
    assert mixed().successor_of(node_id) == expected


def test_learner_has_no_successor() -> None:
    with pytest.raises(KeyError, match="learner has no successor"):
        mixed().successor_of("L")


@pytest.mark.parametrize(
    ("node_id", "expected"),
    [
        pytest.param("p1", {"p1"}, id="first-provider"),
        pytest.param("p2", {"p1", "p2"}, id="provider-with-input"),
        pytest.param("a1", {"p1", "p2", "p3"}, id="aggregator"),
        pytest.param("p4", {"p4"}, id="direct-provider"),
        pytest.param("L", {"p1", "p2", "p3", "p4"}, id="learner"),
    ],
)
def test_providers_upstream_of(node_id: str, expected: set[str]) -> None:
    assert mixed().providers_upstream_of(node_id) == frozenset(expected)


def test_path_to_learner() -> None:
    assert mixed().path_to_learner("p1") == ("p1", "p2", "a1", "L")
    assert mixed().path_to_learner("L") == ("L",)


@pytest.mark.parametrize("length", [1, 2, 3, 12])
def test_chain_hops_equal_providers(length: int) -> None:
    assert chain(length).hops() == length


def test_tree_hops() -> None:
    assert two_level_tree().hops() == 2


def test_hops_take_longest_path() -> None:
    # p1 -> p2 -> a1 -> L is 3 messages, p4 -> L only 1.
    assert mixed().hops() == 3
