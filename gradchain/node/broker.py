"""MQTT brokers for local runs and tests, and the broker URL format.

``embedded_broker`` runs amqtt inside the current event loop, so the one-command
local run needs no separate broker. ``mosquitto_broker`` runs a mosquitto
subprocess that tests can stop, kill and start again. Both listen on an IPv4
loopback address only and accept anonymous MQTT 3.1.1 clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import shutil
import signal
import socket
import tempfile
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from amqtt.broker import Broker
from amqtt.errors import BrokerError

from gradchain.errors import ConfigError, TransportError

logger = logging.getLogger(__name__)

DEFAULT_MQTT_PORT = 1883
LOOPBACK_HOST = "127.0.0.1"
BROKER_URL_FORM = "mqtt://HOST[:PORT]"

# Attempts at binding a freshly picked port before giving up. Another process
# can take the port between the probe that found it free and the broker's bind.
_PORT_ATTEMPTS = 5

# Loggers whose INFO output would flood a local run: amqtt logs every
# connection, and its state machine library `transitions` every state change.
_AMQTT_LOGGER_NAMES = ("amqtt", "transitions")

_MOSQUITTO_FALLBACK_PATH = "/usr/sbin/mosquitto"
_LOG_TAIL_CHARS = 2000


@dataclass(frozen=True, kw_only=True)
class BrokerAddress:
    """Host and TCP port of an MQTT broker."""

    host: str
    port: int

    @property
    def url(self) -> str:
        """Broker URL in the form parse_broker_url accepts, such as mqtt://127.0.0.1:1883."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mqtt://{host}:{self.port}"


def parse_broker_url(url: str) -> BrokerAddress:
    """Parse mqtt://HOST[:PORT] into a BrokerAddress, with port 1883 when none is given.

    Raises ConfigError naming the value and the accepted form for any other
    scheme, a missing host, an invalid port, credentials, a path, a query or a
    fragment.
    """
    if any(character.isspace() for character in url):
        _reject_broker_url(url, "it contains whitespace")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        _reject_broker_url(url, str(exc), cause=exc)
    if parts.scheme != "mqtt":
        _reject_broker_url(url, f"the scheme must be mqtt, not {parts.scheme or 'missing'!r}")
    if parts.username is not None or parts.password is not None:
        _reject_broker_url(url, "credentials in the URL are not supported")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        _reject_broker_url(url, "a path, query or fragment is not allowed")

    host = parts.hostname
    if not host:
        _reject_broker_url(url, "the host is missing")
    if parts.netloc.endswith(":"):
        _reject_broker_url(url, "the port after ':' is missing")
    try:
        port = parts.port
    except ValueError as exc:
        _reject_broker_url(url, f"the port is invalid ({exc})", cause=exc)
    if port == 0:
        _reject_broker_url(url, "port 0 cannot be connected to")

    return BrokerAddress(host=host, port=DEFAULT_MQTT_PORT if port is None else port)


def _reject_broker_url(url: str, reason: str, *, cause: Exception | None = None) -> NoReturn:
    message = (
        f"Invalid broker URL {url!r}: {reason}. "
        f"Expected {BROKER_URL_FORM}, for example mqtt://127.0.0.1:{DEFAULT_MQTT_PORT}."
    )
    raise ConfigError(message) from cause


