"""Declarative fault injection: plan files, seeded decisions and the transport wrapper that applies them."""

from .injector import CRASH_EXIT_CODE, FaultInjector, MessageDecision
from .plan import (
    BrokerRestartFault,
    CrashFault,
    DisconnectFault,
    Fault,
    FaultPlan,
    LinkFault,
    MessageFault,
    StragglerFault,
    load_fault_plan,
    parse_fault_plan,
)
from .transport import FaultyTransport

__all__ = [
    "CRASH_EXIT_CODE",
    "BrokerRestartFault",
    "CrashFault",
    "DisconnectFault",
    "Fault",
    "FaultInjector",
    "FaultPlan",
    "FaultyTransport",
    "LinkFault",
    "MessageDecision",
    "MessageFault",
    "StragglerFault",
    "load_fault_plan",
    "parse_fault_plan",
]
