"""Read and write the Ed25519 signing keys and X25519 sealing keys of nodes and the learner.

Every participant ``ID`` of a signed deployment has two files in the
topology's signing keys folder: ``ID.sign.key``, its private key in
unencrypted PKCS#8 PEM, and ``ID.sign.pub``, its public key in
SubjectPublicKeyInfo PEM. Both are the standard formats that
``openssl pkey`` reads. A topology that seals inbox messages adds
``ID.seal.key`` and ``ID.seal.pub``, the X25519 key pair that senders
encrypt Contributions and Acks to (see :mod:`gradchain.protocol.sealing`),
in the same formats.

A private key file is created with mode 0600 in the ``os.open`` call, and
:func:`load_signing_key` and :func:`load_sealing_key` reject a file whose
mode gives group or others any access, like the Paillier private key files
of :mod:`.keyfile`.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import cast

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from gradchain.crypto.keyfile import PRIVATE_FILE_MODE, StrPath
from gradchain.errors import CryptoError

logger = logging.getLogger(__name__)

PRIVATE_SUFFIX = ".sign.key"
PUBLIC_SUFFIX = ".sign.pub"
SEAL_PRIVATE_SUFFIX = ".seal.key"
SEAL_PUBLIC_SUFFIX = ".seal.pub"


def private_key_path(folder: Path, participant: str) -> Path:
    """Return the path of the signing private key file of ``participant``."""
    return folder / f"{participant}{PRIVATE_SUFFIX}"


def public_key_path(folder: Path, participant: str) -> Path:
    """Return the path of the signing public key file of ``participant``."""
    return folder / f"{participant}{PUBLIC_SUFFIX}"


def seal_private_key_path(folder: Path, participant: str) -> Path:
    """Return the path of the sealing private key file of ``participant``."""
    return folder / f"{participant}{SEAL_PRIVATE_SUFFIX}"


def seal_public_key_path(folder: Path, participant: str) -> Path:
    """Return the path of the sealing public key file of ``participant``."""
    return folder / f"{participant}{SEAL_PUBLIC_SUFFIX}"


def save_signing_key(
    private_path: StrPath,
    public_path: StrPath,
    key: Ed25519PrivateKey | X25519PrivateKey,
    *,
    kind: str = "signing",
) -> None:
    """Write ``key`` to ``private_path`` with mode 0600 and its public key to ``public_path``.

    ``kind`` names the key in error messages. Raises CryptoError when a file
    cannot be written.
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
            f"{os.fspath(private_path)}: failed to write {kind} key file: {exc.strerror}"
        ) from exc
    try:
        with open(public_path, "wb") as file:
            file.write(public_pem)
    except OSError as exc:
        raise CryptoError(
            f"{os.fspath(public_path)}: failed to write {kind} public key file: {exc.strerror}"
        ) from exc


def create_signing_key(folder: Path, participant: str) -> bool:
    """Create the signing key pair of ``participant`` in ``folder`` unless its private key exists.

    Returns whether a new pair was written. An existing private key file
    whose public key file is missing gets the public key file written again.
    """
    return _create_key_pair(
        folder,
        participant,
        private_path=private_key_path(folder, participant),
        public_path=public_key_path(folder, participant),
        kind="signing",
        generate=Ed25519PrivateKey.generate,
        load=load_signing_key,
    )


def create_sealing_key(folder: Path, participant: str) -> bool:
    """Create the sealing key pair of ``participant`` in ``folder`` unless its private key exists.

    Returns whether a new pair was written. An existing private key file
    whose public key file is missing gets the public key file written again.
    """
    return _create_key_pair(
        folder,
        participant,
        private_path=seal_private_key_path(folder, participant),
        public_path=seal_public_key_path(folder, participant),
        kind="sealing",
        generate=X25519PrivateKey.generate,
        load=load_sealing_key,
    )


def _create_key_pair(
    folder: Path,
    participant: str,
    *,
    private_path: Path,
    public_path: Path,
    kind: str,
    generate: Callable[[], Ed25519PrivateKey | X25519PrivateKey],
    load: Callable[[StrPath], Ed25519PrivateKey | X25519PrivateKey],
) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    if private_path.exists():
        if not public_path.exists():
            save_signing_key(private_path, public_path, load(private_path), kind=kind)
        return False
    save_signing_key(private_path, public_path, generate(), kind=kind)
    logger.info(
        "wrote the %s key pair of %s to %s and %s", kind, participant, private_path, public_path
    )
    return True


