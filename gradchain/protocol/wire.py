"""The wire format: one msgpack map per MQTT payload.

Every payload is a map with ``"v"`` (the format version, currently 1) and
``"type"``. Big integers (the public modulus, ciphertexts) travel as
big-endian byte strings because msgpack integers stop at 64 bits; ciphertexts
are padded to one fixed length, the byte length of n², so their size reveals
nothing about their value.

:func:`decode` trusts nothing: it bounds sizes before unpacking, checks every
field's type and lets the message classes check values. Every failure raises
:class:`~gradchain.errors.ProtocolError`.

In a topology with a ``[signing]`` table every payload of this format travels
as the body of a signed version 2 envelope (see :mod:`.signing`), which the
receiving daemon verifies before it calls :func:`decode` on the body.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack

from ..errors import ProtocolError
from .messages import Ack, Contribution, JobDone, Liveness, Message, RoundStart, Status

WIRE_VERSION = 1

#: Default upper bound for one payload, in bytes.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

#: Maximum ciphertext length accepted, in bytes (n² of a 8192-bit modulus).
MAX_CIPHERTEXT_BYTES = 2048


def encode(message: Message, *, ciphertext_bytes: int | None = None) -> bytes:
    """Serialise ``message``.

    ``ciphertext_bytes`` fixes the length of every ciphertext of a
    :class:`Contribution` (use ``PublicKey.ciphertext_bytes``). Without it the
    length of the longest ciphertext in the message is used, which is only
    right for tests.
    """
    body: dict[str, Any]
    if isinstance(message, RoundStart):
        body = {
            "type": "round_start",
            "job": message.job,
            "run": message.run,
            "round": message.round,
            "theta": list(message.theta),
            "public_key": _int_to_bytes(message.public_key),
            "timeout": message.timeout,
        }
        if message.participants is not None:
            body["participants"] = list(message.participants)
        if message.public_key_hs is not None:
            body["public_key_hs"] = _int_to_bytes(message.public_key_hs)
        if message.settings is not None:
            body["settings"] = message.settings
    elif isinstance(message, Contribution):
        width = ciphertext_bytes
        if width is None:
            width = max((c.bit_length() + 7) // 8 for c in message.ciphertexts)
        try:
            ciphertexts = [c.to_bytes(width, "big") for c in message.ciphertexts]
        except OverflowError as exc:
            raise ProtocolError(
                f"a ciphertext does not fit in {width} bytes; is it from another key?",
                sender=message.sender,
                round=message.round,
            ) from exc
        body = {
            "type": "contribution",
            "job": message.job,
            "run": message.run,
            "round": message.round,
            "sender": message.sender,
            "contributors": list(message.contributors),
            "ciphertexts": ciphertexts,
        }
    elif isinstance(message, Ack):
        body = {
            "type": "ack",
            "job": message.job,
            "run": message.run,
            "round": message.round,
            "sender": message.sender,
            "of": message.of,
        }
    elif isinstance(message, JobDone):
        body = {
            "type": "job_done",
            "job": message.job,
            "run": message.run,
            "round": message.round,
            "theta": list(message.theta),
            "reason": message.reason,
        }
    elif isinstance(message, Status):
        body = {
            "type": "status",
            "job": message.job,
            "node": message.node,
            "state": message.state.value,
            "instance": message.instance,
        }
    else:
        raise TypeError(f"cannot encode {type(message).__name__}")
    body["v"] = WIRE_VERSION
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return packed


def decode(data: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> Message:
    """Parse and validate one payload; raise ProtocolError on anything unexpected."""
    if not isinstance(data, bytes | bytearray):
        raise ProtocolError(f"invalid payload: expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise ProtocolError(f"payload of {len(data)} bytes exceeds the limit of {max_bytes} bytes")
    try:
        body = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
        )
    except (msgpack.UnpackException, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"invalid msgpack payload: {exc}") from exc
    if not isinstance(body, dict):
        raise ProtocolError(f"invalid payload: expected a map, got {type(body).__name__}")
    version = body.get("v")
    if type(version) is not int or version != WIRE_VERSION:
        raise ProtocolError(
            f"unsupported wire format version {version!r}: this node speaks version {WIRE_VERSION}"
        )
    kind = body.get("type")
    parser = _PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None or not isinstance(kind, str):
        raise ProtocolError(f"unknown message type {kind!r}: expected one of {sorted(_PARSERS)}")
    required = _FIELDS[kind] | {"v", "type"}
    allowed = required | _OPTIONAL_FIELDS.get(kind, set())
    if not required <= set(body) <= allowed:
        missing = sorted(required - set(body))
        unknown = sorted(set(body) - allowed)
        raise ProtocolError(
            f"invalid {kind} message: missing fields {missing}, unknown fields {unknown}"
        )
    return parser(body)


def _int_to_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def _field(body: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = body[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        expected = (
            kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        )
        raise ProtocolError(
            f"invalid field {name!r}: expected {expected}, got {type(value).__name__}"
        )
    return value


def _float_list(body: dict[str, Any], name: str) -> tuple[float, ...]:
    values = _field(body, name, list)
    # msgpack returns ints for floats that a sender packed as ints; accept both.
    for value in values:
        if not isinstance(value, float | int) or isinstance(value, bool):
            raise ProtocolError(f"invalid field {name!r}: expected a list of numbers")
    return tuple(float(value) for value in values)


def _parse_round_start(body: dict[str, Any]) -> RoundStart:
    public_key = _field(body, "public_key", bytes)
    if len(public_key) > MAX_CIPHERTEXT_BYTES:
        raise ProtocolError(f"invalid public_key: {len(public_key)} bytes is too long")
    participants = None
    if "participants" in body:
        participants = _string_list(body, "participants")
    public_key_hs = None
    if "public_key_hs" in body:
        hs_bytes = _field(body, "public_key_hs", bytes)
        if len(hs_bytes) > MAX_CIPHERTEXT_BYTES:
            raise ProtocolError(f"invalid public_key_hs: {len(hs_bytes)} bytes is too long")
        public_key_hs = int.from_bytes(hs_bytes, "big")
    return RoundStart(
        job=_field(body, "job", str),
        run=_field(body, "run", str),
        round=_field(body, "round", int),
        theta=_float_list(body, "theta"),
        public_key=int.from_bytes(public_key, "big"),
        timeout=float(_field(body, "timeout", (float, int))),
        participants=participants,
        public_key_hs=public_key_hs,
        settings=_field(body, "settings", str) if "settings" in body else None,
    )


def _string_list(body: dict[str, Any], name: str) -> tuple[str, ...]:
    values = _field(body, name, list)
    if not all(isinstance(item, str) for item in values):
        raise ProtocolError(f"invalid field {name!r}: expected a list of strings")
    return tuple(values)


def _parse_contribution(body: dict[str, Any]) -> Contribution:
    contributors = _field(body, "contributors", list)
    if not all(isinstance(item, str) for item in contributors):
        raise ProtocolError("invalid field 'contributors': expected a list of strings")
    raw = _field(body, "ciphertexts", list)
    if not raw:
        raise ProtocolError("invalid field 'ciphertexts': the list is empty")
    width = len(raw[0]) if isinstance(raw[0], bytes) else -1
    if not 0 < width <= MAX_CIPHERTEXT_BYTES:
        raise ProtocolError(
            "invalid field 'ciphertexts': expected byte strings of one fixed length"
        )
    for item in raw:
        if not isinstance(item, bytes) or len(item) != width:
            raise ProtocolError(
                "invalid field 'ciphertexts': expected byte strings of one fixed length"
            )
    return Contribution(
        job=_field(body, "job", str),
        run=_field(body, "run", str),
        round=_field(body, "round", int),
        sender=_field(body, "sender", str),
        contributors=tuple(contributors),
        ciphertexts=tuple(int.from_bytes(item, "big") for item in raw),
    )


def _parse_ack(body: dict[str, Any]) -> Ack:
    return Ack(
        job=_field(body, "job", str),
        run=_field(body, "run", str),
        round=_field(body, "round", int),
        sender=_field(body, "sender", str),
        of=_field(body, "of", str),
    )


def _parse_job_done(body: dict[str, Any]) -> JobDone:
    return JobDone(
        job=_field(body, "job", str),
        run=_field(body, "run", str),
        round=_field(body, "round", int),
        theta=_float_list(body, "theta"),
        reason=_field(body, "reason", str),
    )


def _parse_status(body: dict[str, Any]) -> Status:
    state = _field(body, "state", str)
    try:
        node_state = Liveness(state)
    except ValueError as exc:
        raise ProtocolError(f"invalid field 'state': {state!r} is not online or offline") from exc
    return Status(
        job=_field(body, "job", str),
        node=_field(body, "node", str),
        state=node_state,
        instance=_field(body, "instance", str),
    )


_PARSERS: dict[str, Callable[[dict[str, Any]], Message]] = {
    "round_start": _parse_round_start,
    "contribution": _parse_contribution,
    "ack": _parse_ack,
    "job_done": _parse_job_done,
    "status": _parse_status,
}

_FIELDS: dict[str, set[str]] = {
    "round_start": {"job", "run", "round", "theta", "public_key", "timeout"},
    "contribution": {"job", "run", "round", "sender", "contributors", "ciphertexts"},
    "ack": {"job", "run", "round", "sender", "of"},
    "job_done": {"job", "run", "round", "theta", "reason"},
    "status": {"job", "node", "state", "instance"},
}

#: Fields a message type may leave out. A RoundStart without ``participants``
#: asks every provider to contribute. One without ``public_key_hs`` carries a
#: plain Paillier key instead of a DJN key.
_OPTIONAL_FIELDS: dict[str, set[str]] = {
    "round_start": {"participants", "public_key_hs", "settings"},
}
