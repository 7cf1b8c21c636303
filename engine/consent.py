"""Unsubscribe links: signed, verifiable tokens for one-click unsubscribe (RFC 8058)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from urllib.parse import urlencode

from engine.settings import Settings

SECRET_ENV = "PLAYBOOK_UNSUBSCRIBE_SECRET"


def _secret(settings: Settings) -> bytes | None:
    email = settings.connectors.email if settings.connectors else None
    if email and email.unsubscribe_secret:
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


def unsubscribe_url(settings: Settings, address: str) -> str:
    """The one-click unsubscribe URL for an address, or '' when no endpoint is configured."""
    email = settings.connectors.email if settings.connectors else None
    base = email.unsubscribe_url if email else None
    secret = _secret(settings) if base else None
    if not base or not secret:
        return ""
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}{urlencode({'e': address, 't': sign(secret, address)})}"