def load_sealing_key(path: StrPath) -> X25519PrivateKey:
    """Read a sealing private key file written by :func:`create_sealing_key`.

    Raises CryptoError naming the path when the file is missing, unreadable,
    accessible by group or others, or not an X25519 private key in PEM.
    """
    key = _load_pem_key(path, kind="sealing", algorithm="X25519", expected=X25519PrivateKey)
    return cast(X25519PrivateKey, key)


def load_seal_public_key(path: StrPath) -> X25519PublicKey:
    """Read a sealing public key file written by :func:`create_sealing_key`.

    Raises CryptoError naming the path when the file is missing, unreadable
    or not an X25519 public key in PEM.
    """
    key = _load_pem_key(path, kind="sealing", algorithm="X25519", expected=X25519PublicKey)
    return cast(X25519PublicKey, key)


def load_signing_key(path: StrPath) -> Ed25519PrivateKey:
    """Read a signing private key file written by :func:`save_signing_key`.

    Raises CryptoError naming the path when the file is missing, unreadable,
    accessible by group or others, or not an Ed25519 private key in PEM.
    """
    key = _load_pem_key(path, kind="signing", algorithm="Ed25519", expected=Ed25519PrivateKey)
    return cast(Ed25519PrivateKey, key)


def _read_private_file(path: StrPath, kind: str) -> bytes:
    """Read a private key file, rejecting a mode that gives group or others any access."""
    name = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise CryptoError(f"{name}: failed to read {kind} key file: {exc.strerror}") from exc

    # The mode is checked on the opened descriptor, so a file swapped in after
    # the check cannot be read by mistake.
    with os.fdopen(fd, "rb") as file:
        mode = stat.S_IMODE(os.fstat(file.fileno()).st_mode)
        if mode & 0o077:
            raise CryptoError(
                f"{name}: {kind} key file has mode {mode:04o}, which lets group or others "
                f"access it. Run `chmod 600 {name}` and check who may have copied the key."
            )
        try:
            data: bytes = file.read()
        except OSError as exc:
            raise CryptoError(f"{name}: failed to read {kind} key file: {exc.strerror}") from exc
    return data


def load_verify_key(path: StrPath) -> Ed25519PublicKey:
    """Read a signing public key file written by :func:`save_signing_key`.

    Raises CryptoError naming the path when the file is missing, unreadable
    or not an Ed25519 public key in PEM.
    """
    key = _load_pem_key(path, kind="signing", algorithm="Ed25519", expected=Ed25519PublicKey)
    return cast(Ed25519PublicKey, key)


_PRIVATE_KEY_TYPES = (Ed25519PrivateKey, X25519PrivateKey)


def _load_pem_key(path: StrPath, *, kind: str, algorithm: str, expected: type) -> object:
    """Read one PEM key file and return its key, which is an instance of ``expected``.

    Raises CryptoError naming the path when the file cannot be read or parsed,
    or contains another type of key. A private key file also gets the mode
    check of :func:`_read_private_file`. ``kind`` ("signing" or "sealing")
    and ``algorithm`` name the key in error messages.
    """
    name = os.fspath(path)
    private = issubclass(expected, _PRIVATE_KEY_TYPES)
    visibility = "private" if private else "public"
    loaded: object
    if private:
        data = _read_private_file(path, kind)
        try:
            loaded = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise CryptoError(f"{name}: invalid {kind} key file: {exc}") from exc
    else:
        try:
            with open(path, "rb") as file:
                data = file.read()
        except OSError as exc:
            raise CryptoError(
                f"{name}: failed to read {kind} public key file: {exc.strerror}"
            ) from exc
        try:
            loaded = serialization.load_pem_public_key(data)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise CryptoError(f"{name}: invalid {kind} public key file: {exc}") from exc

    if not isinstance(loaded, expected):
        raise CryptoError(
            f"{name}: expected an {algorithm} {visibility} key, got {type(loaded).__name__}; "
            "create the file with `gradchain keys TOPOLOGY`"
        )
    return loaded
