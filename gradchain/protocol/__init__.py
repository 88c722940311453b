"""The gradchain protocol without IO: messages, wire format and round state machines."""

from .events import (
    Action,
    ComputeContribution,
    DecryptTotal,
    Dropped,
    Finished,
    PublishRound,
    RoundCompleted,
    RoundFailed,
    SendContribution,
)
from .learner import LearnerConfig, LearnerProtocol, LearnerState
from .messages import Contribution, JobDone, Liveness, Message, RoundStart, Status
from .node import NodeConfig, NodeProtocol
from .wire import decode, encode

__all__ = [
    "Action",
    "ComputeContribution",
    "Contribution",
    "DecryptTotal",
    "Dropped",
    "Finished",
    "JobDone",
    "LearnerConfig",
    "LearnerProtocol",
    "LearnerState",
    "Message",
    "NodeConfig",
    "NodeProtocol",
    "Liveness",
    "PublishRound",
    "RoundCompleted",
    "RoundFailed",
    "RoundStart",
    "SendContribution",
    "Status",
    "decode",
    "encode",
]
