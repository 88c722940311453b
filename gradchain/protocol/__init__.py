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
    SendAck,
    SendContribution,
)
from .learner import LearnerConfig, LearnerProtocol, LearnerState
from .messages import Ack, Contribution, JobDone, Liveness, Message, RoundStart, Status
from .node import NodeConfig, NodeProtocol
from .wire import decode, encode

__all__ = [
    "Ack",
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
    "Liveness",
    "Message",
    "NodeConfig",
    "NodeProtocol",
    "PublishRound",
    "RoundCompleted",
    "RoundFailed",
    "RoundStart",
    "SendAck",
    "SendContribution",
    "Status",
    "decode",
    "encode",
]
