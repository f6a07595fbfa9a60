"""Moderations: free, so a call consumed nothing that is billed."""

from __future__ import annotations

from proxy.metering.extractors.base import MeteredCall, NoEstimate
from proxy.metering.tap import ResponseTap
from proxy.metering.usage import Usage


class ModerationsExtractor(NoEstimate):
    def reported(self, call: MeteredCall, tap: ResponseTap) -> Usage | None:
        return Usage()
