"""Routing around offline nodes, round deadlines and per-round sampling, without IO.

Every node has one path to the learner. When the next node on it is offline,
a node sends to the first online node after it on the same path, so a
receiver must accept any sender whose path passes through it. These pure
functions decide where to send, which senders a receiver still waits for,
when a node stops waiting, and which providers take part in a round.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence


def deadline_share(distance: int, max_hops: int) -> float:
    """Return the fraction of a round's timeout after which a node forwards what it has.

    A node ``distance`` hops from the learner, in a topology whose longest
    path has ``max_hops`` hops, forwards at
    timeout * (max_hops + 1 - distance) / (max_hops + 1). Each node therefore
    gives up before the node it sends to, and the learner (distance 0) waits
    the whole timeout.
    """
    if max_hops < 0 or not 0 <= distance <= max_hops:
        raise ValueError(f"distance {distance} must lie in [0, {max_hops}]")
    return (max_hops + 1 - distance) / (max_hops + 1)


def next_online(path: Sequence[str], offline: Collection[str]) -> tuple[str, tuple[str, ...]]:
    """Return the first node of ``path`` that is not offline, and the nodes skipped before it.

    ``path`` ends with the learner, which is returned when every node before
    it is offline, because no other node can take its place.
    """
    if not path:
        raise ValueError("the path to the learner is empty")
    for index, node in enumerate(path[:-1]):
        if node not in offline:
            return node, tuple(path[:index])
    return path[-1], tuple(path[:-1])


def awaited_senders(
    inputs: Iterable[str],
    *,
    feeders: Mapping[str, Collection[str]],
    carries: Mapping[str, Collection[Hashable]],
    received: Collection[str],
    counted: Collection[Hashable],
    offline: Collection[str],
    participants: Collection[Hashable] | None,
) -> frozenset[str]:
    """Return the upstream nodes from which a contribution can still arrive this round.

    ``inputs`` are the receiver's direct inputs, ``feeders`` the direct inputs
    of every upstream node, and ``carries`` the providers whose contributions
    pass through each upstream node. The learner names a provider's
    contribution by (provider, portion) instead, because a provider that
    splits its contribution reaches it once per portion; ``counted`` and
    ``participants`` then use the same names. A node is not awaited when it has sent
    (``received``), when no participant that is not yet ``counted`` passes
    through it, or when it is offline. The inputs of an offline node send
    around it straight to the receiver, so they are awaited in its place.
    """
    awaited: set[str] = set()
    pending = list(inputs)
    visited: set[str] = set()
    while pending:
        node = pending.pop()
        if node in visited or node in received:
            continue
        visited.add(node)
        remaining = set(carries.get(node, ())) - set(counted)
        if participants is not None:
            remaining &= set(participants)
        if not remaining:
            continue
        if node in offline:
            pending.extend(feeders.get(node, ()))
        else:
            awaited.add(node)
    return frozenset(awaited)


def blocked_providers(
    portion_routes: Mapping[str, Sequence[Collection[str]]], offline: Collection[str]
) -> frozenset[str]:
    """Return the splitting providers that send nothing because a portion has no online node.

    ``portion_routes`` maps each provider that splits its contribution to the
    nodes, learner excluded, that each of its portions passes. Such a
    provider sends no portion while every node of one of its routes is
    offline, so no receiver should wait for it.
    """
    return frozenset(
        provider
        for provider, routes in portion_routes.items()
        if any(all(node in offline for node in route) for route in routes)
    )


def sample_participants(
    providers: Collection[str], *, fraction: float, minimum: int, seed: int, round: int
) -> tuple[str, ...] | None:
    """Return the sorted providers sampled for ``round``, or None when every provider takes part.

    The sample contains ceil(fraction * len(providers)) providers, but at least
    ``minimum``. It depends only on ``seed``, ``round`` and the provider ids,
    so a run repeated with the same seed samples the same providers.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction {fraction} must lie in (0, 1]")
    pool = sorted(providers)
    count = min(len(pool), max(minimum, math.ceil(fraction * len(pool))))
    if count >= len(pool):
        return None
    rng = random.Random(f"gradchain-sample:{seed}:{round}")
    return tuple(sorted(rng.sample(pool, count)))
