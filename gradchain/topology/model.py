"""Settings and node graph of one training job, as read from a topology file.

A topology is a forest of nodes whose edges all lead to the learner. Each node
has one next hop, except a provider that splits its contribution into
portions: it sends one portion to each of its next hops, and the paths of the
portions share no node but the learner. Providers have a data file and add
their encrypted contribution to the running sum. Nodes without a data file
are pure aggregators.
The loader in :mod:`gradchain.topology.load` rejects graphs that break these
rules, so the methods here can assume a valid graph.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

from gradchain.randomisers import DEFAULT_RANDOMISER, Randomiser, get_randomiser

MODELS = ("logistic", "linear", "pca", "factorisation", "multilabel-logistic")
"""Values accepted for ``job.model``."""

SCHEDULES = ("constant", "inverse_sqrt", "inverse_square")
"""Values accepted for ``job.schedule``: eta0, eta0 / sqrt(k) and eta0 / k**2 in round k."""


@dataclass(frozen=True, kw_only=True)
class JobSettings:
    """Training settings from the ``[job]`` table."""

    id: str
    features: int
    model: str = "logistic"
    rounds: int = 200
    tolerance: float = 1e-6
    learning_rate: float = 0.05
    schedule: str = "constant"
    l2: float = 0.001
    min_contributors: int = 3
    randomise: bool = True
    #: How providers randomise their gradients; one of :data:`gradchain.randomisers.RANDOMISERS`.
    randomiser: str = DEFAULT_RANDOMISER
    #: Whether the uniform randomiser sends the sampling ratios the learner normalises with.
    uniform_normalise: bool = True
    round_timeout: float = 120.0
    #: Fraction of the providers the learner samples to contribute in each round.
    sample_fraction: float = 1.0
    #: Seed of the per-round sample, so that runs with the same seed sample alike.
    seed: int = 0


@dataclass(frozen=True, kw_only=True)
class CryptoSettings:
    """Paillier key, encoding and obfuscator settings from the ``[crypto]`` table.

    ``key_bits`` must be even. Key sizes below 2048 bits are accepted down to
    64 bits so that tests run fast, but they give no security and are for
    tests only.

    ``packing`` puts many fixed-point values in one plaintext
    (:class:`gradchain.crypto.PackedEncoding`). ``value_bits`` is the width
    of one packed value, and None means the smallest width that holds
    ``2 * clip * 2**frac_bits``. ``djn`` makes the learner generate a
    Damgård-Jurik-Nielsen key, whose public part carries ``hs``.
    ``obfuscator_bits`` is the length of the DJN exponent ``r``, and None means
    ``ceil(key_bits / 2)``. ``pool_size`` is the number of obfuscators a
    provider precomputes, and None means room for two contributions.

    ``encryption = false`` is for benchmarks only and never for real data:
    providers then send each value as the Paillier ciphertext ``1 + m*n``
    without an obfuscator, which anyone can read as ``(c - 1) / n``, and the
    learner reads totals that way instead of decrypting. Loading rejects it
    unless ``insecure`` is true as well.
    """

    key_bits: int = 2048
    frac_bits: int = 32
    clip: float = 2.0**20
    packing: bool = True
    value_bits: int | None = None
    djn: bool = True
    obfuscator_bits: int | None = None
    pool_size: int | None = None
    encryption: bool = True
    insecure: bool = False


@dataclass(frozen=True, kw_only=True)
class SigningSettings:
    """The ``[signing]`` table: Ed25519 signatures on every message.

    ``keys`` is the folder of the ``ID.sign.key`` and ``ID.sign.pub`` files
    (see :mod:`gradchain.crypto.signkeys`). ``required`` makes every
    participant reject unsigned payloads. With ``required`` false a
    participant signs when it has its own key and rejects bad signatures, but
    accepts unsigned payloads, which only helps while moving a deployment to
    signed messages. ``seal`` encrypts every Contribution and Ack to the
    X25519 key of its recipient (``ID.seal.key`` and ``ID.seal.pub`` in
    ``keys``, see :mod:`gradchain.protocol.sealing`). With ``required`` true,
    ``seal`` also makes every participant reject unsealed Contributions and Acks.
    """

    keys: Path
    required: bool = True
    seal: bool = True


@dataclass(frozen=True, kw_only=True)
class LearnerSpec:
    """The learner: its id, the paths of its key files and its optional held-out data."""

    id: str
    public_key: Path
    private_key: Path
    eval_data: Path | None = None


@dataclass(frozen=True, kw_only=True)
class NodeSpec:
    """One ``[[nodes]]`` entry. ``data`` is None for a pure aggregator."""

    id: str
    data: Path | None
    next: tuple[str, ...]

    @property
    def is_provider(self) -> bool:
        """Whether the node has a data file and contributes a gradient."""
        return self.data is not None

    @property
    def portions(self) -> int:
        """Number of portions the node splits its contribution into: one per next hop."""
        return len(self.next)


@dataclass(frozen=True, kw_only=True)
class Topology:
    """A validated topology file.

    ``nodes`` keeps the file order. Paths in the specs are absolute, resolved
    against the folder of ``path``.
    """

    path: Path
    job: JobSettings
    crypto: CryptoSettings
    learner: LearnerSpec
    nodes: Mapping[str, NodeSpec]
    model_settings: Mapping[str, int | float] = field(default_factory=dict)
    """The ``[model]`` table, such as ``components`` for PCA. Absent keys take their defaults."""
    signing: SigningSettings | None = None
    """The ``[signing]`` table, or None when the file has none and messages travel unsigned."""

    @cached_property
    def settings_digest(self) -> str:
        """Return 16 hex digits of SHA-256 over every setting that nodes and the learner must share.

        The digest covers the ``[job]``, ``[crypto]`` and ``[model]`` tables,
        the learner id, and each node's id, next hops and whether it has
        data. File paths are left out, because each machine may keep its
        data and key files elsewhere.
        """
        shared = {
            "job": asdict(self.job),
            "crypto": asdict(self.crypto),
            "model": dict(sorted(self.model_settings.items())),
            "learner": self.learner.id,
            "nodes": [[node.id, list(node.next), node.is_provider] for node in self.nodes.values()],
        }
        text = json.dumps(shared, sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    @property
    def providers(self) -> tuple[str, ...]:
        """Ids of the nodes that have a data file, in file order."""
        return tuple(node.id for node in self.nodes.values() if node.is_provider)

    @property
    def randomiser(self) -> Randomiser:
        """The job's randomiser, with the additive masks bounded by ``crypto.clip``."""
        return get_randomiser(
            self.job.randomiser,
            clip=self.crypto.clip,
            uniform_normalise=self.job.uniform_normalise,
        )

    def inputs_of(self, node_id: str) -> frozenset[str]:
        """Return the ids of the nodes whose next hop is ``node_id``.

        Accepts the learner id too. Raises KeyError for an unknown id.
        """
        self._require_known(node_id)
        return self._routes.inputs.get(node_id, frozenset())

    def successor_of(self, node_id: str) -> str:
        """Return the next hop of a node, the one of its first portion for a split provider.

        Raises KeyError for the learner id or an unknown id.
        """
        if node_id not in self.nodes:
            raise KeyError(f"no node with id {node_id!r} (the learner has no successor)")
        return self.nodes[node_id].next[0]

    def path_to_learner(self, node_id: str) -> tuple[str, ...]:
        """Return the ids from ``node_id`` up to and including the learner id.

        For a provider that splits its contribution this is the path of its
        first portion (see :meth:`portion_paths`).
        """
        self._require_known(node_id)
        if node_id == self.learner.id:
            return (node_id,)
        return self._routes.paths[node_id]

    def portion_paths(self, node_id: str) -> tuple[tuple[str, ...], ...]:
        """Return, for each portion of a node's contribution, the ids after ``node_id`` up to the learner.

        A node that does not split its contribution has one portion, whose
        path is :meth:`path_to_learner` without the node itself.
        """
        if node_id not in self.nodes:
            raise KeyError(f"no node with id {node_id!r}")
        return self._routes.portion_paths[node_id]

    def portion_routes(self) -> dict[str, tuple[frozenset[str], ...]]:
        """Return each splitting provider mapped to the nodes each of its portions passes.

        The learner is left out of the sets. Providers with one portion are
        not in the mapping.
        """
        return {
            node_id: tuple(frozenset(path[:-1]) for path in self._routes.portion_paths[node_id])
            for node_id, node in self.nodes.items()
            if node.portions > 1
        }

    def providers_upstream_of(self, node_id: str) -> frozenset[str]:
        """Return the providers whose contributions pass through ``node_id``.

        This includes ``node_id`` itself when it is a provider. For the
        learner id it is every provider.
        """
        self._require_known(node_id)
        return self._routes.providers_upstream.get(node_id, frozenset())

    def distance_to_learner(self, node_id: str) -> int:
        """Return the number of hops from ``node_id`` to the learner (0 for the learner id)."""
        return len(self.path_to_learner(node_id)) - 1

    def nodes_upstream_of(self, node_id: str) -> frozenset[str]:
        """Return the nodes, other than ``node_id``, whose path to the learner passes through it."""
        self._require_known(node_id)
        return self._routes.nodes_upstream.get(node_id, frozenset())

    def hops(self) -> int:
        """Return the number of messages on the longest path from a provider to the learner.

        A chain of N providers has N hops (p1 -> p2, ..., pN -> learner).
        """
        return max(
            (len(path) for p in self.providers for path in self.portion_paths(p)), default=0
        )

    @cached_property
    def _routes(self) -> _Routes:
        # Computed once per topology. When every call walked the paths again,
        # building the node configurations of a 1,000-node chain did not finish.
        return _Routes.of(self)

    def _require_known(self, node_id: str) -> None:
        if node_id != self.learner.id and node_id not in self.nodes:
            raise KeyError(f"no node or learner with id {node_id!r}")


