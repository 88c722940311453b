"""Smoke test of benchmarks/crypto.py: a quick run on a tiny key fills every field of the JSON.

The timings themselves are never asserted, because they depend on the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "crypto.py"

ROW_FIELDS = {"size", "phe", "gradchain", "ratios_phe_over_gradchain", "targets"}
GRADCHAIN_FIELDS = {
    "ciphertexts",
    "encrypt_on_the_spot_1_thread_ms",
    "encrypt_on_the_spot_all_cores_ms",
    "encrypt_online_full_pool_ms",
    "pool_fill_s",
    "hop_ms",
    "bytes_per_element",
    "decrypt_all_cores_ms",
    "decrypt_1_thread_ms",
    "sign_ms",
    "verify_ms",
    "signed_bytes_overhead",
    "seal_ms",
    "unseal_ms",
    "sealed_bytes_overhead",
}
PHE_FIELDS = {
    "elements_timed",
    "extrapolated",
    "encrypt_ms_per_element",
    "decrypt_ms_per_element",
    "bytes_per_element",
}


def empty_fields(value: Any, path: str = "") -> list[str]:
    """Return the paths of every None, empty string, empty list or empty object in ``value``."""
    if value is None or value == "" or value == [] or value == {}:
        return [path or "<root>"]
    if isinstance(value, dict):
        found = []
        for key, child in value.items():
            found += empty_fields(child, f"{path}.{key}")
        return found
    if isinstance(value, list):
        found = []
        for index, child in enumerate(value):
            found += empty_fields(child, f"{path}[{index}]")
        return found
    return []


def test_quick_run_fills_every_field(tmp_path: Path) -> None:
    command = [
        sys.executable,
        str(SCRIPT),
        "--quick",
        "--key-sizes",
        "256",
        "--sizes",
        "30",
        "--phe-sample",
        "5",
        "--processes",
        "2",
        "--output-dir",
        str(tmp_path),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr

    report = json.loads((tmp_path / "crypto-quick.json").read_text())
    markdown = (tmp_path / "crypto-quick.md").read_text()

    # A run without the 2048-bit, 10,000-float case has no target rows, which is not a gap.
    report.pop("targets")
    assert not empty_fields(report)
    assert report["quick"] is True
    assert report["environment"]["command"].startswith("python benchmarks/crypto.py --quick")
    assert report["environment"]["cpu_model"]
    [key] = report["keys"]
    assert key["key_bits"] == 256
    [row] = key["rows"]
    assert set(row) == ROW_FIELDS
    assert row["size"] == 30
    assert set(row["gradchain"]) >= GRADCHAIN_FIELDS
    assert set(row["phe"]) >= PHE_FIELDS
    assert row["phe"]["extrapolated"] is True
    assert row["phe"]["elements_timed"] == 5
    assert "| 30 |" in markdown
    assert "python benchmarks/crypto.py --quick" in markdown
