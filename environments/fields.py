"""A text field encrypted at rest with Fernet.

Written here rather than taken from django-fernet-encrypted-fields because that package
returns the ciphertext as the value when decryption fails: a wrong key would then send
ciphertext to a remote host as a password. This one raises instead.
"""

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models


class SecretDecryptionError(Exception):
    """A stored secret cannot be read with the configured FIELD_ENCRYPTION_KEY."""


def _fernet() -> MultiFernet:
    keys = list(settings.FIELD_ENCRYPTION_KEYS)
    if not keys:
        digest = hashlib.sha256(b"powerautomation.field-encryption:" + settings.SECRET_KEY.encode()).digest()
        keys = [base64.urlsafe_b64encode(digest).decode()]
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except ValueError:
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEY must be comma-separated Fernet keys (32 url-safe base64-encoded bytes each)"
        ) from None


def encrypt(value: str) -> str:
    return _fernet().encrypt(value.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretDecryptionError(
            "a stored secret cannot be decrypted: FIELD_ENCRYPTION_KEY (or DJANGO_SECRET_KEY) "
            "is not the key it was saved with"
        ) from None


class EncryptedTextField(models.TextField):
    """Stores a Fernet token; reads back the plain value. Empty stays empty, so "not set"
    is visible without decrypting anything."""

    def from_db_value(self, value, expression, connection):
        if not value:
            return value
        return decrypt(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if not value:
            return value
        return encrypt(value)
