"""Unsubscribe links: signed, verifiable tokens for one-click unsubscribe (RFC 8058)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from urllib.parse import urlencode

from typing import Any

SECRET_ENV = "PLAYBOOK_UNSUBSCRIBE_SECRET"


def _email_block(settings: Any) -> Any:
    """The email connector's config block, where the unsubscribe endpoint and its secret are configured."""
    return None if settings.connectors is None else getattr(settings.connectors, "email", None)


def secret(settings: Any) -> bytes | None:
    """The secret that signs unsubscribe links: connectors.email.unsubscribe_secret, else $PLAYBOOK_UNSUBSCRIBE_SECRET."""
    email = _email_block(settings)
    if getattr(email, "unsubscribe_secret", None):
        return email.unsubscribe_secret.get_secret_value().encode()
    value = os.environ.get(SECRET_ENV)
    return value.encode() if value else None


def sign(secret: bytes, address: str) -> str:
    """The token that proves an unsubscribe link was issued for this address."""
    mac = hmac.new(secret, address.strip().lower().encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def verify(secret: bytes, address: str, token: str) -> bool:
    """True when `token` was issued for `address` with `secret`."""
    return hmac.compare_digest(sign(secret, address), token)


def unsubscribe_url(settings: Any, address: str) -> str:
    """The one-click unsubscribe URL for an address, or '' when no endpoint is configured."""
    base = getattr(_email_block(settings), "unsubscribe_url", None)
    key = secret(settings) if base else None
    if not base or not key:
        return ""
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}{urlencode({'e': address, 't': sign(key, address)})}"
