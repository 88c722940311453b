"""Tests for gradchain.protocol.messages."""

from __future__ import annotations

import math
from typing import Any

import pytest

from gradchain.errors import ProtocolError
from gradchain.protocol.messages import (
    MAX_PARAMETERS,
    Contribution,
    JobDone,
    Liveness,
    RoundStart,
    Status,
)

RUN = "0123456789abcdef"

# The messages check only the shape of the modulus, so an odd 63-bit number is used as one.
MODULUS = 0x6A09E667F3BCC909 | 1

# Large ciphertexts whose leading digits would show up in any text that leaked them.
CIPHERTEXTS = (271828182845904523536028747, 314159265358979323846264338)

# Parameters with many distinctive digits that no message text should contain.
THETA = (0.123456789012, -98765.4321)


def round_start_fields() -> dict[str, Any]:
    return {
        "job": "job-1",
        "run": RUN,
        "round": 3,
        "theta": THETA,
        "public_key": MODULUS,
        "timeout": 30.0,
    }


def contribution_fields() -> dict[str, Any]:
    return {
        "job": "job-1",
        "run": RUN,
        "round": 3,
        "sender": "p2",
        "contributors": ("p1", "p2"),
        "ciphertexts": CIPHERTEXTS,
    }


def job_done_fields() -> dict[str, Any]:
    return {
        "job": "job-1",
        "run": RUN,
        "round": 7,
        "theta": THETA,
        "reason": "converged",
    }


def status_fields() -> dict[str, Any]:
    return {"job": "job-1", "node": "p1", "state": Liveness.ONLINE, "instance": RUN}


FIELDS_OF = {
    RoundStart: round_start_fields,
    Contribution: contribution_fields,
    JobDone: job_done_fields,
    Status: status_fields,
}


@pytest.mark.parametrize("message_class", [RoundStart, Contribution, JobDone, Status])
def test_message_accepts_valid_fields(message_class: type) -> None:
    fields = FIELDS_OF[message_class]()

    message = message_class(**fields)

    for name, value in fields.items():
        assert getattr(message, name) == value, name


@pytest.mark.parametrize("message_class", [RoundStart, Contribution, JobDone, Status])
def test_message_is_frozen(message_class: type) -> None:
    message = message_class(**FIELDS_OF[message_class]())

    with pytest.raises(AttributeError):
        message.job = "other"


# Field checks shared by every message type: job ids and run ids.

BAD_IDS = [
    pytest.param("", id="empty"),
    pytest.param("a/b", id="slash"),
    pytest.param("a+b", id="plus-wildcard"),
    pytest.param("a#", id="hash-wildcard"),
    pytest.param("a b", id="space"),
    pytest.param("é", id="non-ascii"),
    pytest.param("x" * 65, id="65-characters"),
    pytest.param(5, id="int"),
    pytest.param(None, id="none"),
]


@pytest.mark.parametrize("message_class", [RoundStart, Contribution, JobDone, Status])
@pytest.mark.parametrize("job", BAD_IDS)
def test_message_rejects_invalid_job_id(message_class: type, job: object) -> None:
    fields = FIELDS_OF[message_class]()
    fields["job"] = job

    with pytest.raises(ProtocolError, match="invalid job id"):
        message_class(**fields)


def test_id_accepts_64_characters_of_every_allowed_kind() -> None:
    job = ("Az09_.-" * 10)[:64]

    message = RoundStart(**{**round_start_fields(), "job": job})

    assert message.job == job


BAD_RUNS = [
    pytest.param("0123abc", id="7-digits"),
    pytest.param("0" * 65, id="65-digits"),
    pytest.param("0123ABCD", id="uppercase"),
    pytest.param("0123abcg", id="not-hex"),
    pytest.param(12345678, id="int"),
]


@pytest.mark.parametrize("message_class", [RoundStart, Contribution, JobDone])
@pytest.mark.parametrize("run", BAD_RUNS)
def test_message_rejects_invalid_run_id(message_class: type, run: object) -> None:
    fields = FIELDS_OF[message_class]()
    fields["run"] = run

    with pytest.raises(ProtocolError, match="invalid run id"):
        message_class(**fields)


BAD_ROUNDS = [
    pytest.param(0, id="zero"),
    pytest.param(-1, id="negative"),
    pytest.param(True, id="bool"),
    pytest.param(1.0, id="float"),
    pytest.param("1", id="str"),
    pytest.param(None, id="none"),
]


