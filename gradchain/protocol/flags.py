"""The number of rows a provider flagged after training, which it sends to the learner.

When the job's model flags rows (a linear regression with an outlier
setting, see :class:`gradchain.models.interface.SupportsRowFlags`), every
provider counts its flagged rows with the final theta of the learner's
JobDone and publishes a :class:`FlagCount` on its own flags topic. The count
is the only value about the rows that leaves the provider: the rows, their
residuals, the threshold and the row count stay on it.

The payload uses the wire format of :mod:`.wire` (a msgpack map with ``v``
and ``type``), on a topic of its own so that the round state machines never
see it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from ..errors import ProtocolError
from .messages import _check_id, _check_run
from .topics import PREFIX
from .wire import WIRE_VERSION

FLAG_COUNT_TYPE = "flag_count"

#: Upper bound of a FlagCount payload, in bytes; a real one is under 200.
MAX_FLAG_COUNT_BYTES = 1024

_FIELDS = {"v", "type", "job", "run", "node", "flagged"}


def flags_topic(job: str, node_id: str) -> str:
    """Topic on which provider ``node_id`` publishes its FlagCount."""
    return f"{PREFIX}/{job}/flags/{node_id}"


def flags_wildcard(job: str) -> str:
    """Return the wildcard of every provider's flags topic, which the learner subscribes to."""
    return f"{PREFIX}/{job}/flags/+"


@dataclass(frozen=True, kw_only=True)
class FlagCount:
    """Provider ``node`` flagged ``flagged`` of its rows with the final theta of run ``run``."""

    job: str
    run: str
    node: str
    flagged: int

    def __post_init__(self) -> None:
        _check_id(self.job, "job id")
        _check_run(self.run)
        _check_id(self.node, "node id")
        if not isinstance(self.flagged, int) or isinstance(self.flagged, bool) or self.flagged < 0:
            raise ProtocolError(f"invalid flagged count {self.flagged!r}: expected an integer >= 0")


def encode_flag_count(message: FlagCount) -> bytes:
    """Serialise ``message`` as a msgpack map."""
    body = {
        "v": WIRE_VERSION,
        "type": FLAG_COUNT_TYPE,
        "job": message.job,
        "run": message.run,
        "node": message.node,
        "flagged": message.flagged,
    }
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return packed


def decode_flag_count(data: bytes) -> FlagCount:
    """Parse and validate one FlagCount payload; raise ProtocolError on anything else."""
    if len(data) > MAX_FLAG_COUNT_BYTES:
        raise ProtocolError(
            f"flag count payload of {len(data)} bytes exceeds the limit of "
            f"{MAX_FLAG_COUNT_BYTES} bytes"
        )
    try:
        body: Any = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (msgpack.UnpackException, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"invalid msgpack payload: {exc}") from exc
    if not isinstance(body, dict) or body.get("type") != FLAG_COUNT_TYPE:
        raise ProtocolError(f"invalid payload: expected a map with type {FLAG_COUNT_TYPE!r}")
    version = body.get("v")
    if type(version) is not int or version != WIRE_VERSION:
        raise ProtocolError(f"unsupported wire format version {version!r}: expected {WIRE_VERSION}")
    if set(body) != _FIELDS:
        raise ProtocolError(
            f"invalid flag count: expected the fields {sorted(_FIELDS)}, got {sorted(body)}"
        )
    return FlagCount(job=body["job"], run=body["run"], node=body["node"], flagged=body["flagged"])
