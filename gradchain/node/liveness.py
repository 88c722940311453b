"""Refuse to start a node whose id another process already runs.

Two MQTT clients with one client id take the connection from each other in
turn, so a second process started with a running node's id would knock the
first one off the broker again and again. Before a daemon connects with its
real client id, :func:`ensure_not_running` reads the node's retained status
through a connection with a temporary client id, and raises when the status
shows another instance online.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

import aiomqtt

from ..errors import DuplicateNodeError, ProtocolError, TransportError
from ..protocol import Liveness, Status
from ..protocol.signing import MessageSigning, decode_unverified
from ..protocol.topics import PREFIX, status_topic
from .broker import BrokerAddress

logger = logging.getLogger(__name__)

#: Default seconds to wait for an online status to turn offline before raising.
#: The broker publishes a crashed process's last will as soon as it detects that
#: the TCP connection closed, which on a local network takes milliseconds.
DEFAULT_OFFLINE_WAIT = 5.0


async def ensure_not_running(
    broker: BrokerAddress,
    job: str,
    node_id: str,
    *,
    offline_wait: float = DEFAULT_OFFLINE_WAIT,
    connect_timeout: float = 30.0,
    signing: MessageSigning | None = None,
) -> None:
    """Raise DuplicateNodeError when the retained status shows ``node_id`` online in ``job``.

    The check connects with a temporary client id. After subscribing to the
    status it publishes a marker on a topic of its own: the broker sends the
    retained status before the marker, so once the marker is back the status
    is known. An online status may belong to a process that has just crashed
    and whose last will the broker has not published yet, so the check waits
    up to ``offline_wait`` seconds for it to turn offline before it raises.

    With ``signing`` the check ignores a status whose signature does not
    verify, so a forged online status cannot keep a node from starting.

    Raises TransportError when the broker cannot be reached.
    """
    probe_id = f"gradchain-probe-{secrets.token_hex(6)}"
    marker_topic = f"{PREFIX}/{job}/probe/{probe_id}"
    topic = status_topic(job, node_id)
    loop = asyncio.get_running_loop()
    status: Status | None = None
    try:
        async with asyncio.timeout(connect_timeout) as timer:
            async with aiomqtt.Client(
                broker.host,
                broker.port,
                identifier=probe_id,
                protocol=aiomqtt.ProtocolVersion.V311,
                clean_session=True,
                timeout=connect_timeout,
            ) as client:
                await client.subscribe(topic, qos=1)
                await client.subscribe(marker_topic, qos=1)
                await client.publish(marker_topic, b"", qos=1)
                marker_seen = False
                async for message in client.messages:
                    if message.topic.matches(marker_topic):
                        marker_seen = True
                        timer.reschedule(loop.time() + offline_wait)
                    elif message.topic.matches(topic):
                        status = _parse_status(message.payload, topic, signing)
                    if marker_seen and (status is None or status.state is Liveness.OFFLINE):
                        return
                    if marker_seen and status is not None:
                        logger.info(
                            "node %s is online as instance %s; waiting up to %g s for it to go offline",
                            node_id,
                            status.instance,
                            offline_wait,
                        )
    except TimeoutError:
        if status is not None and status.state is Liveness.ONLINE:
            raise DuplicateNodeError(
                f"node {node_id!r} of job {job!r} is already online at {broker.url} "
                f"(instance {status.instance}); stop that process or start this one with another --id. "
                "If that process crashed, the broker marks it offline within 1.5 times its MQTT "
                "keepalive (45 s by default), after which this one can start"
            ) from None
        raise TransportError(
            f"timed out after {connect_timeout:g} s reading the status of {node_id!r} from {broker.url}"
        ) from None
    except aiomqtt.MqttError as exc:
        raise TransportError(
            f"cannot read the status of {node_id!r} from the MQTT broker at {broker.url}: {exc} "
            "(check that the broker runs and the address is right)"
        ) from exc


def _parse_status(
    payload: object, topic: str, signing: MessageSigning | None = None
) -> Status | None:
    if not isinstance(payload, bytes) or not payload:
        return None  # no retained status, or a cleared one
    try:
        message = decode_unverified(payload) if signing is None else signing.open(payload)
    except ProtocolError as error:
        logger.warning("ignored an invalid retained status on %s: %s", topic, error)
        return None
    return message if isinstance(message, Status) else None
