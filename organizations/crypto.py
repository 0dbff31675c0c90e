"""Provider API keys at rest: MultiFernet over COGNITUDE_ENCRYPTION_KEYS (first encrypts)."""

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class CredentialDecryptionError(Exception):
    """A stored credential cannot be read with any configured key."""


def _fernet() -> MultiFernet:
    return MultiFernet([Fernet(key) for key in settings.COGNITUDE_ENCRYPTION_KEYS])


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise CredentialDecryptionError(
            "Cannot decrypt a provider credential with COGNITUDE_ENCRYPTION_KEYS: "
            "the key that encrypted it is not configured"
        ) from exc


def rotate(token: str) -> str:
    """Re-encrypt with the first key (raises CredentialDecryptionError like decrypt)."""
    try:
        return _fernet().rotate(token.encode()).decode()
    except InvalidToken as exc:
        raise CredentialDecryptionError("Cannot rotate: no configured key decrypts it") from exc
