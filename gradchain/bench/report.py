"""Write the topology benchmark's results: JSON, a markdown table and PNG plots."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gmpy2  # type: ignore[import-untyped]
import numpy as np

from .analysis import STAGES

#: The shapes that the benchmark lists but cannot run, with the reason. Empty since
#: the multi-aggregator shape (``multi-M``) runs like the others.
NOT_AVAILABLE: list[dict[str, str]] = []


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo, or "unknown"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def mosquitto_version(executable: str | None) -> str | None:
    """Return the first line of ``mosquitto -h``, which names the version, or None."""
    if executable is None:
        return None
    try:
        output = subprocess.run(
            [executable, "-h"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (output.stdout or output.stderr).strip()
    return text.splitlines()[0] if text else None


def environment(command: str, broker: dict[str, Any]) -> dict[str, Any]:
    return {
        "command": command,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count() or 1,
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
        "python": platform.python_version(),
        "gmpy2": gmpy2.version(),
        "gmp": gmpy2.mp_version(),
        "numpy": np.__version__,
        "broker": broker,
    }


def write_results(report: dict[str, Any], folder: Path) -> list[Path]:
    """Write topology.json, topology.md and the plots into ``folder``; return the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / "topology.json"
    markdown_path = folder / "topology.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    markdown_path.write_text(markdown(report))
    return [json_path, markdown_path, *plot(report, folder)]


def _ms(value: float) -> str:
    return f"{1000 * value:.1f}"


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    settings = report["settings"]
    link = settings["link"]
    lines = [
        "# gradchain topology benchmark",
        "",
        f"Command: `{env['command']}`",
        "",
        f"- CPU: {env['cpu_model']}, {env['cores']} cores (load average at start "
        f"{', '.join(f'{x:.2f}' for x in env['load_average_at_start'])}, at end "
        f"{', '.join(f'{x:.2f}' for x in env.get('load_average_at_end', []))})",
        f"- Python {env['python']}, gmpy2 {env['gmpy2']} ({env['gmp']}), numpy {env['numpy']}",
        f"- Broker: {env['broker']['kind']} at {env['broker']['url']}"
        + (f" ({env['broker']['version']})" if env["broker"].get("version") else ""),
        f"- Date: {env['date']}, {env.get('seconds', 0):.0f} s in all",
        f"- {settings['key_bits']}-bit key; {settings['warmup']} warm-up round(s), then {settings['rounds']} "
        f"measured round(s) per configuration; nodes in "
        + (
            "one process each"
            if settings["hosts"] == 0
            else f"{settings['hosts']} host process(es)"
        ),
        "- Link emulation: "
        + (
            "none (loopback)"
            if link is None
            else f"latency {link['latency_s']} s, bandwidth {link['bandwidth_mbps']} Mbit/s on every node's uplink"
        ),
        "",
        "Latency is from the learner publishing RoundStart to it recording the round. Stage shares are "
        "of the critical path (see docs/benchmarks.md). Plaintext rows use `crypto.encryption = false`: "
        "the same daemons, messages and additions without obfuscators and without decryption.",
        "",
        "| topology | N | floats | mode | hops | path hops | median s | p95 s | per hop ms | "
        + " | ".join(STAGES)
        + " | KB/round | node CPU s/round | peak MB/node | model s |",
        "|" + "---|" * (13 + len(STAGES)),
    ]
    for row in report["configurations"]:
        shares = row["critical_path"]["shares"]
        cpu = sum(
            entry["cpu_s_per_round"]
            for role, entry in row["processes"]["roles"].items()
            if role in ("host", "node")
        )
        lines.append(
            f"| {row['topology']} | {row['providers']} | {row['size']:,} | {row['mode']} | {row['hops']} "
            f"| {row['critical_path']['hops_median']:g} | {row['latency_s']['median']:.3f} "
            f"| {row['latency_s']['p95']:.3f} | {_ms(row['per_hop_s']['median'])} "
            + " ".join(f"| {100 * shares[name]:.0f}%" for name in STAGES)
            + f" | {row['broker']['published_bytes_per_round'] / 1000:.1f} | {cpu:.2f} "
            f"| {row['processes']['per_node']['peak_rss_mb']:.1f} | {row.get('model_s', float('nan')):.3f} |"
        )
    recovering = [row for row in report["configurations"] if any(row.get("recovery_events", {}).values())]
    if recovering:
        lines += ["", "Recovery events in the measured rounds (connection losses: whole job):", ""]
        for row in recovering:
            counts = ", ".join(f"{name} {count}" for name, count in row["recovery_events"].items() if count)
            lines.append(f"- {row['id']}: {counts}")
    lines += ["", "## Cost model", ""]
    lines.append(
        "latency = encrypt + decrypt + c0 + per_hop * hops + per_extra_input * (inputs beyond the first "
        "at each node of the path), fitted by least squares per gradient size and mode."
    )
    lines += [
        "",
        "| floats | mode | encrypt ms | decrypt ms | c0 ms | per hop ms | per extra input ms "
        "| R² | RMS error ms |",
        "|" + "---|" * 9,
    ]
    for model in report["cost_model"]:
        parameters = model["parameters"]
        lines.append(
            f"| {model['size']:,} | {model['mode']} | {_ms(model['encrypt_s'])} | {_ms(model['decrypt_s'])} "
            f"| {_ms(parameters['c0_s'])} | {_ms(parameters['per_hop_s'])} | {_ms(parameters['per_extra_input_s'])} "
            f"| {model['r_squared']:.3f} | {_ms(model['rms_error_s'])} |"
        )
    lines += [
        "",
        "Predictions (model fitted on this run). A fit marked rough left out an unknown, "
        "because the run had too few distinct shapes, or has R² below 0.8: measure more "
        "provider counts and topologies before trusting it.",
        "",
        "| floats | mode | topology | N | hops | predicted s | fit |",
        "|---|---|---|---|---|---|---|",
    ]
    for model in report["cost_model"]:
        fit = "good" if model.get("reliable") else "rough"
        for item in model["predictions"]:
            lines.append(
                f"| {model['size']:,} | {model['mode']} | {item['topology']} | {item['providers']:,} "
                f"| {item['hops']} | {item['latency_s']:.3f} | {fit} |"
            )
    if report.get("skipped"):
        lines += ["", "## Skipped", ""]
        for item in report["skipped"]:
            lines.append(f"- {item['id']}: {item['reason']}.")
    if report["not_available"]:
        lines += ["", "## Not available", ""]
        for item in report["not_available"]:
            lines.append(f"- {item['topology']} ({item['description']}): {item['reason']}.")
    lines.append("")
    return "\n".join(lines)


