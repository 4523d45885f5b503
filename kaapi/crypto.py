"""Encryption of secrets at rest (LLM provider credentials, webhook signing secrets): Fernet (AES-128-CBC +
HMAC-SHA256) with key rotation.

Keys come from ``CREDENTIALS_ENCRYPTION_KEYS`` (newest first); when it is unset one key is derived from
``SECRET_KEY`` with HKDF, so changing ``SECRET_KEY`` then makes stored secrets unreadable. (The HKDF ``info``
still names provider credentials, their first use: changing it would make stored values unreadable.)
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.db import models


class CredentialDecryptionError(Exception):
    """A stored secret cannot be decrypted with the configured keys."""


def derive_key(secret: str) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"kaapi llm provider credentials")
    return base64.urlsafe_b64encode(hkdf.derive(secret.encode()))


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...], secret_key: str) -> MultiFernet:
    raw = [key.encode() for key in keys] or [derive_key(secret_key)]
    return MultiFernet([Fernet(key) for key in raw])


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.CREDENTIALS_ENCRYPTION_KEYS), settings.SECRET_KEY)


def encrypt(plaintext: str) -> str:
    return fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise CredentialDecryptionError(
            "the stored secret cannot be decrypted with the configured CREDENTIALS_ENCRYPTION_KEYS"
        ) from None


# How each app re-encrypts the secrets it stores with these keys (registered in its AppConfig.ready), by what they
# are: a key rotation (``manage.py rotate_llm_credentials``) runs them all.
_reencrypters: dict[str, Callable[[], int]] = {}


def register_reencryption(what: str, reencrypt: Callable[[], int]) -> None:
    """``reencrypt()`` stores every secret of one kind again under the newest key and returns how many."""
    _reencrypters[what] = reencrypt


def reencrypt_all() -> dict[str, int]:
    """Re-encrypt every registered kind of secret under the newest key; how many of each."""
    return {what: reencrypt() for what, reencrypt in _reencrypters.items()}


def rotate(token: str) -> str:
    """Re-encrypt ``token`` under the newest key."""
    try:
        return fernet().rotate(token.encode()).decode()
    except InvalidToken:
        raise CredentialDecryptionError("the stored secret cannot be decrypted; it was not rotated") from None


class EncryptedCharField(models.CharField):
    """A CharField stored encrypted (``encrypt``/``decrypt`` above); Python code sees the plaintext.

    The empty string stays empty (so ``blank`` fields read as such), and the column cannot be searched.
    """

    def from_db_value(self, value, expression, connection):
        return decrypt(value) if value else value

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        return encrypt(value) if value else value
