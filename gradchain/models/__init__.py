"""Models the providers differentiate and the learner's gradient descent."""

from gradchain.models.factorisation import (
    FactorisationState,
    MatrixFactorisation,
    alternating_least_squares,
)
from gradchain.models.interface import (
    LocalStateModel,
    Model,
    check_model_data,
    create_local_state,
    initial_theta,
    parameter_count,
    provider_gradient,
)
from gradchain.models.linear import LinearRegression, flag_outliers, robust_threshold
from gradchain.models.logistic import LogisticRegression, sigmoid
from gradchain.models.multilabel import MultiLabel
from gradchain.models.pca import PCA, principal_angles
from gradchain.models.registry import (
    MODEL_NAMES,
    MODEL_SETTINGS,
    ModelSetting,
    get_model,
    resolve_settings,
)
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
    "MODEL_SETTINGS",
    "PCA",
    "SCHEDULE_KINDS",
    "FactorisationState",
    "LinearRegression",
    "LocalStateModel",
    "LogisticRegression",
    "MatrixFactorisation",
    "Model",
    "ModelSetting",
    "MultiLabel",
    "ScheduleKind",
    "StepSchedule",
    "TrainingResult",
    "alternating_least_squares",
    "check_model_data",
    "create_local_state",
    "flag_outliers",
    "get_model",
    "initial_theta",
    "parameter_count",
    "plaintext_distributed_gd",
    "principal_angles",
    "provider_gradient",
    "randomised_direction",
    "resolve_settings",
    "robust_threshold",
    "sigmoid",
    "update",
]
