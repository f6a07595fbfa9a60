"""`metering-proxy report --to-model/--batch/--cache-prompt`: what-if from the terminal."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import subprocess
from datetime import timedelta
from pathlib import Path

from proxy.ledger.database import create_ledger_engine
from proxy.ledger.migrations import upgrade_to_head
from proxy.ledger.rows import row_of
from proxy.ledger.store import LedgerStore
from tests.api.test_whatif_api import PRICES
from tests.ledger.test_writer import CREATED_AT, record
from tests.support.process import CLI

SINCE = (CREATED_AT - timedelta(days=1)).isoformat()
UNTIL = (CREATED_AT + timedelta(hours=1)).isoformat()


async def what_if(database_url: str, tmp_path: Path, *arguments: str) -> str:
    await upgrade_to_head(database_url)
    engine = create_ledger_engine(database_url)
    await LedgerStore(engine).write([row_of(record(n)) for n in range(10)])
    await engine.dispose()
    config = tmp_path / "prices.toml"
    config.write_text(PRICES)
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("METERING_", "OPENAI_"))}
    environ = {**inherited, "METERING_DATABASE_URL": database_url, "METERING_CONFIG": str(config)}
    result = await asyncio.to_thread(
        subprocess.run,
        [CLI, "report", "--since", SINCE, "--until", UNTIL, *arguments],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_csv_of_another_model_through_the_batch_api(
    sqlite_database_url: str, tmp_path: Path
) -> None:
    out = await what_if(
        sqlite_database_url,
        tmp_path,
        *("--to-model", "gpt-4o-mini", "--batch", "--group-by", "team", "--format", "csv"),
    )
    (row,) = csv.DictReader(io.StringIO(out))
    assert (row["team"], row["calls"], row["scenario_cost_usd"]) == ("search", "10", "0.00012")
    assert row["actual_cost_usd"] == "0.012345678"


async def test_table_names_the_scenario_and_the_saving(
    sqlite_database_url: str, tmp_path: Path
) -> None:
    out = await what_if(sqlite_database_url, tmp_path, "--cache-prompt", "--group-by", "model")
    assert "would have cost with the prompt cached" in out
    assert "gpt-4o" in out and "$0.003625" in out and "total" in out
