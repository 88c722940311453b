"""A provider's own contribution: gradient, random scale, encryption.

This is the only code that sees a provider's plaintext gradient g_i and its
random scale a_i. Both stay in local variables of :func:`compute_contribution`
and leave it only inside Paillier ciphertexts.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import numpy as np

from ..crypto import PublicKey, encode_unencrypted_vector, encrypt_vector
from ..crypto.encoding import Encoding
from ..crypto.obfuscators import ObfuscatorPool
from ..models import Model
from ..models.interface import provider_gradient

#: Bits of randomness in a scale a_i; 53 is what a float64 mantissa holds.
SCALE_BITS = 53


def draw_scale() -> float:
    """Draw a_i uniformly from (0, 1] with a cryptographic random source."""
    numerator: int = secrets.randbits(SCALE_BITS) + 1
    return numerator / float(2**SCALE_BITS)


@dataclass(frozen=True, kw_only=True)
class EncryptedContribution:
    """Ciphertexts of [a_i·g_i..., a_i] and the number of clipped values."""

    ciphertexts: tuple[int, ...]
    clipped: int


def compute_contribution(
    *,
    model: Model,
    features: np.ndarray,
    labels: np.ndarray,
    theta: np.ndarray,
    public_key: PublicKey,
    encoding: Encoding,
    randomise: bool,
    state: object | None = None,
    obfuscators: ObfuscatorPool | None = None,
    encrypt: bool = True,
) -> EncryptedContribution:
    """Compute g_i(θ) over this provider's rows, scale it by a_i and encrypt it.

    ``state`` is the provider's local model state (see
    :func:`gradchain.models.interface.create_local_state`), or None.
    ``obfuscators`` is a pool of precomputed r^n (or h_s^r) values for
    ``public_key``; without one they are computed here.
    With ``randomise`` off, a_i = 1 so that a run can be compared exactly with
    plaintext distributed gradient descent. With ``encrypt`` off (the
    benchmark-only ``crypto.encryption = false``) the values are encoded
    without an obfuscator and anyone can read them.
    """
    gradient = provider_gradient(model, theta, features, labels, state)
    scale = draw_scale() if randomise else 1.0
    values = np.append(scale * gradient, scale)
    if encrypt:
        ciphertexts, clipped = encrypt_vector(public_key, encoding, values, obfuscators=obfuscators)
    else:
        ciphertexts, clipped = encode_unencrypted_vector(public_key, encoding, values)
    return EncryptedContribution(ciphertexts=tuple(ciphertexts), clipped=clipped)
