"""Models the providers differentiate and the learner's gradient descent."""

from gradchain.models.logistic import LogisticRegression, sigmoid
from gradchain.models.registry import MODEL_NAMES, Model, get_model
from gradchain.models.training import (
    SCHEDULE_KINDS,
    ScheduleKind,
    StepSchedule,
    TrainingResult,
    plaintext_distributed_gd,
    randomised_direction,
    update,
)

__all__ = [
    "MODEL_NAMES",
    "SCHEDULE_KINDS",
    "LogisticRegression",
    "Model",
    "ScheduleKind",
    "StepSchedule",
    "TrainingResult",
    "get_model",
    "plaintext_distributed_gd",
    "randomised_direction",
    "sigmoid",
    "update",
]
