"""How ``gradchain run`` reports a node that cannot start."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradchain.topology import write_chain

from .helpers import JOB_TIMEOUT, run_cli

pytestmark = pytest.mark.integration


async def test_failed_node_named_with_error_and_log(
    tmp_path: Path, time_unit: float
) -> None:
    topology = write_chain(
        tmp_path / "job", "breast-cancer", 3, job_id="broken", key_bits=512, rounds=3
    )
    (tmp_path / "job" / "data" / "p2.npz").write_bytes(b"this is not a zip archive")
    results = tmp_path / "results"
    log = results / "logs" / "p2.log"
    results.joinpath("logs").mkdir(parents=True)
    log.write_text("2026-01-01 00:00:00 ERROR   an error of an earlier run\n")

    code, _, stderr = await run_cli(
        ["run", str(topology), "--results", str(results), "--no-reference"],
        timeout=JOB_TIMEOUT * time_unit,
    )

    assert code != 0
    assert "node p2 exited with status" in stderr
    assert "p2.npz: not an .npz archive, because it is not a zip file" in stderr
    assert f"its log is {log}" in stderr
    # The log starts afresh, so the earlier run's error is gone.
    assert "an error of an earlier run" not in log.read_text()
