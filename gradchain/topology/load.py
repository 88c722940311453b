"""Read and validate topology files, and load the data files they name.

Relative paths in a topology file are relative to the folder of the file.
Every check raises :class:`~gradchain.errors.TopologyError` naming the file,
the node id when one is involved, the key and a fix. Unknown keys are errors,
so a misspelt key never falls back to a default.
"""

from __future__ import annotations

import logging
import math
import os
import re
import tomllib
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path

from gradchain.crypto.packing import (
    MAX_VALUE_BITS,
    headroom_bits,
    required_value_bits,
    scaled_clip,
)
from gradchain.crypto.paillier import MIN_OBFUSCATOR_BITS
from gradchain.data import FloatArray, check_data, load_data_file
from gradchain.errors import ConfigError, TopologyError
from gradchain.models.interface import SupportsParameterCount
from gradchain.models.registry import MODEL_SETTINGS, get_model
from gradchain.randomisers import RANDOMISERS
from gradchain.topology._fields import Table, describe_value, join_ids
from gradchain.topology.model import (
    MODELS,
    SCHEDULES,
    CryptoSettings,
    JobSettings,
    LearnerSpec,
    NodeSpec,
    SigningSettings,
    Topology,
)

logger = logging.getLogger(__name__)

ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
"""Characters allowed in job, learner and node ids. The ids become MQTT topic levels."""

MIN_KEY_BITS = 64
"""Smallest accepted ``crypto.key_bits``. Anything below 2048 bits is for tests only."""

SECURE_KEY_BITS = 2048
"""Key size below which loading a topology logs a warning."""

DATA_SUFFIXES = (".npz", ".csv")

_TOP_KEYS = ("job", "crypto", "learner", "nodes", "model", "signing")
_JOB_KEYS = (
    "id",
    "model",
    "features",
    "rounds",
    "tolerance",
    "learning_rate",
    "schedule",
    "l2",
    "min_contributors",
    "randomise",
    "randomiser",
    "uniform_normalise",
    "round_timeout",
    "sample_fraction",
    "seed",
)
_CRYPTO_KEYS = (
    "key_bits",
    "frac_bits",
    "clip",
    "packing",
    "value_bits",
    "djn",
    "obfuscator_bits",
    "pool_size",
    "encryption",
    "insecure",
)
_LEARNER_KEYS = ("id", "public_key", "private_key", "eval_data")
_NODE_KEYS = ("id", "data", "next")
_SIGNING_KEYS = ("keys", "required", "seal")

DEFAULT_SIGNING_KEYS = "keys"
"""Default ``signing.keys`` folder, the folder of the learner's default Paillier key files."""


