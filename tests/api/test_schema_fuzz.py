"""The admin and usage APIs, fuzzed against their own OpenAPI schema: whatever a client sends,
valid or not, the answer is never a 5xx and always one the schema documents (status, content
type, headers and body)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from hypothesis.strategies import SearchStrategy
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Err
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.schemas import APIOperation

from proxy.app import create_app
from proxy.ledger.migrations import upgrade_to_head
from proxy.settings import load_settings
from tests.support.admin import ADMIN_ENVIRON, ADMIN_KEY
from tests.support.databases import fresh_postgres_database

AUTHORIZED = {"Authorization": f"Bearer {ADMIN_KEY}"}
# Not schemathesis's checks that valid input is accepted and invalid input refused: the APIs
# refuse more than a schema can say (a `since` after `until`, a cursor they never gave), and
# take the last of a repeated query parameter, as FastAPI does.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES_PER_OPERATION = 30


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ledger_url(postgres_server: None) -> AsyncIterator[str]:
    """A migrated Postgres ledger, the engine that refuses the most (NULs, 32-bit overflows)."""
    async with fresh_postgres_database() as url:
        await upgrade_to_head(url)
        yield url


@pytest.fixture(scope="module")
def api_schema(
    ledger_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[schemathesis.BaseSchema]:
    """The schema the app serves, its operations called in-process on the app (lifespan run)."""
    directory = tmp_path_factory.mktemp("fuzz")
    config = directory / "proxy.toml"
    config.write_text(f'[ledger]\njournal_dir = "{directory / "journal"}"\n')
    environ = {"METERING_CONFIG": str(config), "METERING_DATABASE_URL": ledger_url}
    app = create_app(load_settings({**environ, **ADMIN_ENVIRON}))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    yield schema.include(path_regex="^/(admin|usage)/")
    shutdown_lifespans()


def operations(schema: schemathesis.BaseSchema) -> Iterator[APIOperation[Any, Any, Any, Any]]:
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        yield result.ok()


def fuzz(cases: SearchStrategy[schemathesis.Case[Any]]) -> None:
    @given(case=cases)
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        deadline=None,
        database=None,
        # Schema-violating cases are found by discarding the many generated cases that are not.
        suppress_health_check=[HealthCheck.filter_too_much],
    )
    def call(case: schemathesis.Case[Any]) -> None:
        case.call_and_validate(headers=AUTHORIZED, checks=CHECKS)

    call()


def test_every_answer_is_one_the_schema_documents(
    api_schema: schemathesis.BaseSchema, subtests: pytest.Subtests
) -> None:
    for operation in operations(api_schema):
        for mode in schemathesis.GenerationMode:
            with subtests.test(operation.label, mode=mode.value):
                try:
                    fuzz(operation.as_strategy(mode))
                except Unsatisfiable:
                    # No parameters, or only text path parameters: nothing can violate the schema.
                    pytest.skip("no request violates this operation's schema")