def plot(report: dict[str, Any], folder: Path) -> list[Path]:
    """Draw latency against N per topology (log scales) and the critical path's stage shares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["configurations"]
    sizes = sorted({row["size"] for row in rows})
    paths: list[Path] = []
    if not rows:
        return paths

    figure, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4.5), squeeze=False)
    # One colour per topology; encrypted rows solid, plaintext rows dashed.
    topologies = sorted({row["topology"] for row in rows})
    colours = {name: f"C{index}" for index, name in enumerate(topologies)}
    for axis, size in zip(axes[0], sizes, strict=True):
        for (topology, mode), group in _groups(rows, size).items():
            group.sort(key=lambda row: row["providers"])
            axis.plot(
                [row["providers"] for row in group],
                [row["latency_s"]["median"] for row in group],
                marker="o",
                color=colours[topology],
                linestyle="-" if mode == "encrypted" else "--",
                label=f"{topology} ({mode})",
            )
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("providers N")
        axis.set_ylabel("median round latency (s)")
        axis.set_title(f"{size:,} floats, {report['settings']['key_bits']}-bit key")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    paths.append(folder / "latency_vs_providers.png")
    figure.savefig(paths[-1], dpi=110)
    plt.close(figure)

    encrypted = [row for row in rows if row["mode"] == "encrypted"] or rows
    figure, axes = plt.subplots(
        len(sizes), 1, figsize=(max(8, 0.45 * len(encrypted)), 4 * len(sizes)), squeeze=False
    )
    for axis, size in zip(axes[:, 0], sizes, strict=True):
        group = sorted(
            (row for row in encrypted if row["size"] == size),
            key=lambda row: (row["topology"], row["providers"]),
        )
        labels = [f"{row['topology']}\nN={row['providers']}" for row in group]
        bottom = np.zeros(len(group))
        for stage in STAGES:
            values = np.array([row["critical_path"]["shares"][stage] for row in group])
            axis.bar(labels, values, bottom=bottom, label=stage)
            bottom += values
        axis.set_ylabel("share of the critical path")
        axis.set_title(f"{size:,} floats, {group[0]['mode'] if group else ''}")
        axis.tick_params(axis="x", labelsize=7)
        axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    paths.append(folder / "stage_shares.png")
    figure.savefig(paths[-1], dpi=110)
    plt.close(figure)
    return paths


def _groups(rows: list[dict[str, Any]], size: int) -> dict[tuple[str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        if row["size"] == size:
            groups.setdefault((row["topology"], row["mode"]), []).append(row)
    return groups