def load_topology(path: str | os.PathLike[str]) -> Topology:
    """Read a topology file and return it validated.

    Checks that every provider's data file exists, but does not read data
    files. :func:`load_provider_data` checks their contents against the job.
    """
    path = Path(path)
    try:
        with path.open("rb") as stream:
            document = tomllib.load(stream)
    except FileNotFoundError:
        raise TopologyError(f"file not found: {path.resolve()}", path=str(path)) from None
    except OSError as exc:
        raise TopologyError(f"cannot read the file: {exc}", path=str(path)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(f"invalid TOML: {exc}", path=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise TopologyError(f"invalid TOML, the file is not UTF-8: {exc}", path=str(path)) from exc

    topology = parse_topology(document, path)
    logger.debug(
        "loaded topology %s: job %s, %d nodes, %d providers",
        path,
        topology.job.id,
        len(topology.nodes),
        len(topology.providers),
    )
    return topology


def parse_topology(
    document: Mapping[str, object], path: str | os.PathLike[str], *, check_files: bool = True
) -> Topology:
    """Validate a parsed topology document and return the Topology.

    ``path`` is the file the document belongs to. Errors name it and relative
    paths resolve against its folder, but it is not read. ``check_files=False``
    skips the checks that data files exist, so a generator can validate its
    settings before it writes the data.
    """
    path = Path(path)
    top = Table(document, str(path))
    top.reject_unknown_keys(_TOP_KEYS)
    base = path.resolve().parent

    job = _parse_job(_subtable(top, "job", required=True))
    model_settings = _parse_model(_subtable(top, "model", required=False), job.model)
    crypto = _parse_crypto(_subtable(top, "crypto", required=False))
    learner = _parse_learner(_subtable(top, "learner", required=True), base)
    nodes = _parse_nodes(top, learner.id, base)
    signing = None
    if "signing" in top.values:
        signing = _parse_signing(_subtable(top, "signing", required=True), base)

    _check_next_hops(nodes, learner.id, str(path))
    _check_reaches_learner(nodes, learner.id, str(path))
    _check_every_node_sends(nodes, learner.id, str(path))
    _check_portion_paths(nodes, learner.id, str(path))
    if check_files:
        _check_data_files_exist(nodes, learner, str(path))

    providers = sum(1 for node in nodes.values() if node.is_provider)
    _check_min_contributors(job, providers, str(path))
    if crypto.packing:
        _check_packed_layout(crypto, providers, str(path))
    else:
        _check_encoding_headroom(crypto, providers, str(path))
    if not crypto.encryption:
        logger.warning(
            "%s: crypto.encryption = false: gradients cross the broker unencrypted (benchmarks only)",
            path,
        )
    if crypto.key_bits < SECURE_KEY_BITS:
        logger.warning(
            "%s: crypto.key_bits = %d is below %d, which is for tests only",
            path,
            crypto.key_bits,
            SECURE_KEY_BITS,
        )

    return Topology(
        path=path.resolve(),
        job=job,
        crypto=crypto,
        learner=learner,
        nodes=nodes,
        model_settings=model_settings,
        signing=signing,
    )


def _subtable(top: Table, key: str, *, required: bool) -> Table:
    value = top.values.get(key)
    if value is None:
        if required:
            raise top.error(key, f"missing required table [{key}]")
        value = {}
    if not isinstance(value, dict):
        raise top.error(key, f"expected a table [{key}], got {describe_value(value)}")
    return Table(value, top.file, prefix=f"{key}.")


def _check_id(table: Table, key: str, value: str) -> None:
    table.require(
        key,
        ID_PATTERN.fullmatch(value) is not None,
        f"invalid id {value!r}: ids become MQTT topic levels",
        "use only letters, digits, '_', '.' and '-'",
    )


def _parse_job(table: Table) -> JobSettings:
    table.reject_unknown_keys(_JOB_KEYS)
    defaults = JobSettings(id="-", features=1)
    job = JobSettings(
        id=table.get_str("id"),
        model=table.get_str("model", defaults.model),
        features=table.get_int("features"),
        rounds=table.get_int("rounds", defaults.rounds),
        tolerance=table.get_float("tolerance", defaults.tolerance),
        learning_rate=table.get_float("learning_rate", defaults.learning_rate),
        schedule=table.get_str("schedule", defaults.schedule),
        l2=table.get_float("l2", defaults.l2),
        min_contributors=table.get_int("min_contributors", defaults.min_contributors),
        randomise=table.get_bool("randomise", defaults.randomise),
        randomiser=table.get_str("randomiser", defaults.randomiser),
        uniform_normalise=table.get_bool("uniform_normalise", defaults.uniform_normalise),
        round_timeout=table.get_float("round_timeout", defaults.round_timeout),
        sample_fraction=table.get_float("sample_fraction", defaults.sample_fraction),
        seed=table.get_int("seed", defaults.seed),
    )

    _check_id(table, "id", job.id)
    table.require(
        "model",
        job.model in MODELS,
        f"unknown model {job.model!r}",
        f"use one of: {', '.join(MODELS)}",
    )
    table.require(
        "schedule",
        job.schedule in SCHEDULES,
        f"unknown schedule {job.schedule!r}",
        f"use one of: {', '.join(SCHEDULES)}",
    )
    table.require(
        "randomiser",
        job.randomiser in RANDOMISERS,
        f"unknown randomiser {job.randomiser!r}",
        f"use one of: {', '.join(RANDOMISERS)}",
    )
    table.require(
        "uniform_normalise",
        "uniform_normalise" not in table.values or job.randomiser == "uniform",
        f"applies only to the uniform randomiser, but randomiser is {job.randomiser!r}",
        'remove job.uniform_normalise or set job.randomiser = "uniform"',
    )
    _require_at_least(table, "features", job.features, 1)
    _require_at_least(table, "rounds", job.rounds, 1)
    _require_at_least(table, "min_contributors", job.min_contributors, 1)
    _require_positive(table, "learning_rate", job.learning_rate)
    _require_positive(table, "round_timeout", job.round_timeout)
    table.require(
        "sample_fraction",
        0.0 < job.sample_fraction <= 1.0,
        f"must lie in (0, 1], got {job.sample_fraction}",
        "use 1.0 to let every provider contribute in every round",
    )
    _require_not_negative(table, "tolerance", job.tolerance)
    _require_not_negative(table, "l2", job.l2)
    return job


def _parse_model(table: Table, model: str) -> dict[str, int | float]:
    """Read the optional ``[model]`` table, the settings of ``job.model`` that are not defaults."""
    specs = MODEL_SETTINGS.get(model, ())
    if not specs and table.values:
        raise table.error(
            next(iter(table.values)),
            f"model {model!r} takes no settings",
            "remove the [model] table",
        )
    table.reject_unknown_keys(tuple(spec.name for spec in specs))
    settings: dict[str, int | float] = {}
    for spec in specs:
        if spec.name not in table.values:
            continue
        value = table.get_int(spec.name) if spec.kind is int else table.get_float(spec.name)
        problem = spec.problem(value)
        table.require(spec.name, problem is None, problem or "", spec.description or None)
        settings[spec.name] = value
    return settings


def _parse_crypto(table: Table) -> CryptoSettings:
    table.reject_unknown_keys(_CRYPTO_KEYS)
    defaults = CryptoSettings()
    crypto = CryptoSettings(
        key_bits=table.get_int("key_bits", defaults.key_bits),
        frac_bits=table.get_int("frac_bits", defaults.frac_bits),
        clip=table.get_float("clip", defaults.clip),
        packing=table.get_bool("packing", defaults.packing),
        value_bits=table.get_optional_int("value_bits"),
        djn=table.get_bool("djn", defaults.djn),
        obfuscator_bits=table.get_optional_int("obfuscator_bits"),
        pool_size=table.get_optional_int("pool_size"),
        encryption=table.get_bool("encryption", defaults.encryption),
        insecure=table.get_bool("insecure", defaults.insecure),
    )
    table.require(
        "encryption",
        crypto.encryption or crypto.insecure,
        "is false, so every gradient would cross the broker readable by anyone; "
        "this mode exists only to benchmark gradchain against a plaintext reference",
        "remove crypto.encryption, or set crypto.insecure = true for a benchmark on synthetic data",
    )
    table.require(
        "key_bits",
        crypto.key_bits >= MIN_KEY_BITS,
        f"must be at least {MIN_KEY_BITS}, got {crypto.key_bits}",
        f"use {SECURE_KEY_BITS} or more outside tests",
    )
    table.require(
        "key_bits",
        crypto.key_bits % 2 == 0,
        f"must be even because p and q have key_bits / 2 bits each, got {crypto.key_bits}",
    )
    _require_at_least(table, "frac_bits", crypto.frac_bits, 1)
    _require_positive(table, "clip", crypto.clip)
    if crypto.value_bits is not None:
        table.require(
            "value_bits",
            crypto.packing,
            "applies only to the packed encoding, but packing is false",
            "remove crypto.value_bits or set crypto.packing = true",
        )
        _require_at_least(table, "value_bits", crypto.value_bits, 1)
    if crypto.obfuscator_bits is not None:
        _check_obfuscator_bits(table, crypto)
    if crypto.pool_size is not None:
        _require_at_least(table, "pool_size", crypto.pool_size, 0)
    return crypto


def _check_obfuscator_bits(table: Table, crypto: CryptoSettings) -> None:
    """Check an explicit ``obfuscator_bits`` against ``djn`` and the key size."""
    assert crypto.obfuscator_bits is not None
    table.require(
        "obfuscator_bits",
        crypto.djn,
        "applies only to DJN keys, but djn is false",
        "remove crypto.obfuscator_bits or set crypto.djn = true",
    )
    default = (crypto.key_bits + 1) // 2
    low = min(MIN_OBFUSCATOR_BITS, default)
    table.require(
        "obfuscator_bits",
        low <= crypto.obfuscator_bits <= crypto.key_bits,
        f"must be between {low} and {crypto.key_bits} for a {crypto.key_bits}-bit key, "
        f"got {crypto.obfuscator_bits}",
        f"remove it to use the default of {default} bits",
    )
    if crypto.obfuscator_bits < default:
        logger.warning(
            "%s: crypto.obfuscator_bits = %d is shorter than the default ceil(key_bits / 2) = %d "
            "that ABY, IPCL and HEU use, which trades security margin for faster encryption",
            table.file,
            crypto.obfuscator_bits,
            default,
        )


def _parse_learner(table: Table, base: Path) -> LearnerSpec:
    table.reject_unknown_keys(_LEARNER_KEYS)
    learner_id = table.get_str("id")
    _check_id(table, "id", learner_id)
    eval_data = table.get_optional_str("eval_data")
    if eval_data is not None:
        _check_data_suffix(table, "eval_data", eval_data)
    return LearnerSpec(
        id=learner_id,
        public_key=_resolve(base, table.get_str("public_key", f"keys/{learner_id}.pub.json")),
        private_key=_resolve(base, table.get_str("private_key", f"keys/{learner_id}.key.json")),
        eval_data=None if eval_data is None else _resolve(base, eval_data),
    )


def _parse_signing(table: Table, base: Path) -> SigningSettings:
    table.reject_unknown_keys(_SIGNING_KEYS)
    keys = table.values.get("keys", DEFAULT_SIGNING_KEYS)
    table.require(
        "keys",
        isinstance(keys, str) and keys.strip() != "",
        f"expected the folder of the signing key files, got {describe_value(keys)}",
        f'set keys = "{DEFAULT_SIGNING_KEYS}" (relative to the topology file) or remove the key',
    )
    assert isinstance(keys, str)
    required = table.values.get("required", True)
    table.require(
        "required",
        isinstance(required, bool),
        f"expected true or false, got {describe_value(required)}",
        "set required = true to reject unsigned messages, or false to accept them",
    )
    assert isinstance(required, bool)
    seal = table.values.get("seal", True)
    table.require(
        "seal",
        isinstance(seal, bool),
        f"expected true or false, got {describe_value(seal)}",
        "set seal = true to encrypt inbox messages to their recipient, or false to send them "
        "readable by every broker client",
    )
    assert isinstance(seal, bool)
    return SigningSettings(keys=_resolve(base, keys), required=required, seal=seal)


def _parse_nodes(top: Table, learner_id: str, base: Path) -> dict[str, NodeSpec]:
    entries = top.values.get("nodes")
    if entries is None:
        raise top.error("nodes", "missing [[nodes]] tables", "add one [[nodes]] table per node")
    if not isinstance(entries, list):
        raise top.error(
            "nodes", f"expected an array of tables ([[nodes]]), got {describe_value(entries)}"
        )
    if not entries:
        raise top.error("nodes", "no nodes", "add one [[nodes]] table per node")

    nodes: dict[str, NodeSpec] = {}
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise top.error(
                "nodes", f"entry {number} is {describe_value(entry)}, expected a [[nodes]] table"
            )
        node = _parse_node(Table(entry, top.file), number, learner_id, base)
        if node.id in nodes:
            raise TopologyError(
                "duplicate node id",
                path=top.file,
                node_id=node.id,
                key="id",
                fix="give every [[nodes]] table its own id",
            )
        nodes[node.id] = node
    return nodes


def _parse_node(table: Table, number: int, learner_id: str, base: Path) -> NodeSpec:
    if "id" not in table.values:
        raise table.error("id", f"[[nodes]] table number {number} has no id")
    node_id = table.get_str("id")
    table = Table(table.values, table.file, node_id=node_id)
    _check_id(table, "id", node_id)
    table.reject_unknown_keys(_NODE_KEYS)
    table.require(
        "id",
        node_id != learner_id,
        f"the node id equals the learner id {learner_id!r}",
        "rename the node or set learner.id to another id",
    )

    data = table.get_optional_str("data")
    if data is not None:
        _check_data_suffix(table, "data", data)

    next_hops = table.get_str_list("next", (learner_id,))
    if not next_hops:
        raise table.error(
            "next", "is empty", f"name the next hop, for example next = [{learner_id!r}]"
        )
    duplicates = sorted({hop for hop in next_hops if next_hops.count(hop) > 1})
    table.require(
        "next",
        not duplicates,
        f"names {join_ids(duplicates)} more than once",
        "send each portion to a different aggregator",
    )
    if len(next_hops) > 1:
        table.require(
            "next",
            data is not None,
            f"has {len(next_hops)} entries, but only a provider can split its contribution "
            "into portions",
            "give an aggregator exactly one next hop",
        )
        table.require(
            "next",
            learner_id not in next_hops,
            f"sends a portion straight to the learner {learner_id!r}, which could then "
            "add the portions of this provider alone",
            "send every portion through an aggregator",
        )
    return NodeSpec(id=node_id, data=None if data is None else _resolve(base, data), next=next_hops)


def _check_data_suffix(table: Table, key: str, value: str) -> None:
    table.require(
        key,
        Path(value).suffix.lower() in DATA_SUFFIXES,
        f"unsupported data file type {value!r}",
        f"use a file ending in {' or '.join(DATA_SUFFIXES)}",
    )


def _resolve(base: Path, value: str) -> Path:
    return (base / value).resolve()


def _require_at_least(table: Table, key: str, value: int, minimum: int) -> None:
    table.require(key, value >= minimum, f"must be at least {minimum}, got {value}")


def _require_positive(table: Table, key: str, value: float) -> None:
    table.require(key, value > 0.0, f"must be greater than 0, got {value}")


def _require_not_negative(table: Table, key: str, value: float) -> None:
    table.require(key, value >= 0.0, f"must be 0 or greater, got {value}")


def _check_next_hops(nodes: Mapping[str, NodeSpec], learner_id: str, file: str) -> None:
    known = [*nodes, learner_id]
    for node in nodes.values():
        for hop in node.next:
            if hop not in known:
                raise TopologyError(
                    f"unknown node id {hop!r}",
                    path=file,
                    node_id=node.id,
                    key="next",
                    fix=f"use one of: {join_ids(known)}",
                )


def _check_reaches_learner(nodes: Mapping[str, NodeSpec], learner_id: str, file: str) -> None:
    """Raise TopologyError naming a node on a cycle when any node cannot reach the learner.

    Every node has exactly one known next hop here, so a path that does not
    end at the learner must run into a cycle.
    """
    reaches: set[str] = {learner_id}
    stuck: list[str] = []
    for start in nodes:
        path = [start]
        while path[-1] not in reaches and len(path) <= len(nodes):
            path.append(nodes[path[-1]].next[0])
        if path[-1] in reaches:
            reaches.update(path)
        else:
            stuck.append(start)
    if not stuck:
        return

    # Walk from the first stuck node until an id repeats. The repeated id starts the cycle.
    seen: list[str] = [stuck[0]]
    while (hop := nodes[seen[-1]].next[0]) not in seen:
        seen.append(hop)
    cycle = seen[seen.index(hop) :]
    outside = [node_id for node_id in stuck if node_id not in cycle]
    upstream = f"; nodes leading into it: {join_ids(outside)}" if outside else ""
    raise TopologyError(
        f"cycle {' -> '.join([*cycle, cycle[0]])}: these nodes never reach the learner "
        f"{learner_id!r}{upstream}",
        path=file,
        node_id=cycle[0],
        key="next",
        fix="point one node of the cycle at the learner or at a node that reaches it",
    )


def _check_portion_paths(nodes: Mapping[str, NodeSpec], learner_id: str, file: str) -> None:
    """Raise TopologyError unless each split provider's portions travel through disjoint aggregators.

    A provider with several next hops sends one portion of its contribution
    to each. If two portions met at one aggregator, that aggregator could add
    them, and a learner that colluded with it could decrypt the sum. A
    provider that splits its contribution must also have no inputs, because
    it has no single sum to forward them in.
    """
    has_inputs = {hop for node in nodes.values() for hop in node.next}
    for node in nodes.values():
        if len(node.next) < 2:
            continue
        if node.id in has_inputs:
            feeders = sorted(other.id for other in nodes.values() if node.id in other.next)
            raise TopologyError(
                f"splits its contribution across {len(node.next)} next hops but receives "
                f"from {join_ids(feeders)}",
                path=file,
                node_id=node.id,
                key="next",
                fix="point its inputs at an aggregator, or give this node a single next hop",
            )
        owner: dict[str, str] = {}
        for hop in node.next:
            walk = [hop]
            while walk[-1] != learner_id:
                walk.append(nodes[walk[-1]].next[0])
            for on_path in walk[:-1]:
                if on_path in owner:
                    raise TopologyError(
                        f"the portions sent to {owner[on_path]!r} and {hop!r} both pass "
                        f"through {on_path!r}, which could add them",
                        path=file,
                        node_id=node.id,
                        key="next",
                        fix="give every portion a path to the learner through aggregators "
                        "of its own",
                    )
                owner[on_path] = hop


def _check_every_node_sends(nodes: Mapping[str, NodeSpec], learner_id: str, file: str) -> None:
    has_inputs = {hop for node in nodes.values() for hop in node.next}
    for node in nodes.values():
        if not node.is_provider and node.id not in has_inputs:
            raise TopologyError(
                "the node has no data and no inputs, so it never has anything to send",
                path=file,
                node_id=node.id,
                key="data",
                fix="give it a data file, point another node's next at it, or remove it",
            )


def _check_data_files_exist(nodes: Mapping[str, NodeSpec], learner: LearnerSpec, file: str) -> None:
    for node in nodes.values():
        if node.data is not None and not node.data.is_file():
            raise TopologyError(
                f"data file not found: {node.data}",
                path=file,
                node_id=node.id,
                key="data",
                fix="paths are relative to the folder of the topology file",
            )
    if learner.eval_data is not None and not learner.eval_data.is_file():
        raise TopologyError(
            f"data file not found: {learner.eval_data}",
            path=file,
            key="learner.eval_data",
            fix=(
                "paths are relative to the folder of the topology file, "
                "or remove the key to skip evaluation"
            ),
        )


def _check_min_contributors(job: JobSettings, providers: int, file: str) -> None:
    if job.min_contributors > providers:
        raise TopologyError(
            f"is {job.min_contributors}, but the topology has only {providers} providers",
            path=file,
            key="job.min_contributors",
            fix=f"set it to at most {providers} or add providers",
        )


def _check_encoding_headroom(crypto: CryptoSettings, providers: int, file: str) -> None:
    """Raise TopologyError when a sum of encoded values could wrap around the modulus n.

    Paillier plaintexts are residues mod n and negative values are stored as
    n + x, so a decoded total must stay below n // 2 in magnitude. The sum of
    ``providers`` values clipped to [-clip, clip] and scaled by 2**frac_bits
    is at most providers * (floor(clip * 2**frac_bits) + 1), the same bound
    as FixedPointEncoding.check_capacity. generate_keypair makes n exactly
    key_bits long, so n // 2 >= 2**(key_bits - 2) and the check compares
    against that.
    """
    limit_bits = crypto.key_bits - 2
    if crypto.frac_bits >= limit_bits:
        bound_bits = crypto.frac_bits
    else:
        scaled_clip = math.floor(Fraction(crypto.clip) * (1 << crypto.frac_bits))
        bound = providers * (scaled_clip + 1)
        if bound < 1 << limit_bits:
            return
        bound_bits = bound.bit_length()
    raise TopologyError(
        f"the encoded total of {providers} providers with clip {crypto.clip:g} can need "
        f"{bound_bits} bits, but a {crypto.key_bits}-bit key leaves {limit_bits} bits "
        "for a signed total",
        path=file,
        key="crypto.frac_bits",
        fix="lower crypto.frac_bits or crypto.clip, or raise crypto.key_bits",
    )


def _check_packed_layout(crypto: CryptoSettings, providers: int, file: str) -> None:
    """Raise TopologyError when a packed slot for ``providers`` contributions does not fit.

    The rules are those of :class:`gradchain.crypto.PackedEncoding`: one value
    needs the bit length of ``2 * clip * 2**frac_bits`` (or ``value_bits``,
    at most 63), a slot adds ``ceil(log2(providers))`` headroom bits, and a
    plaintext of a ``key_bits`` key has ``key_bits - 1`` bits for slots.
    """
    required = required_value_bits(crypto.frac_bits, crypto.clip)
    explicit = crypto.value_bits is not None
    key = "crypto.value_bits" if explicit else "crypto.frac_bits"
    if crypto.value_bits is not None and crypto.value_bits < required:
        raise TopologyError(
            f"is {crypto.value_bits}, but clip {crypto.clip:g} with frac_bits "
            f"{crypto.frac_bits} needs {required} bits per value",
            path=file,
            key="crypto.value_bits",
            fix=f"set it to at least {required} or remove it",
        )
    value_bits = crypto.value_bits if crypto.value_bits is not None else required
    if value_bits > MAX_VALUE_BITS:
        raise TopologyError(
            f"a packed value needs {value_bits} bits, but packing supports at most "
            f"{MAX_VALUE_BITS}",
            path=file,
            key=key,
            fix="lower crypto.frac_bits or crypto.clip, or set crypto.packing = false",
        )
    if scaled_clip(crypto.frac_bits, crypto.clip) < 1:
        raise TopologyError(
            f"clip {crypto.clip:g} rounds to 0 fixed-point units, so every value would encode as 0",
            path=file,
            key="crypto.frac_bits",
            fix="raise crypto.frac_bits or crypto.clip",
        )
    headroom = headroom_bits(max(providers, 1))
    slot_bits = value_bits + headroom
    plaintext_bits = crypto.key_bits - 1
    if slot_bits > plaintext_bits:
        raise TopologyError(
            f"a packed slot needs {slot_bits} bits ({value_bits} value bits and {headroom} "
            f"headroom bits for {providers} providers), but a {crypto.key_bits}-bit key "
            f"leaves {plaintext_bits} plaintext bits",
            path=file,
            key=key,
            fix=(
                "lower crypto.frac_bits or crypto.clip, raise crypto.key_bits, "
                "or set crypto.packing = false"
            ),
        )


def load_provider_data(topology: Topology, node_id: str) -> tuple[FloatArray, FloatArray]:
    """Read a provider's data file and check it against the job.

    Raises ConfigError when the file is unreadable, when its column count
    differs from ``job.features`` or when a label is not 0 or 1 for logistic
    regression. Raises KeyError for an unknown id and ValueError for an aggregator,
    which has no data file.
    """
    node = topology.nodes[node_id]
    if node.data is None:
        raise ValueError(f"node {node_id!r} is an aggregator and has no data file")
    return _load_checked(topology, node.data, owner=f"node {node_id!r}")


def load_eval_data(topology: Topology) -> tuple[FloatArray, FloatArray] | None:
    """Read the learner's held-out data, or return None when ``learner.eval_data`` is not set.

    Raises ConfigError like :func:`load_provider_data`.
    """
    if topology.learner.eval_data is None:
        return None
    return _load_checked(
        topology, topology.learner.eval_data, owner=f"learner {topology.learner.id!r}"
    )


def _load_checked(topology: Topology, path: Path, *, owner: str) -> tuple[FloatArray, FloatArray]:
    X, y = load_data_file(path)
    model = get_model(topology.job.model, topology.model_settings)
    if isinstance(model, SupportsParameterCount):
        # The model's parameters are not one per column, so the model checks the shapes.
        try:
            model.check_data(X, y, topology.job.features)
        except ValueError as error:
            raise ConfigError(f"{owner}: data file {path}: {error}") from None
        return X, y
    check_data(
        X,
        y,
        features=topology.job.features,
        owner=owner,
        path=path,
        binary_labels=topology.job.model == "logistic",
    )
    return X, y