def find_free_port(host: str = LOOPBACK_HOST) -> int:
    """Return a TCP port that was free on host a moment ago.

    The port is released before returning, so another process may take it
    before the caller binds it. Callers retry on EADDRINUSE.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def _require_ipv4_loopback(host: str) -> None:
    try:
        is_loopback = ipaddress.IPv4Address(host).is_loopback
    except ipaddress.AddressValueError:
        is_loopback = False
    if not is_loopback:
        raise ConfigError(
            f"Invalid broker host {host!r}: a local broker listens on an IPv4 loopback "
            f"address only, such as {LOOPBACK_HOST}."
        )


def _is_address_in_use(exc: BaseException) -> bool:
    """Return whether exc or an exception in its cause chain is EADDRINUSE."""
    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, OSError) and current.errno == errno.EADDRINUSE:
            return True
        current = current.__cause__
    return False


# ---------------------------------------------------------------------------
# amqtt inside the current event loop


class _SnapshotIterationDict(dict[str, Any]):
    """A dict whose plain iteration walks a snapshot of its keys."""

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.keys()))


def _guard_subscription_iteration(broker: Broker) -> None:
    """Work around a race in amqtt 0.12.1 when several clients connect at once.

    amqtt iterates over its subscription table with an ``await`` inside the
    loop while it hands retained messages to a new client. A subscription
    made by another client meanwhile raises "dictionary changed size during
    iteration", which kills the new client's session, so its subscribe times
    out. Iterating over a snapshot of the keys avoids that.
    """
    # NOTE: relies on the private attribute Broker._subscriptions of amqtt 0.12.
    table = getattr(broker, "_subscriptions", None)
    if isinstance(table, dict):
        broker._subscriptions = _SnapshotIterationDict(table)


@contextlib.asynccontextmanager
async def embedded_broker(host: str = LOOPBACK_HOST, port: int = 0) -> AsyncIterator[BrokerAddress]:
    """Run an amqtt broker in the current event loop and yield its address.

    The broker listens on host, which must be an IPv4 loopback address, and
    accepts anonymous clients. Port 0 picks a free port. The broker keeps no
    state on disk, so retained messages and sessions end with the context.
    While it runs, the amqtt loggers are set to WARNING unless the caller
    has given them a level.

    Raises ConfigError for a host that is not loopback and TransportError
    when the broker cannot bind its port.

    NOTE: amqtt 0.12.1 accepts MQTT 3.1.1 only and differs from mosquitto in
    two ways that clients must tolerate. A connecting client receives the
    retained messages matching any subscription the broker holds for any
    client, not only its own. Anonymous sessions with clean_session=False lose the QoS 1
    messages published while they are offline.
    """
    _require_ipv4_loopback(host)
    with _quiet_amqtt_logging():
        broker, bound_port = await _start_amqtt(host, port)
        logger.info("Embedded MQTT broker listening on %s:%d", host, bound_port)
        try:
            yield BrokerAddress(host=host, port=bound_port)
        finally:
            await _shutdown_amqtt(broker)
            logger.info("Embedded MQTT broker on %s:%d stopped", host, bound_port)


class EmbeddedBroker:
    """An amqtt broker in the current event loop that can be stopped and started again.

    The first start() picks a free port when ``port`` is 0. Later starts bind
    the same port, so clients can reconnect to the address they know. A
    restarted broker has no retained messages or sessions. Same host rules
    and amqtt caveats as :func:`embedded_broker`.
    """

    def __init__(self, host: str = LOOPBACK_HOST, port: int = 0) -> None:
        _require_ipv4_loopback(host)
        self.host = host
        self.port = port
        self._broker: Broker | None = None
        self._exit_stack = contextlib.ExitStack()

    @property
    def address(self) -> BrokerAddress:
        """Host and port; the port is known after the first start()."""
        return BrokerAddress(host=self.host, port=self.port)

    @property
    def running(self) -> bool:
        return self._broker is not None

    async def __aenter__(self) -> EmbeddedBroker:
        """Start the broker, with the amqtt loggers at WARNING as in :func:`embedded_broker`."""
        self._exit_stack.enter_context(_quiet_amqtt_logging())
        try:
            await self.start()
        except BaseException:
            self._exit_stack.close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self.stop()
        finally:
            self._exit_stack.close()

    async def start(self) -> None:
        """Start the broker; raises TransportError when its port cannot be bound."""
        if self._broker is not None:
            raise RuntimeError(f"the embedded broker is already running on port {self.port}")
        self._broker, self.port = await _start_amqtt(self.host, self.port)
        logger.info("Embedded MQTT broker listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        """Shut the broker down, closing every client connection. Does nothing when it is not running."""
        broker, self._broker = self._broker, None
        if broker is not None:
            await _shutdown_amqtt(broker)
            logger.info("Embedded MQTT broker on %s:%d stopped", self.host, self.port)


async def _shutdown_amqtt(broker: Broker) -> None:
    """Shut amqtt down, working around a hang in amqtt 0.12.1.

    For each client, amqtt's shutdown cancels the handler's reader task and
    waits for an event that the reader sets on its way out. On Python 3.11,
    asyncio.wait_for can swallow that cancellation when a packet arrives at
    the same moment, so the reader keeps running and shutdown waits forever
    with the clients still connected. Aborting every client's TCP connection
    first makes each reader stop at end of stream by itself, and setting the
    event whenever a reader task ends covers a reader cancelled on its way out.
    """
    # NOTE: relies on the private attributes Broker._sessions, and writer._writer,
    # _reader_task and _reader_stopped of amqtt's protocol handlers, in amqtt 0.12.
    sessions = getattr(broker, "_sessions", {})
    for _, handler in list(sessions.values()) if isinstance(sessions, dict) else []:
        stream = getattr(getattr(handler, "writer", None), "_writer", None)
        if isinstance(stream, asyncio.StreamWriter):
            stream.transport.abort()
        reader = getattr(handler, "_reader_task", None)
        stopped = getattr(handler, "_reader_stopped", None)
        if isinstance(reader, asyncio.Task) and isinstance(stopped, asyncio.Event):
            reader.add_done_callback(_setter_of(stopped))
    await broker.shutdown()


def _setter_of(event: asyncio.Event) -> Callable[[asyncio.Task[Any]], None]:
    """Return a done-callback that sets ``event``."""

    def set_event(_task: asyncio.Task[Any]) -> None:
        event.set()

    return set_event


def _amqtt_config(host: str, port: int) -> dict[str, object]:
    # Naming the plugins replaces amqtt's default set, which adds packet and
    # event loggers and a $SYS publisher that emits a DeprecationWarning. No
    # persistence plugin is named, so amqtt writes no files.
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
        },
    }


async def _start_amqtt(host: str, port: int) -> tuple[Broker, int]:
    """Start amqtt on host:port, or on a free port when port is 0."""
    attempts = _PORT_ATTEMPTS if port == 0 else 1
    attempt = 1
    while True:
        chosen_port = port or find_free_port(host)
        broker = Broker(_amqtt_config(host, chosen_port))
        _guard_subscription_iteration(broker)
        try:
            await broker.start()
        except BrokerError as exc:
            if _is_address_in_use(exc) and attempt < attempts:
                logger.info(
                    "Port %d was taken before amqtt could bind it, retrying (attempt %d of %d)",
                    chosen_port,
                    attempt + 1,
                    attempts,
                )
                attempt += 1
                continue
            raise TransportError(
                f"Embedded MQTT broker failed to start on {host}:{chosen_port}: {exc}"
            ) from exc
        return broker, chosen_port


@contextlib.contextmanager
def _quiet_amqtt_logging() -> Iterator[None]:
    """Set the amqtt loggers that have no level of their own to WARNING, then restore them."""
    changed = []
    for name in _AMQTT_LOGGER_NAMES:
        amqtt_logger = logging.getLogger(name)
        if amqtt_logger.level == logging.NOTSET:
            amqtt_logger.setLevel(logging.WARNING)
            changed.append(amqtt_logger)
    try:
        yield
    finally:
        for amqtt_logger in changed:
            amqtt_logger.setLevel(logging.NOTSET)


# ---------------------------------------------------------------------------
# mosquitto subprocess


def find_mosquitto() -> str | None:
    """Return the path of the mosquitto executable, or None when it is not installed.

    Looks on PATH first, then at /usr/sbin/mosquitto, where Debian installs it
    and which is often missing from a non-root PATH.
    """
    found = shutil.which("mosquitto")
    if found is not None:
        return found
    if os.access(_MOSQUITTO_FALLBACK_PATH, os.X_OK):
        return _MOSQUITTO_FALLBACK_PATH
    return None


class _AddressInUseError(TransportError):
    """The port was taken by another process, so mosquitto could not listen on it."""


class MosquittoBroker:
    """A mosquitto process listening on one loopback port.

    stop() and kill() end the process, and start() runs it again on the same
    port, so fault tests can take the broker away from connected clients and
    bring it back. A restarted broker has no retained messages or sessions,
    because persistence is off.
    """

    def __init__(
        self,
        *,
        executable: str,
        port: int,
        work_dir: Path,
        start_timeout: float,
        stop_timeout: float,
    ) -> None:
        self.executable = executable
        self.address = BrokerAddress(host=LOOPBACK_HOST, port=port)
        self.config_path = work_dir / "mosquitto.conf"
        self.log_path = work_dir / "mosquitto.log"
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._process: asyncio.subprocess.Process | None = None
        self._log_offset = 0  # where the output of the latest start begins in the log
        self._write_config()

    @property
    def running(self) -> bool:
        """Whether the mosquitto process has been started and has not exited."""
        return self._process is not None and self._process.returncode is None

    @property
    def pid(self) -> int | None:
        """Process id of the running mosquitto, or None when it is not running."""
        return self._process.pid if self._process is not None and self.running else None

    def read_log(self) -> str:
        """Return mosquitto's output from every start of this handle."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    async def start(self) -> None:
        """Start mosquitto and wait until its port accepts TCP connections.

        Raises TransportError, naming the port and quoting the end of the log,
        when mosquitto exits early or does not accept connections within
        start_timeout seconds. The process is killed before the error is raised.
        """
        if self.running:
            raise RuntimeError(f"mosquitto is already running on port {self.address.port}")
        if not _port_is_free(self.address.host, self.address.port):
            raise _AddressInUseError(
                f"Cannot start mosquitto: port {self.address.port} on {self.address.host} "
                "is in use by another process. Stop that process or choose another port."
            )

        # The child gets its own copy of the log descriptor, so ours can close.
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            try:
                self._process = await asyncio.create_subprocess_exec(
                    self.executable,
                    "-c",
                    str(self.config_path),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                )
            except OSError as exc:
                raise TransportError(
                    f"Failed to run mosquitto executable {self.executable!r}: {exc}. "
                    "Install mosquitto or pass the path of its executable."
                ) from exc

        await self._wait_until_accepting(self._process)
        logger.info(
            "mosquitto (pid %d) listening on %s:%d",
            self._process.pid,
            self.address.host,
            self.address.port,
        )

    async def stop(self) -> None:
        """Send SIGTERM and wait for mosquitto to exit, killing it after stop_timeout seconds.

        Does nothing when mosquitto is not running.
        """
        await self._end_process(signal.SIGTERM)

    async def kill(self) -> None:
        """Send SIGKILL, so clients see their connections drop without a clean close."""
        await self._end_process(signal.SIGKILL)

    def _write_config(self) -> None:
        # mosquitto's default max_queued_messages is 1000 per client
        # (mosquitto.conf(5), version 2.0). The higher limit keeps a
        # slow subscriber from losing QoS 1 messages during a burst.
        lines = [
            f"listener {self.address.port} {self.address.host}",
            "allow_anonymous true",
            "persistence false",
            "max_queued_messages 10000",
            # Without it mosquitto holds small packets for Nagle's algorithm,
            # which adds about 40 ms to a PUBACK followed by a PUBLISH.
            "set_tcp_nodelay true",
        ]
        self.config_path.write_text("\n".join(lines) + "\n")

    async def _wait_until_accepting(self, process: asyncio.subprocess.Process) -> None:
        """Poll the port with a TCP connect until it succeeds, mosquitto exits, or time runs out.

        NOTE: a process that starts listening on the port after start() found
        it free would pass this check while mosquitto fails to bind.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        delay = 0.005
        while True:
            if process.returncode is not None:
                await self._raise_start_failure(
                    f"mosquitto exited with code {process.returncode} before accepting "
                    f"connections on {self.address.host}:{self.address.port}"
                )

            remaining = deadline - loop.time()
            if remaining <= 0:
                await self._raise_start_failure(
                    f"Timed out after {self.start_timeout:g} s waiting for mosquitto to accept "
                    f"connections on {self.address.host}:{self.address.port}"
                )

            if await _accepts_connection(self.address, timeout=remaining):
                return
            await asyncio.sleep(min(delay, max(remaining, 0.0)))
            delay = min(delay * 2, 0.1)

    async def _raise_start_failure(self, reason: str) -> NoReturn:
        await self._end_process(signal.SIGKILL)
        # Only this start's output, so that an earlier failure is not reported again.
        with self.log_path.open("rb") as log_file:
            log_file.seek(self._log_offset)
            log = log_file.read().decode(errors="replace")
        error_type = _AddressInUseError if "Address already in use" in log else TransportError
        tail = log[-_LOG_TAIL_CHARS:] or "(empty)"
        raise error_type(f"{reason}. Log {self.log_path}:\n{tail}")

    async def _end_process(self, signal_number: signal.Signals) -> None:
        process = self._process
        self._process = None
        if process is None or process.returncode is not None:
            return

        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal_number)
        try:
            await asyncio.wait_for(process.wait(), self.stop_timeout)
        except TimeoutError:
            logger.warning(
                "mosquitto (pid %d) did not exit within %g s of %s, killing it",
                process.pid,
                self.stop_timeout,
                signal_number.name,
            )
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        logger.info("mosquitto (pid %d) on port %d exited", process.pid, self.address.port)


def _port_is_free(host: str, port: int) -> bool:
    # SO_REUSEADDR, as mosquitto sets it, so that connections of a previous
    # run in TIME_WAIT do not count as the port being in use.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


async def _accepts_connection(address: BrokerAddress, *, timeout: float) -> bool:
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(address.host, address.port), timeout
        )
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


@contextlib.asynccontextmanager
async def mosquitto_broker(
    port: int = 0,
    executable: str | None = None,
    *,
    start_timeout: float = 10.0,
    stop_timeout: float = 10.0,
) -> AsyncIterator[MosquittoBroker]:
    """Run mosquitto on 127.0.0.1 and yield its handle, stopping it with SIGTERM on exit.

    Port 0 picks a free port. The config and log files live in a temporary
    directory that is removed on exit. executable defaults to find_mosquitto().

    Raises ConfigError when mosquitto is not installed and TransportError
    when it fails to start.
    """
    if executable is None:
        executable = find_mosquitto()
    if executable is None:
        raise ConfigError(
            f"mosquitto not found on PATH or at {_MOSQUITTO_FALLBACK_PATH}. "
            "Install it (apt-get install mosquitto) or pass its path as executable."
        )

    with tempfile.TemporaryDirectory(prefix="gradchain-mosquitto-") as work_dir:
        broker = await _start_mosquitto(
            executable, port, Path(work_dir), start_timeout, stop_timeout
        )
        try:
            yield broker
        finally:
            await broker.stop()


async def _start_mosquitto(
    executable: str, port: int, work_dir: Path, start_timeout: float, stop_timeout: float
) -> MosquittoBroker:
    """Start mosquitto on port, or on a free port when port is 0."""
    attempts = _PORT_ATTEMPTS if port == 0 else 1
    attempt = 1
    while True:
        broker = MosquittoBroker(
            executable=executable,
            port=port or find_free_port(LOOPBACK_HOST),
            work_dir=work_dir,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
        )
        try:
            await broker.start()
        except _AddressInUseError:
            if attempt >= attempts:
                raise
            logger.info(
                "Port %d was taken before mosquitto could bind it, retrying", broker.address.port
            )
            attempt += 1
            continue
        return broker
