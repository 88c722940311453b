"""Load and create the signing and sealing keys that a topology's ``[signing]`` table names.

The daemons build their :class:`~gradchain.protocol.signing.MessageSigning`
with :func:`load_message_signing`. ``gradchain keys``, ``gradchain run``
and the benchmark runner create missing key pairs with
:func:`create_signing_keys`.
"""

from __future__ import annotations

import functools
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ..crypto.signkeys import (
    create_sealing_key,
    create_signing_key,
    load_seal_public_key,
    load_sealing_key,
    load_signing_key,
    load_verify_key,
    private_key_path,
    public_key_path,
    seal_private_key_path,
    seal_public_key_path,
)
from ..errors import ConfigError
from ..protocol.sealing import InboxSealing
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


def _load_seal_public_key_cached(path: Path) -> X25519PublicKey:
    status = path.stat()
    return _load_seal_public_key_version(path, status.st_mtime_ns, status.st_size)


@functools.lru_cache(maxsize=4096)
def _load_seal_public_key_version(path: Path, mtime_ns: int, size: int) -> X25519PublicKey:
    return load_seal_public_key(path)


def participants(topology: Topology) -> tuple[str, ...]:
    """Return the ids that sign messages: the learner first, then every node in file order."""
    return (topology.learner.id, *topology.nodes)


def create_signing_keys(topology: Topology) -> list[str]:
    """Create the signing and, when sealing is on, sealing key pairs of every participant.

    Only missing pairs are created. Returns the ids for which at least one
    pair was created. Does nothing for a topology without a ``[signing]``
    table.
    """
    settings = topology.signing
    if settings is None:
        return []
    created = []
    for participant in participants(topology):
        signing_created = create_signing_key(settings.keys, participant)
        sealing_created = settings.seal and create_sealing_key(settings.keys, participant)
        if signing_created or sealing_created:
            created.append(participant)
    return created


def load_message_signing(topology: Topology, own_id: str, log: NodeLogger) -> MessageSigning:
    """Load the own signing key and every public key that ``topology`` needs for ``own_id``.

    Without a ``[signing]`` table the result neither signs nor verifies.
    With ``required = true`` a missing file raises ConfigError naming it.
    With ``required = false`` a missing file is logged as a warning: a
    missing own key sends unsigned messages, and a missing public key
    rejects the signed messages of that participant. With ``seal = true``
    the same holds for the sealing key files: a missing own key rejects
    sealed payloads, and a missing public key sends that recipient's inbox
    messages unsealed.
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

    sealing = None
    if settings.seal:
        sealing = _load_inbox_sealing(topology, own_id, missing)

    if missing:
        files = ", ".join(str(path) for path in missing)
        fix = (
            f"run `gradchain keys {topology.path}` on the machine that creates the keys, then "
            f"copy every *.sign.pub and *.seal.pub file, {own_id}.sign.key and "
            f"{own_id}.seal.key into {settings.keys}"
        )
        if settings.required:
            raise ConfigError(f"missing signing key files: {files}; {fix}")
        log.warning(
            "missing signing key files %s, so some messages travel or arrive unsigned; %s",
            files,
            fix,
        )
    log.info(
        "message signing %s: %s, %d public keys; inbox sealing %s",
        "required" if settings.required else "optional",
        "signing as " + own_id if private_key is not None else "NOT signing",
        len(public_keys),
        "off" if sealing is None else f"on, {len(sealing.public_keys)} recipient keys",
    )
    return MessageSigning(
        own_id=own_id,
        learner_id=topology.learner.id,
        private_key=private_key,
        public_keys=public_keys,
        required=settings.required,
        sealing=sealing,
    )


def _load_inbox_sealing(topology: Topology, own_id: str, missing: list[Path]) -> InboxSealing:
    """Load the own sealing key and every recipient's sealing public key; append missing files."""
    assert topology.signing is not None
    folder = topology.signing.keys
    private_path = seal_private_key_path(folder, own_id)
    private_key: X25519PrivateKey | None = None
    if private_path.exists():
        private_key = load_sealing_key(private_path)
    else:
        missing.append(private_path)

    public_keys: dict[str, X25519PublicKey] = {}
    for participant in participants(topology):
        path = seal_public_key_path(folder, participant)
        if path.exists():
            public_keys[participant] = _load_seal_public_key_cached(path)
        else:
            missing.append(path)
    return InboxSealing(
        job=topology.job.id,
        own_id=own_id,
        private_key=private_key,
        public_keys=public_keys,
        required=topology.signing.required,
    )
