"""`metering-proxy teams | keys | budgets` as operators run them, straight on the database."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.access import version
from proxy.cli import main
from proxy.ledger.database import create_ledger_engine
from proxy.ledger.migrations import upgrade_to_head
from proxy.ledger.models import Base, BudgetLeaseRow, BudgetRow, BudgetSpendRow, KeyRow
from tests.support.process import CLI


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.code == 0, self.err
        return json.loads(self.out)


async def run(*arguments: str) -> Run:
    """`metering-proxy ARGUMENTS` in this process (its own event loop, in a thread)."""
    out, err = io.StringIO(), io.StringIO()

    def call() -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                return main(list(arguments))
            except SystemExit as exit:  # argparse refusing the arguments
                return int(exit.code or 0)

    code = await asyncio.to_thread(call)
    return Run(code, out.getvalue(), err.getvalue())


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The commands' environment, without the caller's METERING_* settings; stdin is not a
    terminal, so a command that would ask for confirmation refuses instead."""
    for name in list(os.environ):
        if name.startswith(("METERING_", "OPENAI_")):
            monkeypatch.delenv(name)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    return monkeypatch


@pytest.fixture
async def ledger(database_url: str, environment: pytest.MonkeyPatch) -> AsyncIterator[AsyncEngine]:
    """A migrated ledger that the commands run in this process use, and an engine on it."""
    environment.setenv("METERING_DATABASE_URL", database_url)
    await upgrade_to_head(database_url)
    engine = create_ledger_engine(database_url)
    yield engine
    await engine.dispose()


async def create_key(team: str, *options: str) -> dict[str, Any]:
    document: dict[str, Any] = (
        await run("keys", "create", "--team", team, *options, "--json")
    ).json()
    return document


async def listed_keys(*options: str) -> dict[str, dict[str, Any]]:
    document = (await run("keys", "list", *options, "--json")).json()
    return {key["id"]: key for key in document["data"]}


# Teams


async def test_a_created_team_is_listed(ledger: AsyncEngine) -> None:
    created = await run("teams", "create", "search")
    listed = await run("teams", "list")
    document = (await run("teams", "list", "--json")).json()

    assert (created.code, created.out) == (0, "Created team 'search'.\n")
    assert listed.out.splitlines()[2].split()[0] == "search"
    assert [team["name"] for team in document["data"]] == ["search"]
    assert document["data"][0]["created_at"].endswith("Z")


async def test_creating_a_team_twice_exits_1_saying_it_exists(ledger: AsyncEngine) -> None:
    await run("teams", "create", "search")

    again = await run("teams", "create", "search")

    assert again.code == 1
    assert again.err == "metering-proxy teams: A team named 'search' already exists.\n"


async def test_a_renamed_team_keeps_its_keys(ledger: AsyncEngine) -> None:
    await run("teams", "create", "search")
    key = await create_key("search")

    renamed = await run("teams", "rename", "search", "find", "--json")

    assert renamed.json()["name"] == "find"
    assert (await listed_keys("--team", "find"))[key["id"]]["team"] == "find"


async def test_deleting_a_team_without_a_terminal_needs_yes(ledger: AsyncEngine) -> None:
    await run("teams", "create", "search")
    await create_key("search")

    unconfirmed = await run("teams", "delete", "search")
    confirmed = await run("teams", "delete", "search", "--yes", "--json")

    assert unconfirmed.code == 1
    assert "with its 1 key and its budgets" in unconfirmed.err
    assert "Add --yes to confirm." in unconfirmed.err
    assert confirmed.json() == {"id": "search", "deleted": True}
    assert (await run("teams", "list", "--json")).json() == {"data": []}
    assert await listed_keys() == {}


async def test_an_unknown_team_exits_1_naming_it(ledger: AsyncEngine) -> None:
    results = [
        await run("keys", "create", "--team", "nope"),
        await run("keys", "list", "--team", "nope"),
        await run("teams", "rename", "nope", "other"),
        await run("teams", "delete", "nope", "--yes"),
        await run("budgets", "set", "--team", "nope", "--period", "daily", "--limit-usd", "5"),
        await run("budgets", "show", "--team", "nope"),
    ]

    for result in results:
        assert result.code == 1, result
        assert "No team named 'nope'." in result.err
        assert result.out == ""


# Keys


