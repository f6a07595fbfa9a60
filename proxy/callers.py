"""Who is calling: the seam where proxy keys and teams plug in.

Today every caller is in the `default` team and its own key, if any, is what passthrough mode
forwards upstream. Proxy keys will resolve here to a team instead (and be refused here when they
are unknown), so that nothing downstream changes and managed mode never sees the client's key.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.upstream.headers import RawHeaders, client_credential

DEFAULT_TEAM = "default"


@dataclass(frozen=True, slots=True)
class Caller:
    team: str
    # The client's own upstream key, forwarded only to upstreams in passthrough mode.
    passthrough_credential: str | None


def identify_caller(headers: RawHeaders) -> Caller:
    """The caller of a `/v1/*` call, from its headers."""
    return Caller(team=DEFAULT_TEAM, passthrough_credential=client_credential(headers))
