"""Load and create the signing keys that a topology's ``[signing]`` table names.

The daemons build their :class:`~gradchain.protocol.signing.MessageSigning`
with :func:`load_message_signing`. ``gradchain keys`` and ``gradchain run``
create missing key pairs with :func:`create_signing_keys`.
"""

from __future__ import annotations

import functools
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..crypto.signkeys import (
    create_signing_key,
    load_signing_key,
    load_verify_key,
    private_key_path,
    public_key_path,
)
from ..errors import ConfigError
from ..protocol.signing import MessageSigning, unsigned
from ..topology import Topology
from .common import NodeLogger


def _load_verify_key_cached(path: Path) -> Ed25519PublicKey:
    """Load a public key file once per process and file version.

    A swarm host runs hundreds of daemons in one process, and each needs the
    public key of every participant of the job.
    """
    status = path.stat()
    return _load_verify_key_version(path, status.st_mtime_ns, status.st_size)


@functools.lru_cache(maxsize=4096)
def _load_verify_key_version(path: Path, mtime_ns: int, size: int) -> Ed25519PublicKey:
    return load_verify_key(path)


def participants(topology: Topology) -> tuple[str, ...]:
    """Return the ids that sign messages: the learner first, then every node in file order."""
    return (topology.learner.id, *topology.nodes)


def create_signing_keys(topology: Topology) -> list[str]:
    """Create the signing key pair of every participant that has no private key file yet.

    Returns the ids whose pairs were created. Does nothing for a topology
    without a ``[signing]`` table.
    """
    if topology.signing is None:
        return []
    folder = topology.signing.keys
    return [
        participant
        for participant in participants(topology)
        if create_signing_key(folder, participant)
    ]


def load_message_signing(topology: Topology, own_id: str, log: NodeLogger) -> MessageSigning:
    """Load the own signing key and every public key that ``topology`` needs for ``own_id``.

    Without a ``[signing]`` table the result neither signs nor verifies.
    With ``required = true`` a missing file raises ConfigError naming it.
    With ``required = false`` a missing file is logged as a warning: a
    missing own key sends unsigned messages, and a missing public key
    rejects the signed messages of that participant.
    """
    settings = topology.signing
    if settings is None:
        return unsigned(own_id, topology.learner.id)

    missing: list[Path] = []
    private_path = private_key_path(settings.keys, own_id)
    private_key: Ed25519PrivateKey | None = None
    if private_path.exists():
        private_key = load_signing_key(private_path)
    else:
        missing.append(private_path)

    public_keys: dict[str, Ed25519PublicKey] = {}
    for participant in participants(topology):
        path = public_key_path(settings.keys, participant)
        if path.exists():
            public_keys[participant] = _load_verify_key_cached(path)
        else:
            missing.append(path)

    if missing:
        files = ", ".join(str(path) for path in missing)
        fix = (
            f"run `gradchain keys {topology.path}` on the machine that creates the keys, then "
            f"copy every *.sign.pub file and {own_id}.sign.key into {settings.keys}"
        )
        if settings.required:
            raise ConfigError(f"missing signing key files: {files}; {fix}")
        log.warning(
            "missing signing key files %s, so some messages travel or arrive unsigned; %s",
            files,
            fix,
        )
    log.info(
        "message signing %s: %s, %d public keys",
        "required" if settings.required else "optional",
        "signing as " + own_id if private_key is not None else "NOT signing",
        len(public_keys),
    )
    return MessageSigning(
        own_id=own_id,
        learner_id=topology.learner.id,
        private_key=private_key,
        public_keys=public_keys,
        required=settings.required,
    )