async def test_a_new_key_is_printed_once_and_stored_only_as_its_hash_and_prefix(
    ledger: AsyncEngine,
) -> None:
    await run("teams", "create", "search")

    created = await run("keys", "create", "--team", "search", "--name", "ci")

    assert created.code == 0, created.err
    secrets = [word for word in created.out.split() if word.startswith("sk-mp-") and len(word) > 20]
    assert len(secrets) == 1
    secret = secrets[0]
    assert "will not be shown again" in created.out
    async with ledger.connect() as connection:
        row = (await connection.execute(select(KeyRow))).one()
        everything = [
            value
            for table in Base.metadata.sorted_tables
            for stored in (await connection.execute(select(table))).all()
            for value in stored
        ]
    assert row.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert row.prefix == secret[:12]
    assert row.id in created.out and row.prefix in created.out
    assert not any(secret in str(value) for value in everything)


async def test_a_key_created_in_json_gives_id_key_prefix_and_team(ledger: AsyncEngine) -> None:
    await run("teams", "create", "search")

    key = await create_key(
        "search", "--models", "gpt-4o*", "o3*", "--end-user", "bot", "--expires-at", "2099-01-01"
    )

    assert key["key"].startswith("sk-mp-") and key["key"].startswith(key["prefix"])
    assert key["id"].startswith("key_") and key["team"] == "search"
    assert key["models"] == ["gpt-4o*", "o3*"]
    assert (key["end_user"], key["expires_at"], key["status"]) == (
        "bot",
        "2099-01-01T00:00:00Z",
        "active",
    )


async def test_the_key_list_shows_prefixes_never_keys(ledger: AsyncEngine) -> None:
    await run("teams", "create", "search")
    key = await create_key("search", "--name", "ci")

    table = await run("keys", "list")
    document = await listed_keys()

    assert table.code == 0
    row = table.out.splitlines()[2].split()
    assert row == [key["id"], "search", "ci", key["prefix"], "any", "-", "never", "active"]
    assert key["key"] not in table.out
    assert "key" not in document[key["id"]]
    assert document[key["id"]]["prefix"] == key["prefix"]


async def test_rotating_prints_a_new_key_and_gives_the_old_one_a_grace_end(
    ledger: AsyncEngine,
) -> None:
    await run("teams", "create", "search")
    old = await create_key("search", "--name", "ci")
    before = datetime.now(UTC)

    rotated = await run("keys", "rotate", old["id"], "--grace-seconds", "600")

    assert rotated.code == 0, rotated.err
    new_secrets = [w for w in rotated.out.split() if w.startswith("sk-mp-") and len(w) > 20]
    assert len(new_secrets) == 1 and new_secrets[0] != old["key"]
    assert "keeps working until" in rotated.out
    keys = await listed_keys()
    assert len(keys) == 2
    grace_end = datetime.fromisoformat(keys[old["id"]]["valid_until"])
    assert before + timedelta(seconds=590) < grace_end < before + timedelta(seconds=610)
    assert keys[old["id"]]["status"] == "rotated"
    (new,) = (key for key in keys.values() if key["id"] != old["id"])
    assert (new["status"], new["name"]) == ("active", "ci")
    table = (await run("keys", "list")).out
    assert f"rotated (grace until {grace_end:%Y-%m-%dT%H:%M:%S}Z)" in table


async def test_a_revoked_key_is_listed_as_revoked(ledger: AsyncEngine) -> None:
    await run("teams", "create", "search")
    key = await create_key("search")

    revoked = await run("keys", "revoke", key["id"])

    assert revoked.code == 0
    assert "it no longer works" in revoked.out
    listed = (await listed_keys())[key["id"]]
    assert listed["status"] == "revoked" and listed["revoked_at"] is not None
    assert (await run("keys", "rotate", key["id"])).code == 1


async def test_update_changes_only_the_options_given(ledger: AsyncEngine) -> None:
    await run("teams", "create", "search")
    key = await create_key("search", "--name", "ci", "--models", "gpt-4o*", "--end-user", "bot")

    named = (await run("keys", "update", key["id"], "--name", "batch", "--json")).json()
    widened = (await run("keys", "update", key["id"], "--any-model", "--json")).json()

    assert (named["name"], named["models"], named["end_user"]) == ("batch", ["gpt-4o*"], "bot")
    assert (widened["name"], widened["models"], widened["end_user"]) == ("batch", None, "bot")


