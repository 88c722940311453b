"""A provider's own contribution: gradient, randomisation, encryption.

This is the only code that handles a provider's plaintext gradient g_i and the
random numbers its randomiser draws (see :mod:`gradchain.randomisers`). Both
stay in local variables of :func:`compute_contribution` and leave it only
inside Paillier ciphertexts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..crypto import PublicKey, encrypt_portions
from ..crypto.encoding import Encoding
from ..crypto.obfuscators import ObfuscatorPool
from ..models import Model
from ..models.interface import provider_gradient
from ..randomisers import Randomiser, ScalarRandomiser


@dataclass(frozen=True, kw_only=True)
class EncryptedContribution:
    """Ciphertexts of the randomised gradient and the number of clipped values."""

    ciphertexts: tuple[int, ...]
    clipped: int
    #: The contribution split into random shares, one ciphertext vector per portion,
    #: when the provider splits it; ``ciphertexts`` is then empty.
    portions: tuple[tuple[int, ...], ...] = ()


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
    portions: int = 1,
    randomiser: Randomiser | None = None,
) -> EncryptedContribution:
    """Compute g_i(θ) over this provider's rows, randomise it and encrypt it.

    ``state`` is the provider's local model state (see
    :func:`gradchain.models.interface.create_local_state`), or None.
    ``obfuscators`` is a pool of precomputed r^n (or h_s^r) values for
    ``public_key``; without one they are computed here.
    ``randomiser`` is the job's randomiser, the scalar one when None. With
    ``randomise`` off it draws no random numbers (a_i = 1 for the scalar one),
    so that a run can be compared exactly with plaintext distributed gradient
    descent. ``clipped`` in the result counts the gradient elements that the
    randomiser or the encoding clipped. With ``encrypt`` off (the
    benchmark-only ``crypto.encryption = false``) the values are encoded
    without an obfuscator and anyone can read them. With ``portions`` above
    1 the encoded vector is split into that many random shares mod n (see
    :func:`gradchain.crypto.encrypt_portions`), one for each aggregator.
    """
    gradient = provider_gradient(model, theta, features, labels, state)
    randomised = (randomiser or ScalarRandomiser()).randomise(gradient, draw_random=randomise)
    values = randomised.values
    split, clipped = encrypt_portions(
        public_key, encoding, values, portions, obfuscators=obfuscators, encrypt=encrypt
    )
    clipped += randomised.clipped
    if portions > 1:
        return EncryptedContribution(
            ciphertexts=(), clipped=clipped, portions=tuple(tuple(part) for part in split)
        )
    return EncryptedContribution(ciphertexts=tuple(split[0]), clipped=clipped)
