"""Tests for gradchain.node.report and the event files it reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gradchain.faults import parse_fault_plan
from gradchain.node.eventlog import EventLog, read_events
from gradchain.node.report import build_report, collect_events, render_markdown, write_report
from gradchain.topology import load_topology, write_chain

RUN = "0123456789abcdef"

METRICS: dict[str, Any] = {
    "job": "chain",
    "run": RUN,
    "succeeded": True,
    "reason": "reached the round limit of 2",
    "rounds": 2,
    "accuracy": 0.95,
    "loss": 0.12,
    "theta": [0.5, -0.25],
    "baseline_rounds": 2,
    "baseline_accuracy": 0.96,
    "baseline_loss": 0.11,
    "history": [
        {"round": 1, "iteration": 1, "contributors": ["p1", "p2", "p3"], "scale_total": 3.0},
        {
            "round": 3,
            "iteration": 2,
            "contributors": ["p1", "p3"],
            "scale_total": 2.0,
            "participants": None,
        },
    ],
    "failed_rounds": [{"round": 2, "reason": "only 1 contributors, at least 2 are required"}],
}


def event(
    node: str, name: str, round: int | None, run: str | None = RUN, **fields: Any
) -> dict[str, Any]:
    return {"time": 1.0, "node": node, "event": name, "run": run, "round": round, **fields}


EVENTS = [
    event("p2", "fault", 2, kind="crash", fault=1),
    event("p1", "retried", 2, to="p2"),
    event("p1", "rerouted", 3, to="p3", skipped=["p2"]),
    event("p1", "retried", 3, to="p3"),
    event("p1", "retried", 3, to="p3"),
    event("p3", "dropped_duplicate", 3, sender="p1"),
    event("p3", "fault", 3, kind="duplicate", fault=2, message="contribution"),
    event("p3", "connection_lost", None, run=None),
    event("p3", "retried", 1, run="fedcba9876543210"),
]


def test_report_lists_each_round() -> None:
    report = build_report(METRICS, EVENTS, plan=None, reference=None)

    rounds = {entry["round"]: entry for entry in report["rounds"]}
    assert sorted(rounds) == [1, 2, 3]
    assert rounds[1]["outcome"] == "completed"
    assert rounds[1]["contributors"] == ["p1", "p2", "p3"]
    assert rounds[1]["scale_total"] == 3.0
    assert rounds[2]["outcome"] == "repeated"
    assert rounds[2]["reason"] == "only 1 contributors, at least 2 are required"
    assert [fault["kind"] for fault in rounds[2]["faults"]] == ["crash"]
    assert rounds[3]["events"] == {
        "retried": {"p1": 2},
        "rerouted": {"p1": 1},
        "dropped_duplicate": {"p3": 1},
    }


def test_report_skips_events_of_other_runs() -> None:
    report = build_report(METRICS, EVENTS, plan=None, reference=None)

    rounds = {entry["round"]: entry for entry in report["rounds"]}
    assert rounds[1]["events"] == {}
    assert report["events_outside_rounds"] == {"connection_lost": {"p3": 1}}


def test_report_compares_with_reference() -> None:
    reference = {"rounds": 2, "accuracy": 0.97, "loss": 0.1, "theta": [0.5, -0.5]}

    report = build_report(METRICS, EVENTS, plan=None, reference=reference)

    model = report["model"]
    assert model["reference_accuracy"] == 0.97
    assert model["theta_max_difference"] == pytest.approx(0.25)
    assert model["baseline_accuracy"] == 0.96


def test_markdown_names_faults_and_repeats() -> None:
    text = render_markdown(
        build_report(METRICS, EVENTS, plan=None, reference={"rounds": 2, "accuracy": 0.97})
    )

    assert "| 2 | repeated: only 1 contributors, at least 2 are required |" in text
    assert "| 1 | completed (iteration 1) | 3: p1, p2, p3 | 3 |" in text
    assert "crash at p2" in text
    assert "retried (p1 x2)" in text
    assert "fault-free reference" in text


def test_markdown_lists_scores_and_flags() -> None:
    metrics = {
        **METRICS,
        "scores": {"loss": 0.9, "target_mae": 8.1},
        "baseline_scores": {"loss": 0.8, "target_mae": 8.0},
        "pooled_reference": {
            "method": "numpy.linalg.lstsq on the pooled training rows",
            "converged": True,
            "scores": {"loss": 0.8, "target_mae": 7.9},
            "comparison": {"theta_max_difference": 0.03},
            "baseline_comparison": {"theta_max_difference": 0.001},
        },
        "flagged_rows": {"p10": 1, "p2": 4},
    }

    text = render_markdown(build_report(metrics, EVENTS, plan=None, reference=None))

    assert "| model | loss | target_mae |" in text
    assert "| this run | 0.9000 | 8.1000 |" in text
    assert "| plaintext baseline | 0.8000 | 8.0000 |" in text
    assert "| exact pooled solution | 0.8000 | 7.9000 |" in text
    assert "This run against it: largest parameter difference 0.03." in text
    assert "5 rows flagged" in text
    assert "p2 4, p10 1" in text


def test_report_lists_plan(tmp_path: Path) -> None:
    topology = load_topology(
        write_chain(tmp_path / "job", "breast-cancer", 3, job_id="chain", key_bits=512)
    )
    plan = parse_fault_plan(
        {"seed": 3, "faults": [{"kind": "drop", "node": "p1", "probability": 0.5}]},
        "plan.toml",
        topology,
    )

    report = build_report(METRICS, [], plan=plan, reference=None)

    assert report["fault_plan"]["seed"] == 3
    assert report["fault_plan"]["faults"][0].startswith("faults[1] drop: node=p1, probability=0.5")


def test_write_report_reads_event_files(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events", "p1")
    log.record("retried", run=RUN, round=3, to="p2")
    log.close()

    write_report(tmp_path, METRICS, plan=None, reference=None)

    report = json.loads((tmp_path / "report.json").read_text())
    rounds = {entry["round"]: entry for entry in report["rounds"]}
    assert rounds[3]["events"] == {"retried": {"p1": 1}}
    assert "retried (p1)" in (tmp_path / "report.md").read_text()


def test_event_log_appends_across_processes(tmp_path: Path) -> None:
    first = EventLog(tmp_path, "p1")
    first.record("retried", run=RUN, round=1)
    first.close()
    second = EventLog(tmp_path, "p1")
    second.record("fault", run=RUN, round=2, kind="crash")
    second.close()

    events = list(read_events(tmp_path / "p1.jsonl"))

    assert [(entry["event"], entry["round"]) for entry in events] == [("retried", 1), ("fault", 2)]
    assert all(entry["node"] == "p1" for entry in events)


def test_cut_short_event_line_skipped(tmp_path: Path) -> None:
    (tmp_path / "p1.jsonl").write_text(
        json.dumps(event("p1", "retried", 1)) + '\n{"time": 2.0, "no'
    )

    events = collect_events(tmp_path)

    assert [entry["event"] for entry in events] == ["retried"]


def test_event_log_without_folder_only_counts(tmp_path: Path) -> None:
    log = EventLog(None, "p1")
    log.record("retried", round=1)
    log.record("retried", round=2)

    assert log.path is None
    assert log.counts == {"retried": 2}