async def test_an_unknown_key_exits_1(ledger: AsyncEngine) -> None:
    for command in ("rotate", "revoke"):
        result = await run("keys", command, "key_missing")
        assert (result.code, result.err) == (
            1,
            "metering-proxy keys: No key with id 'key_missing'.\n",
        )


async def test_a_past_or_malformed_expiry_exits_1(ledger: AsyncEngine) -> None:
    await run("teams", "create", "search")

    past = await run("keys", "create", "--team", "search", "--expires-at", "2020-01-01T00:00:00Z")
    malformed = await run("keys", "create", "--team", "search", "--expires-at", "next week")

    assert past.code == 1 and "--expires-at 2020-01-01T00:00:00Z is in the past." in past.err
    assert malformed.code == 1 and "--expires-at must be an ISO 8601 time" in malformed.err
    assert await listed_keys() == {}


async def test_every_change_moves_the_version_running_proxies_poll(ledger: AsyncEngine) -> None:
    async with ledger.connect() as connection:
        before = await version.current(connection)

    await run("teams", "create", "search")

    async with ledger.connect() as connection:
        assert await version.current(connection) > before


# Budgets


async def test_a_budget_is_set_shown_and_deleted_with_decimal_strings(
    ledger: AsyncEngine,
) -> None:
    await run("teams", "create", "search")
    arguments = ["--team", "search", "--period", "monthly", "--limit-usd", "10.50", "--hard"]

    budget = (await run("budgets", "set", *arguments, "--thresholds", "0.5,0.9", "--json")).json()
    month = await spend_this_month(ledger, "search", "1.2345678", "0.25")
    shown = (await run("budgets", "show", "--team", "search", "--json")).json()
    text = (await run("budgets", "show", "--team", "search")).out
    deleted = (await run("budgets", "delete", "--team", "search", "--json")).json()

    assert budget == {
        "team": "search",
        "key_id": None,
        "period": "monthly",
        "limit_usd": "10.5",
        "hard": True,
        "thresholds": [0.5, 0.9],
        "timezone": "UTC",
        "window_start": None,
        "window_end": None,
    }
    assert shown["spend_usd"] == "1.4845678"
    assert (shown["calls"], shown["unpriced_calls"]) == (3, 1)
    assert shown["reserved_usd"] == "0.75"
    assert shown["limit_usd"] == "10.5"
    assert shown["period_start"] == f"{month:%Y-%m-%dT%H:%M:%S}Z"
    assert "$1.4845678" in text and "$10.50" in text and "$0.75" in text
    assert deleted == {"id": "search", "deleted": True}
    missing = await run("budgets", "show", "--team", "search")
    assert (missing.code, missing.err) == (
        1,
        "metering-proxy budgets: No budget is set for team 'search'.\n",
    )


async def spend_this_month(engine: AsyncEngine, team: str, *costs: str) -> datetime:
    """Record spend in this UTC month (and some the month before), and a live lease of $0.75."""
    now = datetime.now(UTC)
    month = datetime(now.year, now.month, 1, tzinfo=UTC)
    async with engine.begin() as connection:
        budget_id = await connection.scalar(select(BudgetRow.id))
        rows = [
            {"team": team, "key_id": f"k{i}", "bucket_start": month, "calls": 1 + i,
             "unpriced_calls": i, "cost_usd": Decimal(cost)}
            for i, cost in enumerate(costs)
        ]  # fmt: skip
        rows.append(
            {"team": team, "key_id": "k0", "bucket_start": month - timedelta(days=1), "calls": 9,
             "unpriced_calls": 0, "cost_usd": Decimal("100")}
        )  # fmt: skip
        await connection.execute(insert(BudgetSpendRow), rows)
        await connection.execute(
            insert(BudgetLeaseRow),
            {"budget_id": budget_id, "period_start": month, "holder": "replica-1",
             "amount_usd": Decimal("0.75"), "expires_at": now + timedelta(minutes=5)},
        )  # fmt: skip
    return month


async def test_a_key_s_window_budget_is_its_own(ledger: AsyncEngine) -> None:
    await run("teams", "create", "search")
    key = await create_key("search")
    window = ["--window-start", "2026-11-01", "--window-end", "2026-12-01T00:00:00+01:00"]
    options = ["--team", "search", "--key", key["id"]]

    budget = (
        await run("budgets", "set", *options, "--period", "window", "--limit-usd", "1e3", *window,
                  "--json")
    ).json()  # fmt: skip
    shown = (await run("budgets", "show", *options, "--json")).json()
    team_budget = await run("budgets", "show", "--team", "search")

    assert (budget["key_id"], budget["limit_usd"]) == (key["id"], "1000")
    assert (shown["period_start"], shown["period_end"]) == (
        "2026-11-01T00:00:00Z",
        "2026-11-30T23:00:00Z",
    )
    assert team_budget.code == 1
    assert (await run("budgets", "delete", *options)).code == 0


