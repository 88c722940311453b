"""Fixtures shared by the whole test suite: MQTT brokers and the timeout scale."""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator

import pytest

from gradchain.node.broker import (
    BrokerAddress,
    MosquittoBroker,
    embedded_broker,
    find_mosquitto,
    mosquitto_broker,
)

TIME_SCALE_VARIABLE = "GRADCHAIN_TEST_TIME_SCALE"


@pytest.fixture(scope="session")
def time_unit() -> float:
    """Factor for every timeout in the tests, from GRADCHAIN_TEST_TIME_SCALE (default 1.0).

    Set it above 1 on a slow or loaded machine.
    """
    raw = os.environ.get(TIME_SCALE_VARIABLE, "1.0")
    try:
        scale = float(raw)
    except ValueError:
        scale = math.nan
    if not (math.isfinite(scale) and scale > 0):
        pytest.fail(f"{TIME_SCALE_VARIABLE}={raw!r} is invalid: expected a positive number")
    return scale


@pytest.fixture
async def mosquitto(time_unit: float) -> AsyncIterator[MosquittoBroker]:
    """mosquitto on a free loopback port, stopped after the test.

    Skips the test when mosquitto is not installed. When CI is set to a
    non-empty value the test fails instead, so that a CI run cannot pass by
    skipping every broker test.
    """
    executable = find_mosquitto()
    if executable is None:
        reason = "mosquitto is not installed (apt-get install mosquitto)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}, and CI is set, so this is an error")
        pytest.skip(reason)

    async with mosquitto_broker(
        executable=executable,
        start_timeout=10 * time_unit,
        stop_timeout=10 * time_unit,
    ) as broker:
        yield broker


@pytest.fixture
async def embedded() -> AsyncIterator[BrokerAddress]:
    """Address of an amqtt broker running in the test's event loop."""
    async with embedded_broker() as address:
        yield address
