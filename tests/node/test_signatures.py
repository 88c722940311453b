"""Tests for gradchain.node.signatures and gradchain.node.keys: signing keys of a deployment."""

from __future__ import annotations

import logging
import stat
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from gradchain.cli import main
from gradchain.errors import ConfigError, SealingError, SignatureError
from gradchain.node.common import NodeLogger
from gradchain.node.signatures import create_signing_keys, load_message_signing
from gradchain.protocol import Ack, encode
from gradchain.topology import Topology, load_topology, write_chain

RUN = "0123456789abcdef"
LOG = NodeLogger(logging.getLogger("test"), "p2")


@pytest.fixture
def topology(tmp_path: Path) -> Topology:
    return load_topology(write_chain(tmp_path, "breast-cancer", 3, job_id="chain", key_bits=512))


def ack_message(sender: str) -> Ack:
    return Ack(job="chain", run=RUN, round=1, sender=sender, of="p1")


def ack(sender: str) -> bytes:
    return encode(ack_message(sender))


def test_generated_topology_signs_by_default(topology: Topology) -> None:
    document = tomllib.loads(topology.path.read_text(encoding="utf-8"))

    assert document["signing"] == {"keys": "keys", "required": True}
    assert topology.signing is not None
    assert topology.signing.keys == topology.path.parent / "keys"


def test_generator_can_leave_signing_out(tmp_path: Path) -> None:
    path = write_chain(tmp_path, "breast-cancer", 3, key_bits=512, signing=False)

    assert load_topology(path).signing is None


def test_keys_created_for_every_participant(topology: Topology) -> None:
    created = create_signing_keys(topology)

    assert created == ["learner", "p1", "p2", "p3"]
    folder = topology.path.parent / "keys"
    for participant in created:
        private = folder / f"{participant}.sign.key"
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
        assert (folder / f"{participant}.sign.pub").exists()
    assert create_signing_keys(topology) == []


def test_loaded_signing_verifies_peers(topology: Topology) -> None:
    create_signing_keys(topology)
    p1 = load_message_signing(topology, "p1", LOG)
    p2 = load_message_signing(topology, "p2", LOG)

    assert p2.signs
    assert p2.required
    assert sorted(p2.public_keys) == ["learner", "p1", "p2", "p3"]
    assert p2.open(p1.seal_for("p2", ack_message("p1"), ack("p1"))) == ack_message("p1")
    with pytest.raises(SignatureError, match="Ack of 'p1' signed by 'p2'"):
        p1.open(p2.seal_for("p1", ack_message("p1"), ack("p1")))
    with pytest.raises(SealingError, match="unsealed Ack"):
        p2.open(p1.sign(ack("p1")))


def test_missing_key_files_named_when_required(topology: Topology) -> None:
    create_signing_keys(topology)
    folder = topology.path.parent / "keys"
    (folder / "p2.sign.key").unlink()
    (folder / "p3.sign.pub").unlink()

    with pytest.raises(ConfigError) as caught:
        load_message_signing(topology, "p2", LOG)

    text = str(caught.value)
    assert str(folder / "p2.sign.key") in text
    assert str(folder / "p3.sign.pub") in text
    assert str(folder / "p1.sign.pub") not in text
    assert f"gradchain keys {topology.path}" in text


def test_missing_own_key_sends_unsigned_when_optional(
    topology: Topology, caplog: pytest.LogCaptureFixture
) -> None:
    assert topology.signing is not None
    optional = replace(topology, signing=replace(topology.signing, required=False))
    create_signing_keys(optional)
    (optional.signing.keys / "p2.sign.key").unlink()  # type: ignore[union-attr]

    with caplog.at_level(logging.WARNING):
        p2 = load_message_signing(optional, "p2", LOG)

    assert not p2.signs
    assert p2.sign(ack("p2")) == ack("p2")
    assert p2.open(ack("p1")).sender == "p1"  # type: ignore[union-attr]
    assert "p2.sign.key" in caplog.text


def test_keys_command_creates_and_lists_files(
    topology: Topology, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["keys", str(topology.path)])

    output = capsys.readouterr().out
    assert code == 0
    folder = topology.path.parent / "keys"
    assert topology.learner.private_key.exists()
    assert "4 created, 0 found" in output
    public_part, private_part = output.split("copy each private key only to its own machine")
    assert str(topology.learner.public_key) in public_part
    for participant in ("learner", "p1", "p2", "p3"):
        assert str(folder / f"{participant}.sign.pub") in public_part
        assert (folder / f"{participant}.sign.key").exists()
        assert str(folder / f"{participant}.sign.key") in private_part
    assert f"node p3: {folder / 'p3.sign.key'}" in private_part
    assert str(topology.learner.private_key) in private_part

    assert main(["keys", str(topology.path)]) == 0
    assert "0 created, 4 found" in capsys.readouterr().out


def test_sealing_keys_created_for_every_participant(topology: Topology) -> None:
    create_signing_keys(topology)

    folder = topology.path.parent / "keys"
    for participant in ("learner", "p1", "p2", "p3"):
        private = folder / f"{participant}.seal.key"
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
        assert (folder / f"{participant}.seal.pub").exists()


def test_loaded_sealing_reaches_recipient_only(topology: Topology) -> None:
    create_signing_keys(topology)
    p1 = load_message_signing(topology, "p1", LOG)
    p2 = load_message_signing(topology, "p2", LOG)
    p3 = load_message_signing(topology, "p3", LOG)

    assert p2.sealing is not None
    assert sorted(p2.sealing.public_keys) == ["learner", "p1", "p2", "p3"]
    payload = p1.seal_for("p2", ack_message("p1"), ack("p1"))
    assert ack("p1") not in payload
    assert p2.open(payload) == ack_message("p1")
    with pytest.raises(SealingError, match="sealed to 'p2'"):
        p3.open(payload)


def test_seal_false_creates_and_loads_no_sealing_keys(topology: Topology) -> None:
    assert topology.signing is not None
    unsealed = replace(topology, signing=replace(topology.signing, seal=False))
    create_signing_keys(unsealed)

    folder = topology.path.parent / "keys"
    assert not list(folder.glob("*.seal.*"))
    p2 = load_message_signing(unsealed, "p2", LOG)
    assert p2.sealing is None
    assert p2.open(load_message_signing(unsealed, "p1", LOG).sign(ack("p1"))) == ack_message("p1")


def test_missing_sealing_key_named_when_required(topology: Topology) -> None:
    create_signing_keys(topology)
    folder = topology.path.parent / "keys"
    (folder / "p3.seal.pub").unlink()

    with pytest.raises(ConfigError, match=r"p3\.seal\.pub"):
        load_message_signing(topology, "p2", LOG)


def test_keys_command_lists_sealing_files(
    topology: Topology, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", str(topology.path)]) == 0

    output = capsys.readouterr().out
    folder = topology.path.parent / "keys"
    public_part, private_part = output.split("copy each private key only to its own machine")
    assert str(folder / "p1.seal.pub") in public_part
    assert f"node p3: {folder / 'p3.seal.key'}" in private_part
    assert f"learner learner: {folder / 'learner.seal.key'}" in private_part
