"""Topology files: which nodes exist, which data files they read and where each sends its sum.

Read one with :func:`load_topology`, and generate chain or tree topologies over
a built-in data set with :func:`write_chain` and :func:`write_tree`.
"""

from gradchain.topology.generate import write_chain, write_tree
from gradchain.topology.load import (
    ID_PATTERN,
    MIN_KEY_BITS,
    load_eval_data,
    load_provider_data,
    load_topology,
    parse_topology,
)
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

__all__ = [
    "ID_PATTERN",
    "MIN_KEY_BITS",
    "MODELS",
    "SCHEDULES",
    "CryptoSettings",
    "JobSettings",
    "LearnerSpec",
    "NodeSpec",
    "SigningSettings",
    "Topology",
    "load_eval_data",
    "load_provider_data",
    "load_topology",
    "parse_topology",
    "write_chain",
    "write_tree",
]