@pytest.mark.parametrize("message_class", [RoundStart, Contribution])
@pytest.mark.parametrize("round_number", BAD_ROUNDS)
def test_message_rejects_invalid_round(message_class: type, round_number: object) -> None:
    fields = FIELDS_OF[message_class]()
    fields["round"] = round_number

    with pytest.raises(ProtocolError, match="invalid round"):
        message_class(**fields)


BAD_THETAS = [
    pytest.param((), id="empty"),
    pytest.param([0.5, 1.0], id="list"),
    pytest.param((1, 2), id="ints"),
    pytest.param((True,), id="bool"),
    pytest.param((0.5, math.nan), id="nan"),
    pytest.param((math.inf,), id="infinity"),
    pytest.param((-math.inf,), id="minus-infinity"),
    pytest.param(("0.5",), id="str"),
    pytest.param(None, id="none"),
]


@pytest.mark.parametrize("message_class", [RoundStart, JobDone])
@pytest.mark.parametrize("theta", BAD_THETAS)
def test_message_rejects_invalid_theta(message_class: type, theta: object) -> None:
    fields = FIELDS_OF[message_class]()
    fields["theta"] = theta

    with pytest.raises(ProtocolError, match="invalid theta"):
        message_class(**fields)


def test_theta_longer_than_limit_rejected() -> None:
    fields = round_start_fields()
    fields["theta"] = (0.0,) * (MAX_PARAMETERS + 1)

    with pytest.raises(ProtocolError, match=f"at most {MAX_PARAMETERS}"):
        RoundStart(**fields)


# RoundStart


@pytest.mark.parametrize(
    "public_key",
    [
        pytest.param(MODULUS + 1, id="even"),
        pytest.param(13, id="below-15"),
        pytest.param(-MODULUS, id="negative"),
        pytest.param(str(MODULUS), id="str"),
        pytest.param(float(MODULUS), id="float"),
    ],
)
def test_round_start_rejects_invalid_public_key(public_key: object) -> None:
    fields = round_start_fields()
    fields["public_key"] = public_key

    with pytest.raises(ProtocolError, match="invalid public_key"):
        RoundStart(**fields)


@pytest.mark.parametrize(
    "timeout",
    [
        pytest.param(0.0, id="zero"),
        pytest.param(-1.0, id="negative"),
        pytest.param(math.inf, id="infinity"),
        pytest.param(math.nan, id="nan"),
        pytest.param(30, id="int"),
        pytest.param(True, id="bool"),
    ],
)
def test_round_start_rejects_invalid_timeout(timeout: object) -> None:
    fields = round_start_fields()
    fields["timeout"] = timeout

    with pytest.raises(ProtocolError, match="invalid timeout"):
        RoundStart(**fields)


# Contribution


@pytest.mark.parametrize(
    "sender",
    [
        pytest.param("", id="empty"),
        pytest.param("p/1", id="slash"),
        pytest.param(1, id="int"),
    ],
)
def test_contribution_rejects_invalid_sender(sender: object) -> None:
    fields = contribution_fields()
    fields["sender"] = sender

    with pytest.raises(ProtocolError, match="invalid sender"):
        Contribution(**fields)


@pytest.mark.parametrize(
    ("contributors", "expected_error"),
    [
        pytest.param((), "invalid contributors: expected a non-empty", id="empty"),
        pytest.param(["p1"], "invalid contributors: expected a non-empty", id="list"),
        pytest.param("p1", "invalid contributors: expected a non-empty", id="str"),
        pytest.param(("p1", "p/2"), "invalid contributor", id="invalid-id"),
        pytest.param(("p1", 2), "invalid contributor", id="int-id"),
        pytest.param(("p1", "p2", "p1"), "names a provider twice", id="duplicate"),
    ],
)
def test_contribution_rejects_invalid_contributors(
    contributors: object, expected_error: str
) -> None:
    fields = contribution_fields()
    fields["contributors"] = contributors

    with pytest.raises(ProtocolError, match=expected_error):
        Contribution(**fields)


def test_duplicate_contributors_error_names_sender_and_round() -> None:
    fields = contribution_fields()
    fields["contributors"] = ("p1", "p1")

    with pytest.raises(ProtocolError) as caught:
        Contribution(**fields)

    assert caught.value.sender == "p2"
    assert caught.value.round == 3


