"""The report after a run: ``report.json`` and ``report.md`` in the results folder.

For each round the learner opened it lists who contributed (or why the
learner repeated the round), which faults fired and which protocol events
the nodes logged, from the learner's metrics and the per-node event files in
``results/events/``. It ends with the final model next to the fault-free
reference run and the plaintext baseline.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from ..faults import Fault, FaultPlan
from .common import natural_order
from .comparison import describe_comparison, describe_flagged
from .eventlog import read_events
from .learner import write_json_atomically

#: Protocol events the report lists per round, in this order.
PROTOCOL_EVENTS = (
    "retried",
    "rerouted",
    "forwarded_partial",
    "dropped_duplicate",
    "dropped_stale",
    "dropped_invalid",
    "dropped_signature",
    "dropped_sealing",
    "connection_lost",
    "reconnected",
    "resumed",
)


def collect_events(folder: Path) -> list[dict[str, Any]]:
    """Return the events of every ``*.jsonl`` file in ``folder``, ordered by time."""
    events: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.jsonl")):
        events.extend(read_events(path))
    events.sort(key=lambda entry: entry.get("time") or 0.0)
    return events


def build_report(
    metrics: Mapping[str, Any],
    events: Iterable[Mapping[str, Any]],
    *,
    plan: FaultPlan | None,
    reference: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Return the report as a JSON-ready dict."""
    run = metrics.get("run")
    by_round: dict[int | None, list[Mapping[str, Any]]] = defaultdict(list)
    for entry in events:
        if entry.get("run") not in (None, run):
            continue  # an earlier run whose events share the folder
        number = entry.get("round")
        by_round[number if isinstance(number, int) and number > 0 else None].append(entry)

    outcomes: dict[int, dict[str, Any]] = {}
    for record in metrics.get("history", []):
        outcomes[record["round"]] = {
            "outcome": "completed",
            "iteration": record.get("iteration"),
            "contributors": record.get("contributors", []),
            "participants": record.get("participants"),
            "scale_total": record.get("scale_total"),
            "loss": record.get("loss"),
            "accuracy": record.get("accuracy"),
        }
    for failure in metrics.get("failed_rounds", []):
        outcomes[failure["round"]] = {"outcome": "repeated", "reason": failure.get("reason")}

    rounds = []
    for number in sorted(set(outcomes) | {key for key in by_round if key is not None}):
        entries = by_round.get(number, [])
        rounds.append(
            {
                "round": number,
                **outcomes.get(number, {"outcome": "unfinished"}),
                "faults": [
                    _fault_entry(entry) for entry in entries if entry.get("event") == "fault"
                ],
                "events": _count_events(entries),
            }
        )

    report: dict[str, Any] = {
        "job": metrics.get("job"),
        "run": run,
        "succeeded": metrics.get("succeeded"),
        "reason": metrics.get("reason"),
        "fault_plan": None
        if plan is None
        else {
            "path": str(plan.path),
            "seed": plan.seed,
            "faults": [_describe(fault) for fault in plan.faults],
        },
        "rounds": rounds,
        "events_outside_rounds": _count_events(by_round.get(None, [])),
        "totals": dict(
            Counter(_event_name(entry) for entries in by_round.values() for entry in entries)
        ),
        "model": _model_comparison(metrics, reference),
    }
    return report


