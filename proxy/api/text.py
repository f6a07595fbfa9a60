"""Text the JSON APIs take in: only what both ledger engines can store and compare.

Postgres refuses a NUL character in text, and neither engine's driver can encode a lone
surrogate (which a JSON body may carry as an escape): such a value is a 400 naming its
parameter, not a database failure.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def _storable(value: str) -> str:
    if "\x00" in value:
        raise ValueError("text must not contain NUL characters")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from None
    return value


Text = Annotated[str, AfterValidator(_storable)]
