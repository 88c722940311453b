"""Read and write the Ed25519 signing keys of nodes and the learner.

Every participant ``ID`` of a signed deployment has two files in the
topology's signing keys folder: ``ID.sign.key``, its private key in
unencrypted PKCS#8 PEM, and ``ID.sign.pub``, its public key in
SubjectPublicKeyInfo PEM. Both are the standard formats that
``openssl pkey`` reads.

A private key file is created with mode 0600 in the ``os.open`` call, and
:func:`load_signing_key` rejects a file whose mode gives group or others any
access, like the Paillier private key files of :mod:`.keyfile`.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gradchain.crypto.keyfile import PRIVATE_FILE_MODE, StrPath
from gradchain.errors import CryptoError

logger = logging.getLogger(__name__)

PRIVATE_SUFFIX = ".sign.key"
PUBLIC_SUFFIX = ".sign.pub"


def private_key_path(folder: Path, participant: str) -> Path:
    """Return the path of the signing private key file of ``participant``."""
    return folder / f"{participant}{PRIVATE_SUFFIX}"


def public_key_path(folder: Path, participant: str) -> Path:
    """Return the path of the signing public key file of ``participant``."""
    return folder / f"{participant}{PUBLIC_SUFFIX}"


def save_signing_key(private_path: StrPath, public_path: StrPath, key: Ed25519PrivateKey) -> None:
    """Write ``key`` to ``private_path`` with mode 0600 and its public key to ``public_path``.

    Raises CryptoError when a file cannot be written.
    """
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
        with os.fdopen(fd, "wb") as file:
            # os.open applies the mode only when it creates the file, and the umask
            # can narrow it further. fchmod sets exactly 0600 in both cases.
            os.fchmod(file.fileno(), PRIVATE_FILE_MODE)
            file.write(private_pem)
    except OSError as exc:
        raise CryptoError(
            f"{os.fspath(private_path)}: failed to write signing key file: {exc.strerror}"
        ) from exc
    try:
        with open(public_path, "wb") as file:
            file.write(public_pem)
    except OSError as exc:
        raise CryptoError(
            f"{os.fspath(public_path)}: failed to write signing public key file: {exc.strerror}"
        ) from exc


def create_signing_key(folder: Path, participant: str) -> bool:
    """Create the signing key pair of ``participant`` in ``folder`` unless its private key exists.

    Returns whether a new pair was written. An existing private key file
    whose public key file is missing gets the public key file written again.
    """
    private_path = private_key_path(folder, participant)
    public_path = public_key_path(folder, participant)
    folder.mkdir(parents=True, exist_ok=True)
    if private_path.exists():
        if not public_path.exists():
            key = load_signing_key(private_path)
            save_signing_key(private_path, public_path, key)
        return False
    save_signing_key(private_path, public_path, Ed25519PrivateKey.generate())
    logger.info(
        "wrote the signing key pair of %s to %s and %s", participant, private_path, public_path
    )
    return True


def load_signing_key(path: StrPath) -> Ed25519PrivateKey:
    """Read a signing private key file written by :func:`save_signing_key`.

    Raises CryptoError naming the path when the file is missing, unreadable,
    accessible by group or others, or not an Ed25519 private key in PEM.
    """
    name = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise CryptoError(f"{name}: failed to read signing key file: {exc.strerror}") from exc

    # The mode is checked on the opened descriptor, so a file swapped in after
    # the check cannot be read by mistake.
    with os.fdopen(fd, "rb") as file:
        mode = stat.S_IMODE(os.fstat(file.fileno()).st_mode)
        if mode & 0o077:
            raise CryptoError(
                f"{name}: signing key file has mode {mode:04o}, which lets group or others "
                f"access it. Run `chmod 600 {name}` and check who may have copied the key."
            )
        try:
            data = file.read()
        except OSError as exc:
            raise CryptoError(f"{name}: failed to read signing key file: {exc.strerror}") from exc

    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CryptoError(f"{name}: invalid signing key file: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise CryptoError(
            f"{name}: expected an Ed25519 private key, got {type(key).__name__}; "
            "create the file with `gradchain keys TOPOLOGY`"
        )
    return key


def load_verify_key(path: StrPath) -> Ed25519PublicKey:
    """Read a signing public key file written by :func:`save_signing_key`.

    Raises CryptoError naming the path when the file is missing, unreadable
    or not an Ed25519 public key in PEM.
    """
    name = os.fspath(path)
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise CryptoError(
            f"{name}: failed to read signing public key file: {exc.strerror}"
        ) from exc
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CryptoError(f"{name}: invalid signing public key file: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise CryptoError(
            f"{name}: expected an Ed25519 public key, got {type(key).__name__}; "
            "create the file with `gradchain keys TOPOLOGY`"
        )
    return key
