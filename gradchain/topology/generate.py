"""Generate chain and tree topologies over a data set.

Each generator splits the data set into a training set and a held-out test
set (:func:`gradchain.data.load_split`), deals the training rows among the
providers and writes:

- ``<data_dir>/<provider id>.npz`` for every provider;
- ``<data_dir>/eval.npz`` with the test set for the learner, unless
  ``test_fraction`` is 0;
- any file the data set comes with, such as ``standardisation.json`` for
  "warfarin", into ``<data_dir>``;
- the topology file, whose paths are relative to its own folder. The key
  paths point into ``<keys_dir>``, where the learner creates its Paillier
  key files. Unless ``signing=False`` the file has a ``[signing]`` table
  with ``keys = "<keys_dir>"`` and ``required = true``, so its messages are
  signed. The generators create no key files: ``gradchain run`` and
  ``gradchain keys`` create the missing signing key pairs.

The generators validate the settings with the same checks as
:func:`~gradchain.topology.load.load_topology` before they write anything,
and load the written file again before they return its path.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import tomli_w

from gradchain.data import (
    Dataset,
    DataSplit,
    default_learning_rate,
    load_data_file,
    load_split,
    save_npz,
    split_groups,
    split_rows,
)
from gradchain.errors import ConfigError
from gradchain.models.interface import parameter_count
from gradchain.models.registry import get_model, resolve_settings
from gradchain.randomisers import DEFAULT_RANDOMISER
from gradchain.topology.load import load_topology, parse_topology

logger = logging.getLogger(__name__)

LEARNER_ID = "learner"


@dataclass(frozen=True, kw_only=True)
class _Settings:
    rounds: int
    #: None takes the data set's default (:func:`gradchain.data.default_learning_rate`).
    learning_rate: float | None
    schedule: str
    l2: float
    min_contributors: int
    randomise: bool
    randomiser: str
    uniform_normalise: bool
    tolerance: float
    round_timeout: float
    key_bits: int
    frac_bits: int
    clip: float
    packing: bool
    value_bits: int | None
    djn: bool
    obfuscator_bits: int | None
    pool_size: int | None


@dataclass(frozen=True, kw_only=True)
class _Source:
    data_path: str | os.PathLike[str] | None
    model_settings: dict[str, int | float]


@dataclass(frozen=True, kw_only=True)
class _Layout:
    out_dir: Path
    filename: str
    data_dir: str
    keys_dir: str
    overwrite: bool
    signing: bool = True

    @property
    def topology_file(self) -> Path:
        return self.out_dir / self.filename

    def data_path(self, name: str) -> str:
        """Return the path of a data file as written in the topology file."""
        return str(PurePosixPath(self.data_dir) / f"{name}.npz")


def write_chain(
    out_dir: str | os.PathLike[str],
    dataset_name: str,
    providers: int,
    *,
    job_id: str | None = None,
    filename: str = "topology.toml",
    data_dir: str = "data",
    keys_dir: str = "keys",
    signing: bool = True,
    overwrite: bool = False,
    rounds: int = 60,
    learning_rate: float | None = None,
    schedule: str = "constant",
    l2: float = 0.001,
    min_contributors: int = 3,
    randomise: bool = True,
    randomiser: str = DEFAULT_RANDOMISER,
    uniform_normalise: bool = True,
    tolerance: float = 1e-6,
    round_timeout: float = 120.0,
    key_bits: int = 2048,
    frac_bits: int = 32,
    clip: float = 2.0**20,
    packing: bool = True,
    value_bits: int | None = None,
    djn: bool = True,
    obfuscator_bits: int | None = None,
    pool_size: int | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    data_path: str | os.PathLike[str] | None = None,
    model_settings: Mapping[str, int | float] | None = None,
) -> Path:
    """Write a chain p1 -> p2 -> ... -> pN -> learner and return the topology file's path.

    ``job_id`` defaults to ``<dataset_name>-chain``. ``data_dir`` and
    ``keys_dir`` are relative to ``out_dir``. ``signing`` writes a
    ``[signing]`` table that requires signed messages, with its key files in
    ``keys_dir``. Every provider is a node with
    data, and the chain takes N hops. The job's model is the one the data
    set is prepared for (:data:`gradchain.data.DATASET_MODELS`), and
    ``model_settings`` becomes its ``[model]`` table, for example
    ``{"components": 4}`` for "digits". ``data_path`` is the source file or
    folder of "warfarin" and "movielens" (see
    :func:`gradchain.data.load_split`). job.features is the number of
    parameters the model needs for the data. Raises ConfigError for invalid settings,
    for more providers than training rows, and when the topology file or a
    data file with different contents exists and ``overwrite`` is False.
    """
    _require_providers(providers)
    ids = [f"p{number}" for number in range(1, providers + 1)]
    next_hops = {
        node_id: successor for node_id, successor in zip(ids, [*ids[1:], LEARNER_ID], strict=True)
    }
    return _write(
        dataset_name,
        providers,
        next_hops,
        aggregators=[],
        job_id=job_id or f"{dataset_name}-chain",
        description=f"chain of {providers} providers",
        layout=_Layout(
            out_dir=Path(out_dir),
            filename=filename,
            data_dir=data_dir,
            keys_dir=keys_dir,
            signing=signing,
            overwrite=overwrite,
        ),
        settings=_Settings(
            rounds=rounds,
            learning_rate=learning_rate,
            schedule=schedule,
            l2=l2,
            min_contributors=min_contributors,
            randomise=randomise,
            randomiser=randomiser,
            uniform_normalise=uniform_normalise,
            tolerance=tolerance,
            round_timeout=round_timeout,
            key_bits=key_bits,
            frac_bits=frac_bits,
            clip=clip,
            packing=packing,
            value_bits=value_bits,
            djn=djn,
            obfuscator_bits=obfuscator_bits,
            pool_size=pool_size,
        ),
        seed=seed,
        test_fraction=test_fraction,
        source=_Source(data_path=data_path, model_settings=dict(model_settings or {})),
    )


def write_tree(
    out_dir: str | os.PathLike[str],
    dataset_name: str,
    providers: int,
    fanout: int,
    *,
    job_id: str | None = None,
    filename: str = "topology.toml",
    data_dir: str = "data",
    keys_dir: str = "keys",
    signing: bool = True,
    overwrite: bool = False,
    rounds: int = 60,
    learning_rate: float | None = None,
    schedule: str = "constant",
    l2: float = 0.001,
    min_contributors: int = 3,
    randomise: bool = True,
    randomiser: str = DEFAULT_RANDOMISER,
    uniform_normalise: bool = True,
    tolerance: float = 1e-6,
    round_timeout: float = 120.0,
    key_bits: int = 2048,
    frac_bits: int = 32,
    clip: float = 2.0**20,
    packing: bool = True,
    value_bits: int | None = None,
    djn: bool = True,
    obfuscator_bits: int | None = None,
    pool_size: int | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    data_path: str | os.PathLike[str] | None = None,
    model_settings: Mapping[str, int | float] | None = None,
) -> Path:
    """Write a tree with providers as leaves and aggregators above, and return the file's path.

    Providers p1..pN have data files and no inputs. Aggregators a1, a2, ...
    have no data files. Each level is dealt into ceil(size / fanout) groups of
    consecutive nodes whose sizes differ by at most one, and one aggregator
    per group forms the next level. This repeats until a level has at most
    ``fanout`` nodes, which all send to the learner. The tree therefore takes
    max(1, ceil(log_fanout N)) hops. For example, 14 providers with fanout 7
    give two aggregators of seven providers each and 2 hops.

    ``job_id`` defaults to ``<dataset_name>-tree``. The other arguments and
    the errors are as for :func:`write_chain`, plus ConfigError for a fanout
    below 2.
    """
    _require_providers(providers)
    if fanout < 2:
        raise ConfigError(f"fanout must be at least 2, got {fanout}")
    next_hops, aggregators = _plan_tree(providers, fanout)
    return _write(
        dataset_name,
        providers,
        next_hops,
        aggregators=aggregators,
        job_id=job_id or f"{dataset_name}-tree",
        description=f"tree of {providers} providers with fanout {fanout}",
        layout=_Layout(
            out_dir=Path(out_dir),
            filename=filename,
            data_dir=data_dir,
            keys_dir=keys_dir,
            signing=signing,
            overwrite=overwrite,
        ),
        settings=_Settings(
            rounds=rounds,
            learning_rate=learning_rate,
            schedule=schedule,
            l2=l2,
            min_contributors=min_contributors,
            randomise=randomise,
            randomiser=randomiser,
            uniform_normalise=uniform_normalise,
            tolerance=tolerance,
            round_timeout=round_timeout,
            key_bits=key_bits,
            frac_bits=frac_bits,
            clip=clip,
            packing=packing,
            value_bits=value_bits,
            djn=djn,
            obfuscator_bits=obfuscator_bits,
            pool_size=pool_size,
        ),
        seed=seed,
        test_fraction=test_fraction,
        source=_Source(data_path=data_path, model_settings=dict(model_settings or {})),
    )


def write_multi(
    out_dir: str | os.PathLike[str],
    dataset_name: str,
    providers: int,
    portions: int,
    *,
    aggregators: int | None = None,
    job_id: str | None = None,
    filename: str = "topology.toml",
    data_dir: str = "data",
    keys_dir: str = "keys",
    signing: bool = True,
    overwrite: bool = False,
    seed: int = 0,
    test_fraction: float = 0.2,
    data_path: str | os.PathLike[str] | None = None,
    model_settings: Mapping[str, int | float] | None = None,
    **settings: Any,
) -> Path:
    """Write a topology whose providers split their contributions across aggregators.

    Each provider p1..pN splits its contribution into ``portions`` random
    shares and sends share m of provider i (counting from 0) to aggregator
    a((i + m) mod A + 1), where A is ``aggregators`` (default: ``portions``).
    With A >= ``portions`` these aggregators differ, so no aggregator receives
    two shares of one provider. Every aggregator sends its sum to the
    learner, so a round takes 2 hops. ``settings`` are the
    job and crypto keyword arguments of :func:`write_chain`, with the same
    defaults. ``job_id`` defaults to ``<dataset_name>-multi``. Raises
    ConfigError for fewer than 2 portions or fewer aggregators than
    portions, and as :func:`write_chain` does.
    """
    _require_providers(providers)
    if portions < 2:
        raise ConfigError(f"portions must be at least 2, got {portions}")
    count = portions if aggregators is None else aggregators
    if count < portions:
        raise ConfigError(
            f"{portions} portions need at least {portions} aggregators, got {count}: "
            "each portion of a provider goes to an aggregator of its own"
        )
    unknown = sorted(set(settings) - {field.name for field in fields(_Settings)})
    if unknown:
        raise TypeError(f"write_multi() got unexpected keyword arguments {unknown}")
    defaults = inspect.signature(write_chain).parameters
    resolved = {
        field.name: settings.get(field.name, defaults[field.name].default)
        for field in fields(_Settings)
    }
    aggregator_ids = [f"a{number}" for number in range(1, count + 1)]
    next_hops: dict[str, str | list[str]] = {
        f"p{index + 1}": [aggregator_ids[(index + m) % count] for m in range(portions)]
        for index in range(providers)
    }
    next_hops.update({aggregator: LEARNER_ID for aggregator in aggregator_ids})
    return _write(
        dataset_name,
        providers,
        next_hops,
        aggregators=aggregator_ids,
        job_id=job_id or f"{dataset_name}-multi",
        description=(
            f"{providers} providers, each split into {portions} portions "
            f"over {count} aggregators"
        ),
        layout=_Layout(
            out_dir=Path(out_dir),
            filename=filename,
            data_dir=data_dir,
            keys_dir=keys_dir,
            signing=signing,
            overwrite=overwrite,
        ),
        settings=_Settings(**resolved),
        seed=seed,
        test_fraction=test_fraction,
        source=_Source(data_path=data_path, model_settings=dict(model_settings or {})),
    )


def _require_providers(providers: int) -> None:
    if providers < 1:
        raise ConfigError(f"providers must be at least 1, got {providers}")


def _plan_tree(providers: int, fanout: int) -> tuple[dict[str, str], list[str]]:
    """Return each node's next hop, in file order, and the aggregator ids."""
    level = [f"p{number}" for number in range(1, providers + 1)]
    next_hops: dict[str, str] = {}
    aggregators: list[str] = []
    while len(level) > fanout:
        upper: list[str] = []
        for group in np.array_split(np.array(level), math.ceil(len(level) / fanout)):
            aggregator = f"a{len(aggregators) + 1}"
            aggregators.append(aggregator)
            upper.append(aggregator)
            next_hops.update({str(node_id): aggregator for node_id in group})
        level = upper
    next_hops.update({node_id: LEARNER_ID for node_id in level})
    # Providers first, then aggregators level by level.
    ordered = [f"p{number}" for number in range(1, providers + 1)] + aggregators
    return {node_id: next_hops[node_id] for node_id in ordered}, aggregators


