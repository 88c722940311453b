"""Exceptions raised by gradchain.

Every error the package raises on purpose derives from :class:`GradchainError`,
so a caller can catch the whole family with one clause::

    GradchainError
    ├── ConfigError          invalid settings or command-line values
    │   ├── SettingsFileError      a TOML file that fails validation
    │   │   ├── TopologyError      a topology file
    │   │   └── FaultPlanError     a fault plan file
    │   └── DuplicateNodeError     a node id that another process already runs
    ├── CryptoError          key files, ciphertexts, keys that do not match
    │   └── EncodingOverflowError   a decoded total outside the encodable range
    ├── ProtocolError        a message that is malformed, hostile or out of place
    │   ├── StaleMessageError      for another job or run, or a closed round
    │   ├── DuplicateMessageError  already counted this round
    │   ├── SignatureError         unsigned where required, or a signature that fails
    │   └── SealingError           unsealed where required, or a sealed payload that fails
    └── TransportError       the MQTT broker or the link to it failed

Errors raised by third-party libraries (aiomqtt, msgpack, OSError) are
translated into these at the boundary with ``raise ... from exc`` so the
original cause stays attached.
"""

from __future__ import annotations


class GradchainError(Exception):
    """Root of every exception gradchain raises on purpose."""


class ConfigError(GradchainError):
    """A setting, command-line value or file has an invalid value."""


class SettingsFileError(ConfigError):
    """A settings file is invalid.

    The message names the file, the node id (when one is involved), the key
    that is wrong and how to fix it.
    """

    def __init__(
        self,
        reason: str,
        *,
        path: str | None = None,
        node_id: str | None = None,
        key: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.reason = reason
        self.path = path
        self.node_id = node_id
        self.key = key
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.path is not None:
            where.append(self.path)
        if self.node_id is not None:
            where.append(f"node {self.node_id!r}")
        if self.key is not None:
            where.append(f"key {self.key!r}")
        text = f"{': '.join(where)}: {self.reason}" if where else self.reason
        if self.fix:
            text += f" ({self.fix})"
        return text


class TopologyError(SettingsFileError):
    """A topology file is invalid."""


class FaultPlanError(SettingsFileError):
    """A fault plan file is invalid."""


class DuplicateNodeError(ConfigError):
    """Another process already runs this node id in this job, so this one must not start."""


class CryptoError(GradchainError):
    """A key, key file or ciphertext is invalid or does not match."""


class EncodingOverflowError(CryptoError):
    """A decrypted total lies outside the range the encoding can represent.

    Raised instead of returning a wrong number. ``round`` and ``slot`` locate
    the value when they are known.
    """

    def __init__(self, reason: str, *, round: int | None = None, slot: int | None = None) -> None:
        self.reason = reason
        self.round = round
        self.slot = slot
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.round is not None:
            where.append(f"round {self.round}")
        if self.slot is not None:
            where.append(f"slot {self.slot}")
        return f"{', '.join(where)}: {self.reason}" if where else self.reason


class ProtocolError(GradchainError):
    """A message is malformed, hostile, or does not fit the current round.

    Nodes log these and drop the message; they never add it to a sum.
    """

    def __init__(self, reason: str, *, sender: str | None = None, round: int | None = None) -> None:
        self.reason = reason
        self.sender = sender
        self.round = round
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.sender is not None:
            where.append(f"from {self.sender!r}")
        if self.round is not None:
            where.append(f"round {self.round}")
        return f"{self.reason} ({', '.join(where)})" if where else self.reason


class TransportError(GradchainError):
    """The MQTT broker could not be reached, or a publish failed."""


class StaleMessageError(ProtocolError):
    """A well-formed message for another job, another run or a round already closed."""


class SettingsMismatchError(ProtocolError):
    """The learner runs the job with other topology settings than this node's file."""


class DuplicateMessageError(ProtocolError):
    """A message already received this round; MQTT QoS 1 delivers at least once."""


class SignatureError(ProtocolError):
    """A payload is unsigned where signatures are required, or its signature does not verify.

    Raised for an unknown signer, an invalid signature and a signer other than
    the message's author. Nodes log these and drop the message.
    """


class SealingError(ProtocolError):
    """An inbox payload is unsealed where sealing is required, or a sealed payload fails to open.

    Raised for a payload sealed to another participant, job or round, an
    altered ciphertext, and an envelope whose readable fields do not match
    the message inside. Nodes log these and drop the message.
    """
