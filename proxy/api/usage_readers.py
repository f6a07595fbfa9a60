"""Who may read `/usage/*`, and whose usage: the admin key reads every team's, a team's proxy key
only its own team's.

A credential that looks like a proxy key (`sk-mp-...`) must be a usable one, as on `/v1/*`: an
unknown, revoked or expired key gets a 401 whether or not an admin key is set. Without
METERING_ADMIN_KEY, any other caller reads every team's usage (the routes are open).
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from pydantic import SecretStr

from proxy.access.directory import AccessDirectory
from proxy.access.secrets import is_proxy_key
from proxy.api.common import Unauthorized, bearer_token, presents_admin_key
from proxy.callers import usable_key
from proxy.clock import Clock
from proxy.errors import ProxyError


class OtherTeamsUsage(ProxyError):
    status = 403
    error_type = "invalid_request_error"
    code = "team_not_allowed"


@dataclass(frozen=True, slots=True)
class UsageReader:
    """Whose usage the caller may read: one team's, or every team's (`team` is None)."""

    team: str | None = None

    def team_filter(self, asked: str | None) -> str | None:
        """The team a report keeps: the one asked for, or for a team's key its own team.

        A team's key asking for another team is refused (403) rather than silently answered
        with its own team's figures, which a dashboard would show under the other team's name.
        """
        if self.team is None:
            return asked
        if asked is not None and asked != self.team:
            raise OtherTeamsUsage(
                f"This proxy key reads only the usage of its own team, `{self.team}`.",
                param="team",
            )
        return self.team


EVERY_TEAM = UsageReader()


async def usage_reader(request: Request) -> UsageReader:
    """The reader of a `/usage/*` call, from its `Authorization: Bearer` credential."""
    state = request.app.state
    admin_key: SecretStr | None = state.admin_key
    if admin_key is not None and presents_admin_key(request, admin_key):
        return EVERY_TEAM
    credential = bearer_token(request)
    if credential is not None and is_proxy_key(credential):
        access: AccessDirectory = state.access
        clock: Clock = state.clock
        return UsageReader(team=usable_key(credential, access.snapshot, clock()).team)
    if admin_key is not None:
        raise Unauthorized(
            "Reading usage needs `Authorization: Bearer` with the admin key or a team's proxy key."
        )
    return EVERY_TEAM