def _write(
    dataset_name: str,
    providers: int,
    next_hops: Mapping[str, str | Sequence[str]],
    *,
    aggregators: Sequence[str],
    job_id: str,
    description: str,
    layout: _Layout,
    settings: _Settings,
    seed: int,
    test_fraction: float,
    source: _Source,
) -> Path:
    for name, folder in (("data_dir", layout.data_dir), ("keys_dir", layout.keys_dir)):
        if Path(folder).is_absolute():
            raise ConfigError(f"{name} must be relative to out_dir, got {folder!r}")

    split = load_split(dataset_name, path=source.data_path, test_fraction=test_fraction, seed=seed)
    # The data's own settings (label_power for sqrt(dose) labels) yield to the caller's.
    model_settings = {**split.model_settings, **source.model_settings}
    train, test = split.train, split.test
    if split.train_groups is None:
        shards = split_rows(train, providers, seed)
    else:
        shards = split_groups(train, split.train_groups, providers, seed)

    provider_ids = [node_id for node_id in next_hops if node_id not in aggregators]
    files = {
        layout.data_path(node_id): shard
        for node_id, shard in zip(provider_ids, shards, strict=True)
    }
    if test.rows > 0:
        files[layout.data_path("eval")] = test
    if settings.learning_rate is None:
        settings = replace(
            settings,
            learning_rate=default_learning_rate(dataset_name, train.rows / len(shards)),
        )

    extra_files = {
        str(PurePosixPath(layout.data_dir) / name): text for name, text in split.extra_files.items()
    }
    document = _document(
        job_id,
        _parameters(split, model_settings),
        next_hops,
        files,
        layout=layout,
        settings=settings,
        model=split.model,
        model_settings=model_settings,
    )
    # Validate everything except the data files, which do not exist yet.
    parse_topology(document, layout.topology_file, check_files=False)
    _check_overwrite(layout, files)
    _check_overwrite_text(layout, extra_files)

    for relative, part in files.items():
        path = layout.out_dir / relative
        # Leave a file with the same arrays alone, so that writing another
        # topology over a shared data folder changes no bytes in it.
        if path.exists() and _same_arrays(path, part):
            continue
        save_npz(path, part.X, part.y)
    for relative, text in extra_files.items():
        (layout.out_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        (layout.out_dir / relative).write_text(text, encoding="utf-8")
    header = (
        f"# {description}, data set {dataset_name}, seed {seed}.\n"
        "# Written by gradchain.topology.generate. The learner creates its Paillier key files;\n"
        "# `gradchain run` or `gradchain keys` creates the signing key pairs.\n\n"
    )
    layout.out_dir.mkdir(parents=True, exist_ok=True)
    layout.topology_file.write_text(header + tomli_w.dumps(document), encoding="utf-8")
    logger.info("wrote %s: %s", layout.topology_file, description)

    load_topology(layout.topology_file)
    return layout.topology_file


def _parameters(split: DataSplit, model_settings: Mapping[str, int | float]) -> int:
    """Return the number of parameters the data set's model needs for all its rows."""
    model = get_model(split.model, model_settings)
    X = np.vstack([split.train.X, split.test.X])
    y = np.concatenate([split.train.y, split.test.y])
    return parameter_count(model, X, y)


def _document(
    job_id: str,
    features: int,
    next_hops: Mapping[str, str | Sequence[str]],
    files: dict[str, Dataset],
    *,
    layout: _Layout,
    settings: _Settings,
    model: str,
    model_settings: Mapping[str, int | float],
) -> dict[str, object]:
    keys = PurePosixPath(layout.keys_dir)
    learner: dict[str, object] = {
        "id": LEARNER_ID,
        "public_key": str(keys / f"{LEARNER_ID}.pub.json"),
        "private_key": str(keys / f"{LEARNER_ID}.key.json"),
    }
    eval_path = layout.data_path("eval")
    if eval_path in files:
        learner["eval_data"] = eval_path

    nodes: list[dict[str, object]] = []
    for node_id, successor in next_hops.items():
        node: dict[str, object] = {"id": node_id}
        if layout.data_path(node_id) in files:
            node["data"] = layout.data_path(node_id)
        node["next"] = [successor] if isinstance(successor, str) else list(successor)
        nodes.append(node)

    document: dict[str, object] = {
        "job": {
            "id": job_id,
            "model": model,
            "features": features,
            "rounds": settings.rounds,
            "tolerance": settings.tolerance,
            "learning_rate": settings.learning_rate,
            "schedule": settings.schedule,
            "l2": settings.l2,
            "min_contributors": settings.min_contributors,
            "randomise": settings.randomise,
            "randomiser": settings.randomiser,
            "round_timeout": settings.round_timeout,
        },
        "crypto": _crypto_table(settings),
        "learner": learner,
        "nodes": nodes,
    }
    if settings.randomiser == "uniform" or not settings.uniform_normalise:
        # Written whenever it is not the default, so that loading rejects it for
        # another randomiser instead of dropping it silently.
        job = document["job"]
        assert isinstance(job, dict)
        job["uniform_normalise"] = settings.uniform_normalise
    if layout.signing:
        document["signing"] = {"keys": str(keys), "required": True}
    if model_settings:
        # Fills in defaults and raises ConfigError for an unknown or invalid key.
        resolve_settings(model, model_settings)
        document["model"] = dict(model_settings)
    return document


def _crypto_table(settings: _Settings) -> dict[str, object]:
    """Return the ``[crypto]`` table, leaving out the optional settings that are None."""
    table: dict[str, object] = {
        "key_bits": settings.key_bits,
        "frac_bits": settings.frac_bits,
        "clip": settings.clip,
        "packing": settings.packing,
        "djn": settings.djn,
    }
    optional = {
        "value_bits": settings.value_bits,
        "obfuscator_bits": settings.obfuscator_bits,
        "pool_size": settings.pool_size,
    }
    table.update({key: value for key, value in optional.items() if value is not None})
    return table


def _check_overwrite(layout: _Layout, files: dict[str, Dataset]) -> None:
    """Raise ConfigError before writing anything that would replace existing output.

    A data file with the same arrays is not a conflict, so that a chain and a
    tree generated with the same seed can share one data folder.
    """
    if layout.overwrite:
        return
    if layout.topology_file.exists():
        raise ConfigError(
            f"{layout.topology_file} already exists (pass overwrite=True to replace it)"
        )
    for relative, part in files.items():
        path = layout.out_dir / relative
        if path.exists() and not _same_arrays(path, part):
            raise ConfigError(
                f"{path} already exists with different data "
                "(pass overwrite=True to replace it, or choose another data_dir)"
            )


def _check_overwrite_text(layout: _Layout, files: Mapping[str, str]) -> None:
    """Raise ConfigError when an extra file exists with other contents and overwrite is False."""
    if layout.overwrite:
        return
    for relative, text in files.items():
        path = layout.out_dir / relative
        if path.exists() and path.read_text(encoding="utf-8") != text:
            raise ConfigError(
                f"{path} already exists with different contents "
                "(pass overwrite=True to replace it, or choose another data_dir)"
            )


def _same_arrays(path: Path, part: Dataset) -> bool:
    try:
        X, y = load_data_file(path)
    except ConfigError:
        return False
    return bool(np.array_equal(X, part.X) and np.array_equal(y, part.y))