@dataclass(frozen=True, kw_only=True)
class _Routes:
    """Every node's path to the learner and what flows into each node, of one topology."""

    paths: Mapping[str, tuple[str, ...]]
    portion_paths: Mapping[str, tuple[tuple[str, ...], ...]]
    inputs: Mapping[str, frozenset[str]]
    providers_upstream: Mapping[str, frozenset[str]]
    nodes_upstream: Mapping[str, frozenset[str]]

    @classmethod
    def of(cls, topology: Topology) -> _Routes:
        learner = topology.learner.id
        paths: dict[str, tuple[str, ...]] = {}
        for node_id in topology.nodes:
            walk = [node_id]
            while walk[-1] != learner:
                walk.append(topology.nodes[walk[-1]].next[0])
            paths[node_id] = tuple(walk)
        portion_paths = {
            node_id: tuple(paths[hop] if hop != learner else (learner,) for hop in node.next)
            for node_id, node in topology.nodes.items()
        }
        inputs: dict[str, set[str]] = {}
        for node in topology.nodes.values():
            for successor in node.next:
                inputs.setdefault(successor, set()).add(node.id)
        providers: dict[str, set[str]] = {}
        nodes: dict[str, set[str]] = {}
        for node_id, routes in portion_paths.items():
            for on_path in {node_id}.union(*routes):
                if topology.nodes[node_id].is_provider:
                    providers.setdefault(on_path, set()).add(node_id)
                if on_path != node_id:
                    nodes.setdefault(on_path, set()).add(node_id)
        return cls(
            paths=paths,
            portion_paths=portion_paths,
            inputs={key: frozenset(value) for key, value in inputs.items()},
            providers_upstream={key: frozenset(value) for key, value in providers.items()},
            nodes_upstream={key: frozenset(value) for key, value in nodes.items()},
        )
