"""Tests for gradchain.crypto.keyfile."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from gradchain.crypto.keyfile import (
    load_private_key,
    load_public_key,
    save_private_key,
    save_public_key,
)
from gradchain.crypto.paillier import PrivateKey, PublicKey, generate_keypair
from gradchain.errors import CryptoError

Keypair = tuple[PublicKey, PrivateKey]


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def write_private_document(path: Path, document: Any) -> None:
    """Write a JSON document with mode 0600, so only its content is under test."""
    path.write_text(json.dumps(document), encoding="utf-8")
    path.chmod(0o600)


def private_document(keypair: Keypair, format_version: int = 2) -> dict[str, Any]:
    _, private_key = keypair
    document = public_document(keypair, format_version)
    document["kind"] = "gradchain-paillier-private-key"
    document["p"] = format(private_key.p, "x")
    document["q"] = format(private_key.q, "x")
    return document


def public_document(keypair: Keypair, format_version: int = 2) -> dict[str, Any]:
    public_key, _ = keypair
    document: dict[str, Any] = {
        "format": format_version,
        "kind": "gradchain-paillier-public-key",
        "fingerprint": public_key.fingerprint,
        "n": format(public_key.n, "x"),
    }
    if public_key.hs is not None:
        document["hs"] = format(public_key.hs, "x")
    return document


def test_public_key_round_trip(tmp_path: Path, keypair_2048: Keypair) -> None:
    public_key, _ = keypair_2048
    path = tmp_path / "learner.pub.json"

    save_public_key(path, public_key)

    assert load_public_key(path) == public_key
    assert load_public_key(str(path)) == public_key


def test_public_key_file_contents(tmp_path: Path, medium_keypair: Keypair) -> None:
    path = tmp_path / "learner.pub.json"

    save_public_key(path, medium_keypair[0])

    assert json.loads(path.read_text(encoding="utf-8")) == public_document(medium_keypair)


def test_private_key_round_trip(tmp_path: Path, keypair_2048: Keypair) -> None:
    public_key, private_key = keypair_2048
    path = tmp_path / "learner.key.json"
    ciphertext = public_key.raw_encrypt(31337)

    save_private_key(path, private_key)
    loaded = load_private_key(path)

    assert loaded == private_key
    assert loaded.public_key == public_key
    assert loaded.raw_decrypt(ciphertext) == 31337


def test_private_key_file_contents(tmp_path: Path, medium_keypair: Keypair) -> None:
    path = tmp_path / "learner.key.json"

    save_private_key(path, medium_keypair[1])

    assert json.loads(path.read_text(encoding="utf-8")) == private_document(medium_keypair)


def test_save_private_key_creates_mode_0600(tmp_path: Path, medium_keypair: Keypair) -> None:
    path = tmp_path / "learner.key.json"

    save_private_key(path, medium_keypair[1])

    assert file_mode(path) == 0o600


def test_save_private_key_narrows_existing_file(tmp_path: Path, medium_keypair: Keypair) -> None:
    path = tmp_path / "learner.key.json"
    path.write_text("old content that is longer than the key file would ever be " * 100)
    path.chmod(0o644)

    save_private_key(path, medium_keypair[1])

    assert file_mode(path) == 0o600
    assert load_private_key(path) == medium_keypair[1]


def test_save_private_key_ignores_umask(tmp_path: Path, medium_keypair: Keypair) -> None:
    path = tmp_path / "learner.key.json"
    old_umask = os.umask(0o277)
    try:
        save_private_key(path, medium_keypair[1])
    finally:
        os.umask(old_umask)

    assert file_mode(path) == 0o600


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param(0o644, id="0644"),
        pytest.param(0o640, id="0640"),
        pytest.param(0o604, id="0604"),
        pytest.param(0o620, id="0620-group-write"),
        pytest.param(0o602, id="0602-other-write"),
        pytest.param(0o610, id="0610-group-execute"),
        pytest.param(0o666, id="0666"),
    ],
)
def test_load_private_key_rejects_open_mode(
    tmp_path: Path, medium_keypair: Keypair, mode: int
) -> None:
    path = tmp_path / "learner.key.json"
    save_private_key(path, medium_keypair[1])
    path.chmod(mode)

    with pytest.raises(CryptoError) as caught:
        load_private_key(path)

    message = str(caught.value)
    assert str(path) in message
    assert f"chmod 600 {path}" in message
    assert f"{mode:04o}" in message


@pytest.mark.parametrize(
    "mode",
    [pytest.param(0o600, id="0600"), pytest.param(0o400, id="0400")],
)
def test_load_private_key_accepts_owner_only_mode(
    tmp_path: Path, medium_keypair: Keypair, mode: int
) -> None:
    path = tmp_path / "learner.key.json"
    save_private_key(path, medium_keypair[1])
    path.chmod(mode)

    assert load_private_key(path) == medium_keypair[1]


@pytest.mark.parametrize(
    "loader",
    [pytest.param(load_public_key, id="public"), pytest.param(load_private_key, id="private")],
)
def test_load_missing_file(tmp_path: Path, loader: Any) -> None:
    path = tmp_path / "missing.json"

    with pytest.raises(CryptoError, match=re.escape(f"{path}: ") + "failed to read .* key file"):
        loader(path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(b"", "not valid JSON", id="empty"),
        pytest.param(b'{"format": 1,', "not valid JSON", id="truncated"),
        pytest.param(b"\xff\xfe", "not UTF-8", id="binary"),
        pytest.param(b"[1, 2]", "must contain a JSON object, found list", id="array"),
        pytest.param(b'"key"', "must contain a JSON object, found str", id="string"),
    ],
)
def test_load_private_key_rejects_malformed_file(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "learner.key.json"
    path.write_bytes(content)
    path.chmod(0o600)

    with pytest.raises(CryptoError) as caught:
        load_private_key(path)

    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_load_public_key_rejects_malformed_json(tmp_path: Path) -> None:
    path = tmp_path / "learner.pub.json"
    path.write_text('{"format": 1, "kind": ]')

    with pytest.raises(CryptoError, match=r"not valid JSON: .* at line 1 column 23"):
        load_public_key(path)


def test_load_private_key_rejects_public_file(tmp_path: Path, medium_keypair: Keypair) -> None:
    path = tmp_path / "learner.pub.json"
    save_public_key(path, medium_keypair[0])
    path.chmod(0o600)

    with pytest.raises(CryptoError) as caught:
        load_private_key(path)

    message = str(caught.value)
    assert str(path) in message
    assert "expected kind 'gradchain-paillier-private-key'" in message
    assert "found 'gradchain-paillier-public-key'" in message


def test_load_public_key_rejects_private_file(tmp_path: Path, medium_keypair: Keypair) -> None:
    path = tmp_path / "learner.key.json"
    save_private_key(path, medium_keypair[1])

    with pytest.raises(CryptoError, match="expected kind 'gradchain-paillier-public-key'"):
        load_public_key(path)


# Marks a field that replace_field removes.
_DELETE = object()


def replace_field(document: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    changed = dict(document)
    if value is _DELETE:
        del changed[field]
    else:
        changed[field] = value
    return changed


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        pytest.param("kind", _DELETE, "expected kind", id="kind-missing"),
        pytest.param("kind", "rsa-private-key", "found 'rsa-private-key'", id="kind-unknown"),
        pytest.param("format", _DELETE, "unsupported format None", id="format-missing"),
        pytest.param("format", 3, "unsupported format 3", id="format-newer"),
        pytest.param("format", "1", "unsupported format '1'", id="format-string"),
        pytest.param("format", True, "unsupported format True", id="format-bool"),
        pytest.param("p", _DELETE, "missing fields: p", id="p-missing"),
        pytest.param("fingerprint", _DELETE, "missing fields: fingerprint", id="fp-missing"),
        pytest.param("comment", "hello", "unknown fields: comment", id="extra-field"),
        pytest.param("n", 12345, "field 'n' must be a lowercase hexadecimal", id="n-number"),
        pytest.param("n", "0x1f", "field 'n' must be a lowercase hexadecimal", id="n-prefixed"),
        pytest.param("n", "", "field 'n' must be a lowercase hexadecimal", id="n-empty"),
        pytest.param("n", "ABC", "field 'n' must be a lowercase hexadecimal", id="n-uppercase"),
        pytest.param("q", "0", "field 'q' must be positive", id="q-zero"),
        pytest.param("q", "-5", "field 'q' must be a lowercase hexadecimal", id="q-negative"),
        pytest.param("fingerprint", "0" * 16, "does not match n", id="fingerprint-wrong"),
        pytest.param("q", "3", "p * q != n", id="q-wrong"),
    ],
)
def test_load_private_key_rejects_bad_field(
    tmp_path: Path, medium_keypair: Keypair, field: str, value: Any, expected: str
) -> None:
    path = tmp_path / "learner.key.json"
    write_private_document(path, replace_field(private_document(medium_keypair), field, value))

    with pytest.raises(CryptoError) as caught:
        load_private_key(path)

    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_load_private_key_rejects_composite_factors(tmp_path: Path) -> None:
    # n = 15 * 77, so p * q == n is true but neither factor is prime.
    public_key = PublicKey(n=15 * 77)
    document = {
        "format": 1,
        "kind": "gradchain-paillier-private-key",
        "fingerprint": public_key.fingerprint,
        "n": format(public_key.n, "x"),
        "p": format(15, "x"),
        "q": format(77, "x"),
    }
    path = tmp_path / "learner.key.json"
    write_private_document(path, document)

    with pytest.raises(CryptoError, match=re.escape(f"{path}: ") + "p of key .+ is not prime"):
        load_private_key(path)


def test_load_private_key_mixed_keys(
    tmp_path: Path, tiny_keypair: Keypair, medium_keypair: Keypair
) -> None:
    document = private_document(medium_keypair)
    document["p"] = format(tiny_keypair[1].p, "x")
    document["q"] = format(tiny_keypair[1].q, "x")
    path = tmp_path / "learner.key.json"
    write_private_document(path, document)

    with pytest.raises(CryptoError, match=r"p \* q != n"):
        load_private_key(path)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        pytest.param("n", "2", "field 'n' must be at least 3", id="n-too-small"),
        pytest.param("fingerprint", "abc", "does not match n", id="fingerprint-wrong"),
        pytest.param("p", "11", "unknown fields: p", id="private-field"),
        pytest.param("format", 0, "unsupported format 0", id="format-old"),
    ],
)
def test_load_public_key_rejects_bad_field(
    tmp_path: Path, medium_keypair: Keypair, field: str, value: Any, expected: str
) -> None:
    document = replace_field(public_document(medium_keypair), field, value)
    if field == "n":
        # Keep the fingerprint consistent so that only the value of n is wrong.
        document["fingerprint"] = PublicKey(n=3).fingerprint
    path = tmp_path / "learner.pub.json"
    path.write_text(json.dumps(document), encoding="utf-8")

    with pytest.raises(CryptoError) as caught:
        load_public_key(path)

    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_save_public_key_reports_unwritable_path(tmp_path: Path, tiny_keypair: Keypair) -> None:
    path = tmp_path / "no-such-folder" / "learner.pub.json"

    with pytest.raises(CryptoError, match=re.escape(f"{path}: failed to write public key file")):
        save_public_key(path, tiny_keypair[0])


def test_save_private_key_reports_unwritable_path(tmp_path: Path, tiny_keypair: Keypair) -> None:
    path = tmp_path / "no-such-folder" / "learner.key.json"

    with pytest.raises(CryptoError, match=re.escape(f"{path}: failed to write private key file")):
        save_private_key(path, tiny_keypair[1])


@pytest.fixture(scope="module")
def djn_keypair() -> Keypair:
    return generate_keypair(256, djn=True)


def test_djn_public_key_round_trip(tmp_path: Path, djn_keypair: Keypair) -> None:
    path = tmp_path / "learner.pub.json"

    save_public_key(path, djn_keypair[0])
    loaded = load_public_key(path)

    assert loaded == djn_keypair[0]
    assert loaded.hs == djn_keypair[0].hs
    assert json.loads(path.read_text(encoding="utf-8")) == public_document(djn_keypair)


def test_djn_private_key_round_trip(tmp_path: Path, djn_keypair: Keypair) -> None:
    path = tmp_path / "learner.key.json"

    save_private_key(path, djn_keypair[1])
    loaded = load_private_key(path)

    assert loaded == djn_keypair[1]
    assert loaded.public_key.hs == djn_keypair[0].hs


def test_plain_key_file_has_no_hs(tmp_path: Path, medium_keypair: Keypair) -> None:
    path = tmp_path / "learner.pub.json"

    save_public_key(path, medium_keypair[0])

    assert "hs" not in json.loads(path.read_text(encoding="utf-8"))


def test_format_1_public_key_still_loads(tmp_path: Path, medium_keypair: Keypair) -> None:
    path = tmp_path / "old.pub.json"
    path.write_text(json.dumps(public_document(medium_keypair, format_version=1)))

    loaded = load_public_key(path)

    assert loaded == medium_keypair[0]
    assert loaded.hs is None


def test_format_1_private_key_still_loads(tmp_path: Path, medium_keypair: Keypair) -> None:
    path = tmp_path / "old.key.json"
    write_private_document(path, private_document(medium_keypair, format_version=1))

    loaded = load_private_key(path)

    assert loaded == medium_keypair[1]


def test_format_1_rejects_hs(tmp_path: Path, djn_keypair: Keypair) -> None:
    path = tmp_path / "old.pub.json"
    path.write_text(json.dumps(public_document(djn_keypair, format_version=1)))

    with pytest.raises(CryptoError, match="unknown fields: hs"):
        load_public_key(path)


@pytest.mark.parametrize(
    ("hs", "message"),
    [
        pytest.param("1", "field 'hs' is invalid", id="one"),
        pytest.param("0", "field 'hs' must be positive", id="zero"),
        pytest.param("XYZ", "lowercase hexadecimal", id="not-hex"),
    ],
)
def test_load_public_key_rejects_bad_hs(
    tmp_path: Path, djn_keypair: Keypair, hs: str, message: str
) -> None:
    document = public_document(djn_keypair)
    document["hs"] = hs
    path = tmp_path / "bad.pub.json"
    path.write_text(json.dumps(document))

    with pytest.raises(CryptoError, match=message):
        load_public_key(path)


def test_load_private_key_rejects_hs_of_other_key(tmp_path: Path, djn_keypair: Keypair) -> None:
    other, _ = generate_keypair(256, djn=True)
    document = private_document(djn_keypair)
    # The other key's hs is coprime to this n but not an encryption of 0 under it.
    document["hs"] = format(other.hs % djn_keypair[0].nsquare, "x")
    path = tmp_path / "mixed.key.json"
    write_private_document(path, document)

    with pytest.raises(CryptoError, match="does not decrypt to 0"):
        load_private_key(path)