def write_report(
    results: Path,
    metrics: Mapping[str, Any],
    *,
    plan: FaultPlan | None,
    reference: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Write ``report.json`` and ``report.md`` into ``results`` and return the report."""
    report = build_report(
        metrics, collect_events(results / "events"), plan=plan, reference=reference
    )
    write_json_atomically(results / "report.json", report)
    temporary = results / ".report.md.tmp"
    temporary.write_text(render_markdown(report), encoding="utf-8")
    temporary.replace(results / "report.md")
    return report


def render_markdown(report: Mapping[str, Any]) -> str:
    """Render the report as Markdown."""
    lines = [f"# Run report: job {report['job']}", ""]
    outcome = "succeeded" if report.get("succeeded") else "failed"
    lines.append(f"Run `{report.get('run')}` {outcome}: {report.get('reason')}.")
    lines.append("")
    plan = report.get("fault_plan")
    if plan is None:
        lines += ["No fault plan.", ""]
    else:
        lines += [f"Fault plan `{plan['path']}`, seed {plan['seed']}:", ""]
        lines += [f"{number}. {text}" for number, text in enumerate(plan["faults"], start=1)]
        lines.append("")

    lines += [
        "## Rounds",
        "",
        "| round | outcome | contributors | scale total | faults | protocol events |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for entry in report["rounds"]:
        if entry["outcome"] == "completed":
            outcome_text = f"completed (iteration {entry['iteration']})"
            listed = sorted(entry["contributors"], key=natural_order)
            contributors = f"{len(listed)}: {', '.join(listed)}"
        else:
            outcome_text = f"{entry['outcome']}: {entry.get('reason') or 'no total'}"
            contributors = "-"
        scale = entry.get("scale_total")
        scale_text = "-" if scale is None else f"{scale:.6g}"
        lines.append(
            f"| {entry['round']} | {_cell(outcome_text)} | {_cell(contributors)} | {scale_text} "
            f"| {_cell(_fault_summary(entry['faults']))} | {_cell(_event_summary(entry['events']))} |"
        )
    outside = report.get("events_outside_rounds") or {}
    if outside:
        lines += ["", f"Outside any round: {_event_summary(outside)}."]

    model = report["model"]
    lines += ["", "## Model", "", "| run | rounds | accuracy | loss |", "| --- | --- | --- | --- |"]
    lines.append(
        f"| this run | {model['rounds']} | {_number(model['accuracy'])} | {_number(model['loss'])} |"
    )
    if model.get("reference_accuracy") is not None or model.get("reference_rounds") is not None:
        lines.append(
            f"| fault-free reference | {model['reference_rounds']} | {_number(model['reference_accuracy'])} "
            f"| {_number(model['reference_loss'])} |"
        )
    lines.append(
        f"| plaintext baseline | {model['baseline_rounds']} | {_number(model['baseline_accuracy'])} "
        f"| {_number(model['baseline_loss'])} |"
    )
    if model.get("theta_max_difference") is not None:
        lines += [
            "",
            f"Largest difference of a parameter from the reference run: {model['theta_max_difference']:.3g}.",
        ]
    lines += _scores_section(model)
    return "\n".join(lines) + "\n"


def _scores_section(model: Mapping[str, Any]) -> list[str]:
    """Render every held-out score of the run, the baseline and the exact pooled solution."""
    pooled = model.get("pooled_reference") or {}
    rows = [
        ("this run", model.get("scores") or {}),
        ("plaintext baseline", model.get("baseline_scores") or {}),
    ]
    if pooled:
        rows.append(("exact pooled solution", pooled.get("scores") or {}))
    names = sorted(
        {name for _, scores in rows for name in scores},
        key=lambda name: (name != "loss", name != "accuracy", name),
    )
    lines: list[str] = []
    if names:
        lines += [
            "",
            "## Held-out scores",
            "",
            "| model | " + " | ".join(names) + " |",
            "| --- |" + " --- |" * len(names),
        ]
        for label, scores in rows:
            cells = " | ".join(_number(scores.get(name)) for name in names)
            lines.append(f"| {label} | {cells} |")
    if pooled:
        lines += ["", f"Exact pooled solution: {pooled['method']}."]
        if not pooled.get("converged", True):
            lines.append("The solver stopped at its iteration limit before converging.")
        compared = (("This run", "comparison"), ("Plaintext baseline", "baseline_comparison"))
        for label, key in compared:
            text = describe_comparison(pooled.get(key))
            if text is not None:
                lines.append(f"{label} against it: {text}.")
    flagged = describe_flagged(model.get("flagged_rows"))
    if flagged is not None:
        lines += ["", "## Flagged rows", "", f"{flagged[0].upper()}{flagged[1:]}."]
    return lines


def _model_comparison(
    metrics: Mapping[str, Any], reference: Mapping[str, Any] | None
) -> dict[str, Any]:
    comparison: dict[str, Any] = {
        "rounds": metrics.get("rounds"),
        "accuracy": metrics.get("accuracy"),
        "loss": metrics.get("loss"),
        "baseline_rounds": metrics.get("baseline_rounds"),
        "baseline_accuracy": metrics.get("baseline_accuracy"),
        "baseline_loss": metrics.get("baseline_loss"),
        "scores": metrics.get("scores"),
        "baseline_scores": metrics.get("baseline_scores"),
        "pooled_reference": metrics.get("pooled_reference"),
        "flagged_rows": metrics.get("flagged_rows"),
        "reference_rounds": None,
        "reference_accuracy": None,
        "reference_loss": None,
        "theta_max_difference": None,
    }
    if reference is not None:
        comparison["reference_rounds"] = reference.get("rounds")
        comparison["reference_accuracy"] = reference.get("accuracy")
        comparison["reference_loss"] = reference.get("loss")
        theta, reference_theta = metrics.get("theta") or [], reference.get("theta") or []
        if theta and len(theta) == len(reference_theta):
            comparison["theta_max_difference"] = max(
                abs(a - b) for a, b in zip(theta, reference_theta, strict=True)
            )
    return comparison


def _describe(fault: Fault) -> str:
    """Return one line that names a fault and its settings."""
    values = asdict(fault)
    index = values.pop("index")
    values.pop("kind", None)
    settings = ", ".join(
        f"{field.name}={values[field.name]}" for field in fields(fault) if field.name in values
    )
    return f"faults[{index}] {fault.kind}: {settings}"


def _event_name(entry: Mapping[str, Any]) -> str:
    if entry.get("event") == "fault":
        return f"fault:{entry.get('kind')}"
    return str(entry.get("event"))


def _fault_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    skipped = {"time", "event", "run", "round"}
    return {key: value for key, value in entry.items() if key not in skipped}


def _count_events(entries: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Count the protocol events of ``entries`` per event name and node."""
    counts: dict[str, Counter[str]] = {}
    for entry in entries:
        name = entry.get("event")
        if name in PROTOCOL_EVENTS:
            counts.setdefault(str(name), Counter())[str(entry.get("node"))] += 1
    return {name: dict(counts[name]) for name in PROTOCOL_EVENTS if name in counts}


def _fault_summary(faults: list[Mapping[str, Any]]) -> str:
    counts = Counter(f"{fault.get('kind')} at {fault.get('node')}" for fault in faults)
    return (
        ", ".join(
            f"{text} x{count}" if count > 1 else text for text, count in sorted(counts.items())
        )
        or "-"
    )


def _event_summary(events: Mapping[str, Mapping[str, int]]) -> str:
    parts = []
    for name, per_node in events.items():
        nodes = ", ".join(
            f"{node} x{count}" if count > 1 else node for node, count in sorted(per_node.items())
        )
        parts.append(f"{name.replace('_', ' ')} ({nodes})")
    return "; ".join(parts) or "-"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _number(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
