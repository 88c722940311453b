"""Tests for gradchain.faults.plan: reading and validating fault plan files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gradchain.errors import FaultPlanError
from gradchain.faults import (
    BrokerRestartFault,
    CrashFault,
    DisconnectFault,
    MessageFault,
    StragglerFault,
    load_fault_plan,
    parse_fault_plan,
)
from gradchain.topology import Topology, load_topology, write_tree

PLAN_FILE = "plan.toml"


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Topology:
    """A tree of providers p1 to p4 under aggregators a1 and a2."""
    folder = tmp_path_factory.mktemp("tree")
    path = write_tree(folder, "breast-cancer", 4, 2, job_id="tree", key_bits=512, seed=2)
    return load_topology(path)


def parse(topology: Topology, *faults: dict[str, Any], **top: Any) -> Any:
    return parse_fault_plan({**top, "faults": list(faults)}, PLAN_FILE, topology)


def test_every_fault_kind_parses(topology: Topology) -> None:
    plan = parse(
        topology,
        {"kind": "crash", "node": "p1", "round": 3, "restart_after": 2},
        {"kind": "drop", "node": "p2", "probability": 0.25},
        {
            "kind": "delay",
            "node": "*",
            "probability": 1,
            "delay": 0.5,
            "messages": ["ack"],
            "last_round": 4,
        },
        {"kind": "reorder", "node": "a1", "probability": 0.5, "first_round": 2},
        {"kind": "disconnect", "node": "learner", "round": 2, "duration": 1.5},
        {"kind": "straggler", "node": "p3", "delay": 10, "first_round": 2, "last_round": 3},
        {"kind": "broker_restart", "round": 5},
        seed=17,
    )

    assert plan.seed == 17
    assert plan.path == Path(PLAN_FILE).resolve()
    assert plan.faults == (
        CrashFault(index=1, node="p1", round=3, at="before_send", restart_after=2.0),
        MessageFault(
            index=2,
            kind="drop",
            node="p2",
            probability=0.25,
            messages=("contribution", "ack"),
            first_round=1,
            last_round=None,
            delay=0.0,
        ),
        MessageFault(
            index=3,
            kind="delay",
            node="*",
            probability=1.0,
            messages=("ack",),
            first_round=1,
            last_round=4,
            delay=0.5,
        ),
        MessageFault(
            index=4,
            kind="reorder",
            node="a1",
            probability=0.5,
            messages=("contribution", "ack"),
            first_round=2,
            last_round=None,
            delay=0.5,
        ),
        DisconnectFault(index=5, node="learner", round=2, duration=1.5),
        StragglerFault(index=6, node="p3", delay=10.0, first_round=2, last_round=3),
        BrokerRestartFault(index=7, round=5, downtime=1.0),
    )


def test_empty_plan_has_no_faults(topology: Topology) -> None:
    plan = parse_fault_plan({}, PLAN_FILE, topology)

    assert plan.seed == 0
    assert plan.faults == ()


def test_learner_crash_defaults_to_round_start(topology: Topology) -> None:
    plan = parse(topology, {"kind": "crash", "node": "learner", "round": 2, "restart_after": 1})

    assert plan.faults[0] == CrashFault(
        index=1, node="learner", round=2, at="round_start", restart_after=1.0
    )


def test_faults_for_node_include_every_node_faults(topology: Topology) -> None:
    plan = parse(
        topology,
        {"kind": "drop", "node": "p1", "probability": 0.1},
        {"kind": "duplicate", "node": "*", "probability": 0.1},
        {"kind": "drop", "node": "p2", "probability": 0.1},
        {"kind": "broker_restart", "round": 2},
    )

    assert [fault.index for fault in plan.for_node("p1")] == [1, 2]
    assert [fault.index for fault in plan.for_node("learner")] == [2]
    assert [fault.index for fault in plan.broker_restarts] == [4]


def test_crashes_ordered_by_round(topology: Topology) -> None:
    plan = parse(
        topology,
        {"kind": "crash", "node": "p1", "round": 6},
        {"kind": "crash", "node": "p1", "round": 2, "restart_after": 1},
        {"kind": "crash", "node": "p2", "round": 1},
    )

    assert [fault.round for fault in plan.crashes_of("p1")] == [2, 6]


# Errors name the file, the node id, the key and the fix


def test_unknown_node_id_rejected(topology: Topology) -> None:
    with pytest.raises(FaultPlanError) as caught:
        parse(topology, {"kind": "drop", "node": "p9", "probability": 0.5})

    error = caught.value
    assert error.path == PLAN_FILE
    assert error.node_id == "p9"
    assert error.key == "faults[1].node"
    assert error.fix is not None
    assert "p1" in error.fix
    assert "learner" in error.fix
    assert str(error).startswith("plan.toml: node 'p9': key 'faults[1].node': unknown node id 'p9'")


@pytest.mark.parametrize(
    ("fault", "key", "text"),
    [
        pytest.param(
            {"kind": "explode", "node": "p1"},
            "faults[1].kind",
            "unknown fault kind 'explode'",
            id="kind",
        ),
        pytest.param({"node": "p1"}, "faults[1].kind", "missing required key", id="no-kind"),
        pytest.param(
            {"kind": "drop", "probability": 0.5},
            "faults[1].node",
            "missing required key",
            id="no-node",
        ),
        pytest.param(
            {"kind": "crash", "node": "p1", "round": 2, "duration": 1},
            "faults[1].duration",
            "unknown key",
            id="key-of-other-kind",
        ),
        pytest.param(
            {"kind": "drop", "node": "p1", "probability": 1.5},
            "faults[1].probability",
            "must lie in [0, 1]",
            id="probability-above-one",
        ),
        pytest.param(
            {"kind": "drop", "node": "p1"},
            "faults[1].probability",
            "missing required key",
            id="no-p",
        ),
        pytest.param(
            {"kind": "delay", "node": "p1", "probability": 0.5},
            "faults[1].delay",
            "missing required key",
            id="delay-without-seconds",
        ),
        pytest.param(
            {"kind": "delay", "node": "p1", "probability": 0.5, "delay": -1},
            "faults[1].delay",
            "must be 0 or more seconds",
            id="negative-delay",
        ),
        pytest.param(
            {"kind": "drop", "node": "p1", "probability": 0.5, "delay": 1},
            "faults[1].delay",
            "does not apply to drop faults",
            id="delay-on-drop",
        ),
        pytest.param(
            {"kind": "drop", "node": "p1", "probability": 0.5, "messages": ["hello"]},
            "faults[1].messages",
            "unknown message type 'hello'",
            id="message-type",
        ),
        pytest.param(
            {"kind": "drop", "node": "p1", "probability": 0.5, "messages": []},
            "faults[1].messages",
            "is empty",
            id="no-message-types",
        ),
        pytest.param(
            {"kind": "drop", "node": "p1", "probability": 0.5, "first_round": 4, "last_round": 2},
            "faults[1].last_round",
            "before first_round 4",
            id="window-backwards",
        ),
        pytest.param(
            {"kind": "crash", "node": "p1", "round": 0},
            "faults[1].round",
            "must be at least 1",
            id="round",
        ),
        pytest.param(
            {"kind": "crash", "node": "p1"},
            "faults[1].round",
            "missing required key",
            id="no-round",
        ),
        pytest.param(
            {"kind": "crash", "node": "p1", "round": 2, "at": "lunch"},
            "faults[1].at",
            "unknown crash point",
            id="crash-point",
        ),
        pytest.param(
            {"kind": "crash", "node": "learner", "round": 2},
            "faults[1].restart_after",
            "without the learner the job can never finish",
            id="learner-stays-down",
        ),
        pytest.param(
            {
                "kind": "crash",
                "node": "learner",
                "round": 2,
                "restart_after": 1,
                "at": "before_send",
            },
            "faults[1].at",
            "the learner sends none",
            id="learner-crash-point",
        ),
        pytest.param(
            {"kind": "disconnect", "node": "p1", "round": 2, "duration": 0},
            "faults[1].duration",
            "must be greater than 0",
            id="zero-duration",
        ),
        pytest.param(
            {"kind": "straggler", "node": "a1", "delay": 5},
            "faults[1].node",
            "only a provider",
            id="aggregator-straggler",
        ),
        pytest.param(
            {"kind": "straggler", "node": "learner", "delay": 5},
            "faults[1].node",
            "only a provider",
            id="learner-straggler",
        ),
        pytest.param(
            {"kind": "broker_restart", "round": 2, "node": "p1"},
            "faults[1].node",
            "affects every node",
            id="broker-restart-with-node",
        ),
        pytest.param(
            {"kind": "drop", "node": "p1", "probability": "often"},
            "faults[1].probability",
            "expected a number",
            id="probability-string",
        ),
    ],
)
def test_invalid_fault_rejected(
    topology: Topology, fault: dict[str, Any], key: str, text: str
) -> None:
    with pytest.raises(FaultPlanError) as caught:
        parse(topology, fault)

    assert caught.value.key == key
    assert text in str(caught.value)
    assert str(caught.value).startswith(PLAN_FILE)


def test_error_names_node_of_fault(topology: Topology) -> None:
    with pytest.raises(FaultPlanError) as caught:
        parse(topology, {"kind": "drop", "node": "p2", "probability": 2})

    assert caught.value.node_id == "p2"
    assert "node 'p2'" in str(caught.value)


def test_error_counts_faults_from_one(topology: Topology) -> None:
    with pytest.raises(FaultPlanError) as caught:
        parse(
            topology,
            {"kind": "drop", "node": "p1", "probability": 0.5},
            {"kind": "drop", "node": "p1"},
        )

    assert caught.value.key == "faults[2].probability"


@pytest.mark.parametrize(
    ("document", "key", "text"),
    [
        pytest.param({"sed": 1}, "sed", "unknown key", id="misspelt-seed"),
        pytest.param({"seed": 1.5}, "seed", "expected an integer", id="float-seed"),
        pytest.param(
            {"faults": {"kind": "drop"}}, "faults", "expected an array of tables", id="faults-table"
        ),
        pytest.param(
            {"faults": [1]}, "faults[1]", "expected a [[faults]] table", id="fault-not-table"
        ),
    ],
)
def test_invalid_plan_rejected(
    topology: Topology, document: dict[str, Any], key: str, text: str
) -> None:
    with pytest.raises(FaultPlanError) as caught:
        parse_fault_plan(document, PLAN_FILE, topology)

    assert caught.value.key == key
    assert text in str(caught.value)


def test_plan_file_read_and_validated(topology: Topology, tmp_path: Path) -> None:
    path = tmp_path / PLAN_FILE
    path.write_text('seed = 4\n\n[[faults]]\nkind = "duplicate"\nnode = "p1"\nprobability = 0.5\n')

    plan = load_fault_plan(path, topology)

    assert plan.seed == 4
    assert plan.faults[0] == MessageFault(
        index=1,
        kind="duplicate",
        node="p1",
        probability=0.5,
        messages=("contribution", "ack"),
        first_round=1,
        last_round=None,
        delay=0.0,
    )


def test_missing_plan_file_rejected(topology: Topology, tmp_path: Path) -> None:
    with pytest.raises(FaultPlanError, match="file not found"):
        load_fault_plan(tmp_path / "missing.toml", topology)


def test_invalid_toml_rejected(topology: Topology, tmp_path: Path) -> None:
    path = tmp_path / PLAN_FILE
    path.write_text("[[faults]\n")

    with pytest.raises(FaultPlanError, match="invalid TOML"):
        load_fault_plan(path, topology)
