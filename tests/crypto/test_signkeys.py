"""Tests for gradchain.crypto.signkeys: Ed25519 signing and X25519 sealing key files."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from gradchain.crypto.signkeys import (
    create_sealing_key,
    create_signing_key,
    load_seal_public_key,
    load_sealing_key,
    load_signing_key,
    load_verify_key,
    private_key_path,
    public_key_path,
    save_signing_key,
    seal_private_key_path,
    seal_public_key_path,
)
from gradchain.errors import CryptoError


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_created_pair_round_trips(tmp_path: Path) -> None:
    assert create_signing_key(tmp_path / "keys", "p1")

    private_key = load_signing_key(tmp_path / "keys" / "p1.sign.key")
    public_key = load_verify_key(tmp_path / "keys" / "p1.sign.pub")
    signature = private_key.sign(b"message")

    public_key.verify(signature, b"message")
    assert file_mode(tmp_path / "keys" / "p1.sign.key") == 0o600


def test_existing_pair_kept(tmp_path: Path) -> None:
    create_signing_key(tmp_path, "p1")
    before = private_key_path(tmp_path, "p1").read_bytes()

    assert not create_signing_key(tmp_path, "p1")

    assert private_key_path(tmp_path, "p1").read_bytes() == before


def test_missing_public_file_restored(tmp_path: Path) -> None:
    create_signing_key(tmp_path, "p1")
    public = public_key_path(tmp_path, "p1")
    original = public.read_bytes()
    public.unlink()

    assert not create_signing_key(tmp_path, "p1")

    assert public.read_bytes() == original


def test_existing_wide_file_narrowed(tmp_path: Path) -> None:
    path = tmp_path / "p1.sign.key"
    path.write_bytes(b"old")
    path.chmod(0o644)

    save_signing_key(path, tmp_path / "p1.sign.pub", Ed25519PrivateKey.generate())

    assert file_mode(path) == 0o600


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param(0o644, id="0644"),
        pytest.param(0o640, id="0640"),
        pytest.param(0o604, id="0604"),
        pytest.param(0o620, id="0620-group-write"),
    ],
)
def test_readable_private_file_rejected(tmp_path: Path, mode: int) -> None:
    create_signing_key(tmp_path, "p1")
    path = private_key_path(tmp_path, "p1")
    path.chmod(mode)

    with pytest.raises(CryptoError, match=f"mode {mode:04o}.*chmod 600 {path}"):
        load_signing_key(path)


def test_missing_private_file_named(tmp_path: Path) -> None:
    path = tmp_path / "p9.sign.key"

    with pytest.raises(CryptoError, match=f"{path}: failed to read signing key file"):
        load_signing_key(path)


def test_garbage_public_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "p1.sign.pub"
    path.write_text("not a key\n")

    with pytest.raises(CryptoError, match="invalid signing public key file"):
        load_verify_key(path)


def test_other_key_type_rejected(tmp_path: Path) -> None:
    other = X25519PrivateKey.generate()
    private_path = tmp_path / "p1.sign.key"
    private_path.write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    private_path.chmod(0o600)
    public_path = tmp_path / "p1.sign.pub"
    public_path.write_bytes(
        other.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )

    with pytest.raises(CryptoError, match="expected an Ed25519 private key"):
        load_signing_key(private_path)
    with pytest.raises(CryptoError, match="expected an Ed25519 public key"):
        load_verify_key(public_path)


def test_sealing_pair_round_trips(tmp_path: Path) -> None:
    assert create_sealing_key(tmp_path, "p1")

    private_key = load_sealing_key(seal_private_key_path(tmp_path, "p1"))
    public_key = load_seal_public_key(seal_public_key_path(tmp_path, "p1"))

    assert public_key.public_bytes_raw() == private_key.public_key().public_bytes_raw()
    assert file_mode(seal_private_key_path(tmp_path, "p1")) == 0o600
    assert not create_sealing_key(tmp_path, "p1")


def test_readable_sealing_file_rejected(tmp_path: Path) -> None:
    create_sealing_key(tmp_path, "p1")
    path = seal_private_key_path(tmp_path, "p1")
    path.chmod(0o640)

    with pytest.raises(CryptoError, match=f"sealing key file has mode 0640.*chmod 600 {path}"):
        load_sealing_key(path)


def test_signing_files_rejected_as_sealing(tmp_path: Path) -> None:
    create_signing_key(tmp_path, "p1")

    with pytest.raises(CryptoError, match="expected an X25519 private key, got"):
        load_sealing_key(private_key_path(tmp_path, "p1"))
    with pytest.raises(CryptoError, match="expected an X25519 public key, got"):
        load_seal_public_key(public_key_path(tmp_path, "p1"))


@pytest.mark.parametrize(
    ("load", "file_name", "message"),
    [
        pytest.param(
            load_verify_key, "p9.sign.pub", "failed to read signing public key", id="verify"
        ),
        pytest.param(load_sealing_key, "p9.seal.key", "failed to read sealing key", id="sealing"),
        pytest.param(
            load_seal_public_key, "p9.seal.pub", "failed to read sealing public key", id="seal-pub"
        ),
    ],
)
def test_missing_key_file_named(
    tmp_path: Path, load: Callable[[Path], object], file_name: str, message: str
) -> None:
    path = tmp_path / file_name

    with pytest.raises(CryptoError, match=f"{path}: {message} file"):
        load(path)


def test_garbage_sealing_files_rejected(tmp_path: Path) -> None:
    private_path = tmp_path / "p1.seal.key"
    private_path.write_text("not a key\n")
    private_path.chmod(0o600)
    public_path = tmp_path / "p1.seal.pub"
    public_path.write_text("not a key\n")

    with pytest.raises(CryptoError, match="invalid sealing key file"):
        load_sealing_key(private_path)
    with pytest.raises(CryptoError, match="invalid sealing public key file"):
        load_seal_public_key(public_path)
