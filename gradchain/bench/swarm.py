"""Run many provider and aggregator daemons in one process (``gradchain swarm``).

Every :class:`~gradchain.node.daemon.NodeDaemon` keeps its own MQTT
connection, protocol state, event log and worker thread, exactly as in a
``gradchain node`` process, but the daemons share one event loop and one
interpreter. This lets one machine host hundreds of simulated providers
without paying a Python process for each. They also share the CPU and the
GIL, so their encryption and additions queue behind each other where
separate devices would work in parallel.

Every node subscribes to the status of every node, so N nodes starting
together make the broker deliver about N² status messages. The host starts
its daemons in batches, smaller the more nodes the job has, and waits after
each batch until they are connected and its event loop has worked off the
backlog. Without that, 500 daemons in one process fell more than a second
behind in reading their sockets, which the transport's socket watch takes
for a lost connection, and the reconnections fed the backlog further.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Sequence
from pathlib import Path

from ..errors import ConfigError
from ..faults import FaultPlan
from ..node import transport
from ..node.broker import BrokerAddress
from ..node.daemon import NodeDaemon, NodeReport
from ..topology import Topology

logger = logging.getLogger(__name__)

#: Status messages the broker may deliver for one batch of starting daemons,
#: which is about the batch size times the nodes of the job. A batch has 1 to 25 daemons.
STATUS_DELIVERIES_PER_BATCH = 2000
MAX_START_BATCH = 25
#: Delay of the event loop, in seconds, below which the host starts the next batch.
CAUGHT_UP_LAG = 0.02
#: Seconds a batch may take to connect, and the loop to catch up, before the host starts the next one.
BATCH_TIMEOUT = 120.0

#: Seconds between the transport's checks for a lost socket in a host of more than
#: BUSY_HOST_NODES daemons. See run_swarm.
BUSY_HOST_SOCKET_CHECK = 10.0
BUSY_HOST_NODES = 100

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
    if len(node_ids) > BUSY_HOST_NODES and transport.SOCKET_CHECK_INTERVAL < BUSY_HOST_SOCKET_CHECK:
        # NOTE: the socket watch takes a socket whose unread bytes did not change
        # between two checks for a lost connection. A loop that serves hundreds of
        # daemons can take longer than one check interval to get to a socket, so
        # in the 1,000-provider run healthy connections were dropped by the
        # hundreds. A longer interval only delays noticing a really lost socket.
        logger.warning(
            "hosting %d nodes: checking sockets every %g s instead of %g s",
            len(node_ids),
            BUSY_HOST_SOCKET_CHECK,
            transport.SOCKET_CHECK_INTERVAL,
        )
        transport.SOCKET_CHECK_INTERVAL = BUSY_HOST_SOCKET_CHECK
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
    tasks: list[asyncio.Task[NodeReport]] = []
    batch_size = max(1, min(MAX_START_BATCH, STATUS_DELIVERIES_PER_BATCH // len(topology.nodes)))
    try:
        for start in range(0, len(daemons), batch_size):
            batch = daemons[start : start + batch_size]
            for daemon in batch:
                tasks.append(asyncio.create_task(daemon.run(), name=f"swarm-{daemon.node_id}"))
            await _wait_for_batch(batch, tasks)
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _wait_for_batch(
    batch: Sequence[NodeDaemon], tasks: Sequence[asyncio.Task[NodeReport]]
) -> None:
    """Wait until the daemons of ``batch`` are connected and the event loop has caught up.

    Re-raises the error of a daemon that has already failed.
    """
    connected = asyncio.gather(*(daemon.connection.connected.wait() for daemon in batch))
    try:
        await asyncio.wait_for(connected, BATCH_TIMEOUT)
    except TimeoutError:
        logger.warning(
            "a batch of %d nodes did not connect within %g s; starting the next",
            len(batch),
            BATCH_TIMEOUT,
        )
    for task in tasks:
        if task.done():
            task.result()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BATCH_TIMEOUT
    while loop.time() < deadline:
        before = loop.time()
        await asyncio.sleep(0.05)
        if loop.time() - before - 0.05 < CAUGHT_UP_LAG:
            return
