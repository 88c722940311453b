"""Run many provider and aggregator daemons in one process (``gradchain swarm``).

Every :class:`~gradchain.node.daemon.NodeDaemon` keeps its own MQTT
connection, protocol state, event log and worker thread, exactly as in a
``gradchain node`` process, but the daemons share one event loop and one
interpreter. This lets one machine host hundreds of simulated providers
without paying a Python process for each. They also share the CPU and the
GIL, so their encryption and additions queue behind each other where
separate devices would work in parallel.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Sequence
from pathlib import Path

from ..errors import ConfigError
from ..faults import FaultPlan
from ..node.broker import BrokerAddress
from ..node.daemon import NodeDaemon, NodeReport
from ..topology import Topology

logger = logging.getLogger(__name__)

#: File descriptors one hosted daemon needs: its MQTT socket, the socket of
#: its start-up status check and its event log file.
DESCRIPTORS_PER_NODE = 4


def nodes_of_host(topology: Topology, host_index: int, hosts: int) -> list[str]:
    """Return the node ids that host ``host_index`` of ``hosts`` runs: every ``hosts``-th node of the topology."""
    if hosts < 1 or not 0 <= host_index < hosts:
        raise ConfigError(f"host index {host_index} must lie in [0, {hosts - 1}] for {hosts} hosts")
    return list(topology.nodes)[host_index::hosts]


def raise_descriptor_limit(needed: int) -> None:
    """Raise this process's soft limit of open files to ``needed``, up to the hard limit.

    Raises ConfigError when the hard limit is lower than ``needed``.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ConfigError(
            f"hosting these nodes needs about {needed} open files, but the hard limit is {hard}; "
            "raise it (ulimit -Hn) or spread the nodes over more processes with --hosts"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


async def run_swarm(
    topology: Topology,
    node_ids: Sequence[str],
    broker: BrokerAddress,
    *,
    events_dir: Path | None,
    faults: FaultPlan | None = None,
    offline_wait: float = 5.0,
) -> list[NodeReport]:
    """Run the daemons of ``node_ids`` until the learner ends the job, and return their reports.

    Raises the first daemon's error after stopping the others.
    """
    unknown = [node_id for node_id in node_ids if node_id not in topology.nodes]
    if unknown:
        raise ConfigError(
            f"no nodes {unknown} in {topology.path} (known: {', '.join(topology.nodes)})"
        )
    raise_descriptor_limit(64 + DESCRIPTORS_PER_NODE * len(node_ids))
    daemons = [
        NodeDaemon(
            topology,
            node_id,
            broker,
            faults=faults,
            events_dir=events_dir,
            offline_wait=offline_wait,
        )
        for node_id in node_ids
    ]
    logger.info("hosting %d nodes of job %s", len(daemons), topology.job.id)
    tasks = [
        asyncio.create_task(daemon.run(), name=f"swarm-{daemon.node_id}") for daemon in daemons
    ]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