@pytest.mark.parametrize(
    ("ciphertexts", "expected_error"),
    [
        pytest.param((), "invalid ciphertexts: expected a non-empty", id="empty"),
        pytest.param([5, 7], "invalid ciphertexts: expected a non-empty", id="list"),
        pytest.param((5, 0), r"invalid ciphertexts\[1\]", id="zero"),
        pytest.param((-5,), r"invalid ciphertexts\[0\]", id="negative"),
        pytest.param((5, True), r"invalid ciphertexts\[1\]", id="bool"),
        pytest.param((5.0,), r"invalid ciphertexts\[0\]", id="float"),
        pytest.param((b"\x05",), r"invalid ciphertexts\[0\]", id="bytes"),
    ],
)
def test_contribution_rejects_invalid_ciphertexts(ciphertexts: object, expected_error: str) -> None:
    fields = contribution_fields()
    fields["ciphertexts"] = ciphertexts

    with pytest.raises(ProtocolError, match=expected_error):
        Contribution(**fields)


# JobDone


def test_job_done_accepts_round_zero() -> None:
    message = JobDone(**{**job_done_fields(), "round": 0})

    assert message.round == 0


@pytest.mark.parametrize(
    "round_number",
    [
        pytest.param(-1, id="negative"),
        pytest.param(True, id="bool"),
        pytest.param(1.0, id="float"),
    ],
)
def test_job_done_rejects_invalid_round(round_number: object) -> None:
    fields = job_done_fields()
    fields["round"] = round_number

    with pytest.raises(ProtocolError, match="invalid round"):
        JobDone(**fields)


@pytest.mark.parametrize(
    "reason",
    [
        pytest.param("x" * 201, id="201-characters"),
        pytest.param(None, id="none"),
        pytest.param(b"converged", id="bytes"),
    ],
)
def test_job_done_rejects_invalid_reason(reason: object) -> None:
    fields = job_done_fields()
    fields["reason"] = reason

    with pytest.raises(ProtocolError, match="invalid reason"):
        JobDone(**fields)


# Status


@pytest.mark.parametrize(
    ("field", "value", "expected_error"),
    [
        pytest.param("node", "p 1", "invalid node id", id="node-id"),
        pytest.param("state", "online", "invalid state", id="state-str"),
        pytest.param("state", True, "invalid state", id="state-bool"),
        pytest.param("instance", "not-hex!", "invalid run id", id="instance"),
    ],
)
def test_status_rejects_invalid_field(field: str, value: object, expected_error: str) -> None:
    fields = status_fields()
    fields[field] = value

    with pytest.raises(ProtocolError, match=expected_error):
        Status(**fields)


# Text of messages, which nodes write to their logs


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(RoundStart(**round_start_fields()), id="round-start"),
        pytest.param(Contribution(**contribution_fields()), id="contribution"),
        pytest.param(JobDone(**job_done_fields()), id="job-done"),
    ],
)
def test_message_text_leaves_out_numbers(message: RoundStart | Contribution | JobDone) -> None:
    text = str(message)

    for ciphertext in CIPHERTEXTS:
        assert str(ciphertext)[:6] not in text
    for value in THETA:
        assert repr(value) not in text
        assert f"{value:g}" not in text
    assert str(MODULUS)[:6] not in text
    assert message.job in text


def test_round_start_text_names_round_and_size() -> None:
    text = str(RoundStart(**round_start_fields()))

    assert "round=3" in text
    assert "2 parameters" in text


def test_contribution_text_counts_contributors_and_ciphertexts() -> None:
    text = str(Contribution(**contribution_fields()))

    assert "sender=p2" in text
    assert "contributors=2" in text
    assert "2 ciphertexts" in text


def test_round_start_without_hs_is_plain_key() -> None:
    assert RoundStart(**round_start_fields()).public_key_hs is None


def test_round_start_accepts_djn_hs() -> None:
    message = RoundStart(**{**round_start_fields(), "public_key_hs": MODULUS + 2})

    assert message.public_key_hs == MODULUS + 2


@pytest.mark.parametrize(
    "public_key_hs",
    [
        pytest.param(True, id="bool"),
        pytest.param("5", id="string"),
        pytest.param(5.0, id="float"),
        pytest.param(1, id="one"),
        pytest.param(0, id="zero"),
        pytest.param(-3, id="negative"),
        pytest.param(MODULUS**2 - 1, id="minus-one-mod-n-squared"),
        pytest.param(MODULUS**2, id="n-squared"),
    ],
)
def test_round_start_rejects_invalid_hs(public_key_hs: object) -> None:
    fields = {**round_start_fields(), "public_key_hs": public_key_hs}

    with pytest.raises(ProtocolError, match="invalid public_key_hs"):
        RoundStart(**fields)
