"""Create every key file of a deployment (``gradchain keys``) and list where each file goes."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..crypto.signkeys import (
    private_key_path,
    public_key_path,
    seal_private_key_path,
    seal_public_key_path,
)
from ..topology import Topology
from .common import NodeLogger
from .learner import load_or_create_keys
from .signatures import create_signing_keys, participants

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CreatedKeys:
    """Key files that :func:`ensure_deployment_keys` created, as opposed to found."""

    learner_key: bool
    signing_keys: tuple[str, ...]


def ensure_deployment_keys(topology: Topology) -> CreatedKeys:
    """Create the learner's Paillier key pair and the missing signing and sealing key pairs."""
    learner_key_existed = topology.learner.private_key.exists()
    load_or_create_keys(topology, NodeLogger(logger, topology.learner.id))
    return CreatedKeys(
        learner_key=not learner_key_existed,
        signing_keys=tuple(create_signing_keys(topology)),
    )


def describe_key_files(topology: Topology, created: CreatedKeys) -> str:
    """Return the text that lists the key files and the machines they must be copied to."""
    learner = topology.learner
    state = "created" if created.learner_key else "found"
    lines = [
        f"learner Paillier key pair ({state}): {learner.private_key} and {learner.public_key}",
    ]
    settings = topology.signing
    if settings is None:
        lines += [
            "this topology has no [signing] table, so messages travel unsigned; "
            "add one to sign them",
            "",
            f"copy to every machine: {learner.public_key}",
            f"keep on the learner's machine only: {learner.private_key}",
        ]
        return "\n".join(lines)

    ids = participants(topology)
    pairs = "signing and sealing key pairs" if settings.seal else "signing key pairs"
    lines.append(
        f"{pairs} in {settings.keys}: {len(created.signing_keys)} created, "
        f"{len(ids) - len(created.signing_keys)} found"
        + (" (required = true)" if settings.required else " (required = false)")
        + ("" if settings.seal else "; seal = false, so inbox messages travel unsealed")
    )
    public_files = [str(learner.public_key)]
    public_files += [str(public_key_path(settings.keys, participant)) for participant in ids]
    if settings.seal:
        public_files += [
            str(seal_public_key_path(settings.keys, participant)) for participant in ids
        ]
    lines += [
        "",
        "copy to every machine (the learner's and each node's), into the same paths relative "
        "to the topology file:",
        *(f"  {path}" for path in public_files),
        "",
        "copy each private key only to its own machine, with mode 0600:",
        f"  learner {learner.id}: {learner.private_key}",
        f"  learner {learner.id}: {private_key_path(settings.keys, learner.id)}",
    ]
    if settings.seal:
        lines.append(f"  learner {learner.id}: {seal_private_key_path(settings.keys, learner.id)}")
    for node_id in topology.nodes:
        lines.append(f"  node {node_id}: {private_key_path(settings.keys, node_id)}")
        if settings.seal:
            lines.append(f"  node {node_id}: {seal_private_key_path(settings.keys, node_id)}")
    return "\n".join(lines)
