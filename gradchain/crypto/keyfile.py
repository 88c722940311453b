"""Read and write Paillier keys as JSON files.

A public key file looks like this::

    {"format": 2, "kind": "gradchain-paillier-public-key",
     "fingerprint": "3f1c...", "n": "c5a7...", "hs": "9e01..."}

``hs`` is the DJN obfuscator base (see :mod:`gradchain.crypto.paillier`) and
is left out for a plain Paillier key. A private key file has
``"kind": "gradchain-paillier-private-key"`` and the primes ``"p"`` and ``"q"``
as well. Integers are lowercase hexadecimal strings without a prefix, because
many JSON parsers lose precision on integers past 2**53. ``fingerprint`` is
:attr:`PublicKey.fingerprint`. It lets a reader match a file to the
fingerprint in the logs, and loading checks it against ``n``.

gradchain writes format 2 and reads formats 1 and 2. Format 1 files were
written before DJN keys existed: they have the same fields without ``hs``,
and load as plain Paillier keys. Loading rejects unknown fields and any other
``format`` number.

A new private key file is created with mode 0600 in the ``os.open`` call, so
other users never get to open it. :func:`load_private_key` rejects a file
whose mode gives group or others any access.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from typing import Any

from gradchain.crypto.paillier import PrivateKey, PublicKey
from gradchain.errors import CryptoError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
PUBLIC_KIND = "gradchain-paillier-public-key"
PRIVATE_KIND = "gradchain-paillier-private-key"

_PUBLIC_FIELDS = frozenset({"format", "kind", "fingerprint", "n"})
_PRIVATE_FIELDS = _PUBLIC_FIELDS | {"p", "q"}

# Fields that a file of the given format may leave out.
_OPTIONAL_FIELDS: dict[int, frozenset[str]] = {1: frozenset(), 2: frozenset({"hs"})}

PRIVATE_FILE_MODE = 0o600

StrPath = str | os.PathLike[str]


def save_public_key(path: StrPath, key: PublicKey) -> None:
    """Write ``key`` to ``path`` as a public key file, replacing any file there.

    Raises CryptoError when the file cannot be written.
    """
    document = {
        "format": FORMAT_VERSION,
        "kind": PUBLIC_KIND,
        "fingerprint": key.fingerprint,
        "n": _to_hex(key.n),
    }
    if key.hs is not None:
        document["hs"] = _to_hex(key.hs)
    text = json.dumps(document, indent=2) + "\n"
    try:
        with open(path, "w", encoding="utf-8") as file:
            file.write(text)
    except OSError as exc:
        message = f"{os.fspath(path)}: failed to write public key file: {exc.strerror}"
        raise CryptoError(message) from exc
    logger.info("wrote public key %s to %s", key.fingerprint, os.fspath(path))


def save_private_key(path: StrPath, key: PrivateKey) -> None:
    """Write ``key`` to ``path`` as a private key file with mode 0600.

    The file is created with mode 0600 by ``os.open``. If it already existed
    with a wider mode, ``fchmod`` narrows it to 0600 before anything is
    written, and the old content is truncated.

    NOTE: narrowing the mode of an existing file does not revoke descriptors
    that other processes opened earlier. Delete an old world-readable file
    instead of overwriting it if that matters.

    Raises CryptoError when the file cannot be written.
    """
    public_key = key.public_key
    document = {
        "format": FORMAT_VERSION,
        "kind": PRIVATE_KIND,
        "fingerprint": public_key.fingerprint,
        "n": _to_hex(public_key.n),
        "p": _to_hex(key.p),
        "q": _to_hex(key.q),
    }
    if public_key.hs is not None:
        document["hs"] = _to_hex(public_key.hs)
    data = (json.dumps(document, indent=2) + "\n").encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
        with os.fdopen(fd, "wb") as file:
            # os.open applies the mode only when it creates the file, and the umask
            # can narrow it further. fchmod sets exactly 0600 in both cases.
            os.fchmod(file.fileno(), PRIVATE_FILE_MODE)
            file.write(data)
    except OSError as exc:
        message = f"{os.fspath(path)}: failed to write private key file: {exc.strerror}"
        raise CryptoError(message) from exc
    logger.info("wrote private key %s to %s", public_key.fingerprint, os.fspath(path))


def load_public_key(path: StrPath) -> PublicKey:
    """Read a public key file written by :func:`save_public_key`.

    Raises CryptoError naming the path and the problem when the file is
    missing, unreadable, not JSON, of another kind or format, or inconsistent.
    """
    name = os.fspath(path)
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise CryptoError(f"{name}: failed to read public key file: {exc.strerror}") from exc

    document = _parse_document(name, data, PUBLIC_KIND, _PUBLIC_FIELDS)
    return _public_key_from_document(name, document)


def load_private_key(path: StrPath) -> PrivateKey:
    """Read a private key file written by :func:`save_private_key`.

    Raises CryptoError naming the path and the problem when the file is
    missing, unreadable, accessible by group or others, not JSON, of another
    kind or format, or when ``p`` and ``q`` are not distinct prime factors of
    ``n`` (see :class:`PrivateKey`).
    """
    name = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise CryptoError(f"{name}: failed to read private key file: {exc.strerror}") from exc

    # The mode is checked on the opened descriptor, so a file swapped in after
    # the check cannot be read by mistake.
    with os.fdopen(fd, "rb") as file:
        mode = stat.S_IMODE(os.fstat(file.fileno()).st_mode)
        if mode & 0o077:
            raise CryptoError(
                f"{name}: private key file has mode {mode:04o}, which lets group or others "
                f"access it. Run `chmod 600 {name}` and check who may have copied the key."
            )
        try:
            data = file.read()
        except OSError as exc:
            raise CryptoError(f"{name}: failed to read private key file: {exc.strerror}") from exc

    document = _parse_document(name, data, PRIVATE_KIND, _PRIVATE_FIELDS)
    public_key = _public_key_from_document(name, document)
    p = _hex_field(name, document, "p")
    q = _hex_field(name, document, "q")

    if p * q != public_key.n:
        raise CryptoError(
            f"{name}: p * q != n, so the file is corrupt or its fields come from different keys"
        )
    try:
        return PrivateKey(public_key=public_key, p=p, q=q)
    except CryptoError as exc:
        raise CryptoError(f"{name}: {exc}") from exc


def _to_hex(value: int) -> str:
    return format(value, "x")


def _parse_document(name: str, data: bytes, kind: str, fields: frozenset[str]) -> dict[str, Any]:
    """Parse and check the JSON envelope: an object with the expected kind, format and fields."""
    try:
        document = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise CryptoError(f"{name}: key file is not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise CryptoError(
            f"{name}: key file is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc

    if not isinstance(document, dict):
        raise CryptoError(
            f"{name}: key file must contain a JSON object, found {type(document).__name__}"
        )

    found_kind = document.get("kind")
    if found_kind != kind:
        raise CryptoError(f"{name}: expected kind {kind!r}, found {found_kind!r}")

    found_format = document.get("format")
    if (
        isinstance(found_format, bool)
        or not isinstance(found_format, int)
        or found_format not in READABLE_FORMATS
    ):
        readable = " and ".join(str(number) for number in READABLE_FORMATS)
        raise CryptoError(
            f"{name}: unsupported format {found_format!r} "
            f"(this version of gradchain reads formats {readable})"
        )

    missing = sorted(fields - document.keys())
    if missing:
        raise CryptoError(f"{name}: missing fields: {', '.join(missing)}")
    unknown = sorted(document.keys() - fields - _OPTIONAL_FIELDS[found_format])
    if unknown:
        raise CryptoError(f"{name}: unknown fields: {', '.join(unknown)}")
    return document


def _hex_field(name: str, document: dict[str, Any], field_name: str) -> int:
    """Parse a positive integer stored as a lowercase hex string without prefix."""
    text = document[field_name]
    if not isinstance(text, str) or not text or any(ch not in "0123456789abcdef" for ch in text):
        raise CryptoError(f"{name}: field {field_name!r} must be a lowercase hexadecimal string")
    value = int(text, 16)
    if value == 0:
        raise CryptoError(f"{name}: field {field_name!r} must be positive")
    return value


def _public_key_from_document(name: str, document: dict[str, Any]) -> PublicKey:
    n = _hex_field(name, document, "n")
    if n < 3:
        raise CryptoError(f"{name}: field 'n' must be at least 3")
    hs = _hex_field(name, document, "hs") if "hs" in document else None
    try:
        public_key = PublicKey(n=n, hs=hs)
    except ValueError as exc:
        raise CryptoError(f"{name}: field 'hs' is invalid: {exc}") from exc
    if document["fingerprint"] != public_key.fingerprint:
        raise CryptoError(
            f"{name}: fingerprint {document['fingerprint']!r} does not match n "
            f"(n has fingerprint {public_key.fingerprint!r}); the file was edited or corrupted"
        )
    return public_key
