"""A node started with another topology file than the learner's, on a real broker."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from gradchain.node.broker import MosquittoBroker
from gradchain.topology import write_chain

from .helpers import JOB_TIMEOUT, run_cli

pytestmark = pytest.mark.integration


async def test_mismatched_node_reports_and_exits(
    tmp_path: Path, mosquitto: MosquittoBroker, time_unit: float
) -> None:
    topology = write_chain(
        tmp_path / "job",
        "breast-cancer",
        3,
        job_id="mismatch",
        key_bits=512,
        rounds=2,
        min_contributors=2,
        round_timeout=4.0 * time_unit,
    )
    # p3's copy differs in one crypto setting; its data and key paths stay the same.
    other = topology.with_name("topology-p3.toml")
    other.write_text(
        topology.read_text().replace("frac_bits = 32", "frac_bits = 30"), encoding="utf-8"
    )
    code, _, stderr = await run_cli(["keys", str(topology)], timeout=60 * time_unit)
    assert code == 0, stderr

    broker = ["--broker", mosquitto.address.url]
    environment = dict(os.environ, PYTHONUNBUFFERED="1")
    nodes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gradchain",
            "node",
            "--id",
            node_id,
            str(other if node_id == "p3" else topology),
            *broker,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=environment,
        )
        for node_id in ("p1", "p2", "p3")
    ]
    learner_code, _, learner_err = await run_cli(
        ["learner", str(topology), *broker, "--results", str(tmp_path / "results")],
        timeout=JOB_TIMEOUT * time_unit,
    )
    outputs = [
        (await asyncio.wait_for(node.communicate(), 60 * time_unit))[0].decode() for node in nodes
    ]

    # p3 is the chain's last node and rejects every round, so the learner gets
    # nothing and ends the job as failed. This test checks what p3 reports.
    assert learner_code in (0, 1), learner_err
    p3_output = outputs[2]
    assert "differ from this node's" in p3_output
    assert "run every node with the learner's topology file" in p3_output
    assert nodes[2].returncode == 2
    assert "the job ended without this node" in p3_output
    assert nodes[0].returncode == 0
    assert nodes[1].returncode == 0
