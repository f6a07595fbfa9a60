"""Who is calling: a proxy key names its team, key and end user; anyone else is `default`.

A credential that looks like a proxy key (`sk-mp-...`) must be one: unknown, revoked and expired
keys get a 401 and the call goes no further. Such a key is never forwarded upstream. Any other
credential is the client's own upstream key, forwarded in passthrough mode, unless the config
requires proxy keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase

from proxy.access.directory import AccessSnapshot
from proxy.access.secrets import hash_of, is_proxy_key
from proxy.access.store import Key
from proxy.errors import Refused
from proxy.upstream.headers import RawHeaders, client_credential

DEFAULT_TEAM = "default"


class InvalidProxyKey(Refused):
    status = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [*super().headers(), (b"www-authenticate", b"Bearer")]


class ModelNotAllowed(Refused):
    status = 403
    error_type = "invalid_request_error"
    code = "model_not_allowed"


@dataclass(frozen=True, slots=True)
class Caller:
    team: str
    # The client's own upstream key, forwarded only to upstreams in passthrough mode.
    passthrough_credential: str | None
    key: Key | None = None

    @property
    def key_id(self) -> str | None:
        return None if self.key is None else self.key.id

    def check_model(self, model: str) -> None:
        """Refuse a model outside the key's allow-list."""
        allowed = None if self.key is None else self.key.models
        if allowed is not None and not any(fnmatchcase(model, glob) for glob in allowed):
            raise ModelNotAllowed(
                f"This proxy key may not call the model `{model}`.", param="model"
            )


ANONYMOUS = Caller(team=DEFAULT_TEAM, passthrough_credential=None)


def identify_caller(
    headers: RawHeaders, access: AccessSnapshot, now: datetime, require_key: bool
) -> Caller:
    """The caller of a `/v1/*` call, from its headers and the keys in memory."""
    credential = client_credential(headers)
    if credential is None or not is_proxy_key(credential):
        if require_key:
            raise InvalidProxyKey(
                "This proxy requires a proxy key: pass it as the API key "
                "(`Authorization: Bearer sk-mp-...`)."
            )
        return Caller(team=DEFAULT_TEAM, passthrough_credential=credential)
    key = usable_key(credential, access, now)
    return Caller(team=key.team, passthrough_credential=None, key=key)


def usable_key(credential: str, access: AccessSnapshot, now: datetime) -> Key:
    """The key a proxy key (`sk-mp-...`) is; InvalidProxyKey if unknown, revoked or expired."""
    # A dict lookup by the SHA-256, not a constant-time comparison: why that leaks nothing about
    # any key is in proxy/access/secrets.py.
    key = access.keys_by_hash.get(hash_of(credential))
    if key is None:
        raise InvalidProxyKey("Incorrect proxy key provided.")
    if key.revoked_at is not None and key.revoked_at <= now:
        raise InvalidProxyKey(f"The proxy key {key.prefix}... has been revoked.")
    usable_until = key.usable_until()
    if usable_until is not None and usable_until <= now:
        raise InvalidProxyKey(f"The proxy key {key.prefix}... has expired.")
    return key