async def test_a_key_of_another_team_has_no_budget_there(ledger: AsyncEngine) -> None:
    for team in ("search", "ads"):
        await run("teams", "create", team)
    key = await create_key("ads")

    result = await run(
        "budgets", "set", "--team", "search", "--key", key["id"], "--period", "daily",
        "--limit-usd", "5",
    )  # fmt: skip

    assert result.code == 1
    assert f"Team 'search' has no key with id '{key['id']}'." in result.err


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        (["--period", "yearly"], "--period must be one of daily, weekly, monthly, window"),
        (["--timezone", "Mars/Olympus"], "Unknown time zone 'Mars/Olympus'."),
        (["--limit-usd", "-5"], "--limit-usd must be a positive amount in USD"),
        (["--limit-usd", "0"], "--limit-usd must be a positive amount in USD"),
        (["--limit-usd", "ten"], "--limit-usd must be a positive amount in USD"),
        (["--limit-usd", "NaN"], "--limit-usd must be a positive amount in USD"),
        (["--thresholds", "0.5,x"], "--thresholds takes comma-separated shares"),
        (["--window-start", "2026-11-01"], "--period window needs --window-start and --window-end"),
    ],
)
async def test_an_invalid_budget_exits_1_with_the_reason(
    ledger: AsyncEngine, options: list[str], reason: str
) -> None:
    await run("teams", "create", "search")
    defaults = {"--period": "daily", "--limit-usd": "5"}
    given = dict(zip(options[::2], options[1::2], strict=True))
    arguments = [part for pair in {**defaults, **given}.items() for part in pair]

    result = await run("budgets", "set", "--team", "search", *arguments)

    assert result.code == 1
    assert result.err.startswith("metering-proxy budgets: ")
    assert reason in result.err
    assert (await run("budgets", "show", "--team", "search")).code == 1


# How the commands end


async def test_a_usage_error_exits_2(ledger: AsyncEngine) -> None:
    without_team = await run("keys", "create")
    bad_grace = await run("keys", "rotate", "key_x", "--grace-seconds", "soon")

    assert without_team.code == 2 and "--team" in without_team.err
    assert bad_grace.code == 2


async def test_an_unmigrated_postgres_ledger_exits_2_asking_for_migrate(
    postgres_database_url: str, environment: pytest.MonkeyPatch
) -> None:
    environment.setenv("METERING_DATABASE_URL", postgres_database_url)

    result = await run("teams", "list")

    assert result.code == 2
    assert "run `metering-proxy migrate`" in result.err


async def test_a_fresh_sqlite_ledger_is_migrated_on_first_use(
    sqlite_database_url: str, environment: pytest.MonkeyPatch
) -> None:
    environment.setenv("METERING_DATABASE_URL", sqlite_database_url)

    assert (await run("teams", "create", "search")).code == 0


async def test_an_unreachable_ledger_exits_1_naming_it_without_its_password(
    environment: pytest.MonkeyPatch,
) -> None:
    environment.setenv(
        "METERING_DATABASE_URL", "postgresql+asyncpg://postgres:secret@127.0.0.1:1/ledger"
    )

    result = await run("teams", "list")

    assert result.code == 1
    assert "cannot use the ledger database postgresql+asyncpg://postgres@127.0.0.1:1/ledger" in (
        result.err
    )
    assert "secret" not in result.err


async def test_the_console_script_creates_a_key(database_url: str, tmp_path: Path) -> None:
    await upgrade_to_head(database_url)
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("METERING_", "OPENAI_"))}

    async def console(*arguments: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            CLI, *arguments, cwd=tmp_path,
            env={**inherited, "METERING_DATABASE_URL": database_url},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    team = await console("teams", "create", "search")
    key = await console("keys", "create", "--team", "search", "--json")
    duplicate = await console("teams", "create", "search")

    assert team[0] == 0
    assert key[0] == 0 and json.loads(key[1])["key"].startswith("sk-mp-")
    assert duplicate[0] == 1 and "already exists" in duplicate[2]
