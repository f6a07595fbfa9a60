"""Path aliases: spellings of a `/v1/` path that a lenient server in front of the upstream (nginx
with merge_slashes, a decoding CDN, a case-insensitive router that forgives a trailing slash)
serves as a metered endpoint, or above the upstream's base path. Each is refused with a 400 before
the upstream or admission sees it, with passthrough and proxy keys alike; legitimate spellings
(percent-encoded ids, queries) still reach the upstream exactly as sent.

Calls go through a real socket as raw bytes: an HTTP client library would normalise the paths.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson
import pytest

from proxy.app import create_app
from proxy.settings import load_settings
from tests.conftest import ProxyFactory
from tests.support.asgi import Receive, Scope, Send
from tests.support.clock import FakeClock
from tests.support.databases import sqlite_url
from tests.support.fake_upstream import FakeUpstream
from tests.support.records import RecordCollector
from tests.support.servers import serve_in_thread

CHAT = orjson.dumps(
    {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16}
)
MANAGED_KEY = "sk-managed-upstream-key"
BUDGET_KEY = "sk-mp-path-alias-budget-key-0123456789abcdefghijk"
MINI_ONLY_KEY = "sk-mp-path-alias-mini-only-key-0123456789abcdefg"
SECRET = b'{"secret": "internal"}'

CHAT_ALIASES = [
    "/v1/./chat/completions",
    "/v1//chat/completions",
    "/v1/chat/completions/",
    "/v1/chat//completions",
    "/v1/x/../chat/completions",
    "/v1/%63hat/completions",
    "/v1/chat/%2e/completions",
    "/v1/chat%2Fcompletions",
    "/v1/chat%5Ccompletions",
    "/v1/chat\\completions",
    "/v1/chat;v=1/completions",
    "/v1/chat/completions;x",
    "/v1/chat%3Bx/completions",
    "/v1/Chat/Completions",
    "/v1/CHAT/COMPLETIONS",
    "/%761/chat/completions",
    "/v1/v1/chat/completions",
    "/v1/deployments/gpt-4o/chat/completions",
    "/v1/engines/gpt-4o/chat/completions",
]
# The bypasses the issue found, and one of each other kind, against the budget and allow-list.
BYPASSES = [
    "/v1/./chat/completions",
    "/v1//chat/completions",
    "/v1/chat/completions/",
    "/v1/x/../chat/completions",
    "/v1/%63hat/completions",
    "/v1/Chat/Completions",
    "/v1/chat%2Fcompletions",
]
ESCAPES = [
    "/v1/../internal/secret",
    "/v1/%2e%2e/internal/secret",
    "/v1/.%2E/internal/secret",
    "/v1/%2E./internal/secret",
    "/v1/files/../../internal/secret",
    "/v1/models/x%2F..%2F..%2F..%2Finternal%2Fsecret",
]
BATCH_ALIASES = [
    ("POST", "/v1/batches/"),
    ("POST", "/v1/Batches"),
    ("POST", "/v1/./batches"),
    ("GET", "/v1/files/file-batch-out/content/"),
    ("GET", "/v1/files/file-batch-out//content"),
    ("GET", "/v1/files/file-batch-out%2Fcontent"),
    ("GET", "/v1/Files/file-batch-out/content"),
    ("GET", "/v1/v1/files/file-batch-out/content"),
]
# Spellings that must keep working, and reach the upstream byte for byte.
LEGITIMATE = [
    "/v1/files/file-abc/content",
    "/v1/models/ft:gpt-4o:org::id",
    "/v1/models/ft%3Agpt-4o%3Aorg%3A%3Aid",
    "/v1/models/meta-llama%2FLlama-3.1-8B-Instruct",  # how the OpenAI SDK sends a `/` in an id
    "/v1/files?purpose=batch&limit=2&after=file%2Fx",
    "/v1/containers/cntr_1/files/cfile_1/content",
    "/v1/vector_stores/vs_1/files/file-abc/content",
    "/v1/models",
]


def lenient_path(raw_path: bytes) -> str:
    """The path as the lenient front reads it: decoded, `\\` as `/`, path parameters dropped, dot
    segments resolved (`..` stops at the root), slashes merged, no trailing slash, lower case."""
    segments: list[str] = []
    for segment in unquote(raw_path.decode("latin-1")).replace("\\", "/").split("/"):
        segment = segment.split(";", 1)[0]
        if segment == "..":
            segments = segments[:-1]
        elif segment not in ("", "."):
            segments.append(segment.lower())
    return "/" + "/".join(segments)


@dataclass
class LenientFront:
    """An upstream behind a lenient front; it also serves what lies above its API, `/internal/`,
    and takes a call's method and path from override headers, as some frameworks do."""

    api: FakeUpstream = field(default_factory=FakeUpstream)
    raw_targets: list[bytes] = field(default_factory=list)  # as they reached the front
    secrets_served: int = 0

    def forget(self) -> None:
        """Start afresh, for the next test."""
        self.api.requests.clear()
        self.raw_targets.clear()
        self.secrets_served = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        raw_path: bytes = scope["raw_path"]
        query: bytes = scope["query_string"]
        self.raw_targets.append(raw_path + (b"?" + query if query else b""))
        headers = dict(scope["headers"])
        method = headers.get(b"x-http-method-override", scope["method"].encode()).decode()
        path = lenient_path(headers.get(b"x-original-url", raw_path))
        if path.startswith("/internal/"):
            self.secrets_served += 1
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": SECRET})
            return
        cleaned = {**scope, "method": method, "path": path, "raw_path": path.encode()}
        await self.api(cleaned, receive, send)


@pytest.fixture(scope="module")
def served_front() -> Iterator[tuple[LenientFront, str]]:
    """The lenient front on a real uvicorn, and its root URL: one for the module."""
    lenient = LenientFront()
    with serve_in_thread(lenient) as url:
        yield lenient, url


@pytest.fixture
def front(served_front: tuple[LenientFront, str]) -> tuple[LenientFront, str]:
    """The lenient front, having seen nothing yet."""
    served_front[0].forget()
    return served_front


def proxy_config(front_url: str, kind: str = "openai") -> str:
    """One managed upstream behind the front; a team on a hard budget of less than two calls,
    and a team whose key may call gpt-4o-mini only."""
    base = f"{front_url}/openai" if kind == "azure" else f"{front_url}/v1"
    return f"""
[[upstreams]]
name = "lenient"
kind = "{kind}"
base_url = "{base}"
api_key_env = "VENDOR_KEY"

[prices."gpt-4o"]
input = 1000000
output = 1000000

[access]
poll_seconds = 0.1

[[teams]]
name = "search"
[[teams.keys]]
key_env = "BUDGET_KEY"
[teams.budget]
period = "daily"
limit_usd = "30"
hard = true

[[teams]]
name = "labs"
[[teams.keys]]
key_env = "MINI_ONLY_KEY"
models = ["gpt-4o-mini*"]
"""


ENVIRON = {"VENDOR_KEY": MANAGED_KEY, "BUDGET_KEY": BUDGET_KEY, "MINI_ONLY_KEY": MINI_ONLY_KEY}


def shared_proxy(
    tmp_path_factory: pytest.TempPathFactory, front_url: str, kind: str
) -> Iterator[str]:
    """A proxy on a real uvicorn for the tests of the module that leave no state behind."""
    directory = tmp_path_factory.mktemp(f"proxy-{kind}")
    config = directory / "proxy.toml"
    config.write_text(
        f'{proxy_config(front_url, kind)}\n[ledger]\njournal_dir = "{directory / "journal"}"\n'
    )
    environ = {"METERING_CONFIG": str(config), "METERING_DATABASE_URL": sqlite_url(directory)}
    with serve_in_thread(create_app(load_settings({**environ, **ENVIRON}))) as url:
        yield f"{url}/v1"


@pytest.fixture(scope="module")
def proxy(
    served_front: tuple[LenientFront, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The proxy in front of the lenient front, an `openai` upstream."""
    yield from shared_proxy(tmp_path_factory, served_front[1], "openai")


@pytest.fixture(scope="module")
def azure_proxy(
    served_front: tuple[LenientFront, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The proxy in front of the lenient front as an Azure upstream, based at `/openai`."""
    yield from shared_proxy(tmp_path_factory, served_front[1], "azure")


@pytest.fixture
def own_proxy(front: tuple[LenientFront, str], start_proxy: ProxyFactory, clock: FakeClock) -> str:
    """A proxy of the test's own (budgets spent, records), on the test's clock."""
    return start_proxy(proxy_config(front[1]), ENVIRON, clock)


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes

    @property
    def error(self) -> dict[str, Any]:
        document: dict[str, Any] = orjson.loads(self.body)["error"]
        return document


def send_raw(
    proxy_url: str,
    method: str,
    target: str,
    key: str = "sk-client",
    body: bytes = b"",
    extra_headers: dict[str, str] | None = None,
) -> Answer:
    """One call whose request target goes on the wire exactly as given."""
    address = urlsplit(proxy_url)
    assert address.hostname is not None and address.port is not None
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    headers = {"Authorization": f"Bearer {key}", **(extra_headers or {})}
    if body:
        headers["Content-Type"] = "application/json"
    try:
        connection.request(method, target, body=body or None, headers=headers)
        response = connection.getresponse()
        return Answer(response.status, response.read())
    finally:
        connection.close()


def chat(proxy_url: str, target: str, key: str = "sk-client") -> Answer:
    return send_raw(proxy_url, "POST", target, key, CHAT)


def assert_refused_as_invalid_path(answer: Answer) -> None:
    assert answer.status == 400, answer.body
    error = answer.error
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "invalid_path",
        None,
    )
    assert "path" in error["message"]


@pytest.mark.parametrize("target", CHAT_ALIASES)
def test_an_alias_of_chat_completions_is_refused_before_the_upstream(
    proxy: str, front: tuple[LenientFront, str], target: str
) -> None:
    lenient, _ = front

    answer = chat(proxy, target)

    assert_refused_as_invalid_path(answer)
    assert lenient.raw_targets == []


def test_the_lenient_front_serves_an_alias_as_a_metered_chat(
    front: tuple[LenientFront, str],
) -> None:
    """The premise of the tests above: sent to the front directly, an alias is a chat call."""
    _, url = front

    answer = chat(url, "/v1/x/../Chat/Completions/")

    assert answer.status == 200
    assert orjson.loads(answer.body)["usage"]["total_tokens"] == 18


@pytest.mark.parametrize("target", ["/v1/./chat/completions", "/v1/chat/completions/"])
def test_an_alias_is_refused_for_a_proxy_key_and_the_managed_key_never_goes_upstream(
    proxy: str, front: tuple[LenientFront, str], target: str
) -> None:
    lenient, _ = front

    answer = chat(proxy, target, key=BUDGET_KEY)

    assert_refused_as_invalid_path(answer)
    assert lenient.api.requests == []


@pytest.mark.parametrize("target", BYPASSES)
def test_an_alias_does_not_get_past_the_hard_budget(
    own_proxy: str, front: tuple[LenientFront, str], target: str
) -> None:
    lenient, _ = front
    assert chat(own_proxy, "/v1/chat/completions", key=BUDGET_KEY).status == 200
    refused = chat(own_proxy, "/v1/chat/completions", key=BUDGET_KEY)
    assert refused.error["code"] == "budget_exceeded"

    answer = chat(own_proxy, target, key=BUDGET_KEY)

    assert_refused_as_invalid_path(answer)
    assert len(lenient.api.requests) == 1  # the one call the budget allowed


@pytest.mark.parametrize("target", BYPASSES)
def test_an_alias_does_not_get_past_the_keys_model_allow_list(
    proxy: str, front: tuple[LenientFront, str], target: str
) -> None:
    lenient, _ = front
    assert chat(proxy, "/v1/chat/completions", key=MINI_ONLY_KEY).status == 403

    answer = chat(proxy, target, key=MINI_ONLY_KEY)

    assert_refused_as_invalid_path(answer)
    assert lenient.api.requests == []


def test_a_refused_path_settles_one_record_with_status_400(
    own_proxy: str, records: RecordCollector
) -> None:
    chat(own_proxy, "/v1/./chat/completions", key=BUDGET_KEY)

    record = records.only()
    assert (record.status, record.team, record.usage.input_tokens) == ("400", "search", 0)


@pytest.mark.parametrize(("method", "target"), BATCH_ALIASES)
def test_an_alias_of_a_path_batch_metering_reads_is_refused(
    proxy: str, front: tuple[LenientFront, str], method: str, target: str
) -> None:
    lenient, _ = front

    answer = send_raw(proxy, method, target, body=b"{}" if method == "POST" else b"")

    assert_refused_as_invalid_path(answer)
    assert lenient.raw_targets == []


@pytest.mark.parametrize("target", ESCAPES)
def test_a_path_above_v1_is_refused(
    proxy: str, front: tuple[LenientFront, str], target: str
) -> None:
    lenient, _ = front

    answer = send_raw(proxy, "GET", target)

    assert_refused_as_invalid_path(answer)
    assert (lenient.raw_targets, lenient.secrets_served) == ([], 0)


@pytest.mark.parametrize("target", ESCAPES)
def test_a_path_above_azures_openai_base_is_refused(
    azure_proxy: str, front: tuple[LenientFront, str], target: str
) -> None:
    lenient, _ = front

    answer = send_raw(azure_proxy, "GET", target)

    assert_refused_as_invalid_path(answer)
    assert (lenient.raw_targets, lenient.secrets_served) == ([], 0)


def test_an_azure_deployment_path_sent_as_a_plain_path_is_refused(
    azure_proxy: str, front: tuple[LenientFront, str]
) -> None:
    lenient, _ = front

    answer = chat(azure_proxy, "/v1/deployments/gpt-4o/chat/completions")

    assert_refused_as_invalid_path(answer)
    assert lenient.raw_targets == []


@pytest.mark.parametrize("model", ["..", "../../internal/secret", "..%2F..%2Finternal"])
def test_a_model_name_cannot_lead_an_azure_deployment_path_above_its_base(
    azure_proxy: str, front: tuple[LenientFront, str], model: str
) -> None:
    lenient, _ = front
    body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": "Hi"}]})

    answer = send_raw(azure_proxy, "POST", "/v1/chat/completions", body=body)

    assert answer.status == 400, answer.body
    assert (answer.error["code"], answer.error["param"]) == ("invalid_value", "model")
    assert (lenient.raw_targets, lenient.secrets_served) == ([], 0)


@pytest.mark.parametrize(
    ("method", "target", "override"),
    [
        ("GET", "/v1/chat/completions", {"X-HTTP-Method-Override": "POST"}),
        ("POST", "/v1/files", {"X-Original-URL": "/v1/chat/completions"}),
    ],
)
def test_a_header_that_overrides_the_method_or_path_stops_at_the_proxy(
    proxy: str,
    front: tuple[LenientFront, str],
    method: str,
    target: str,
    override: dict[str, str],
) -> None:
    lenient, _ = front

    answer = send_raw(proxy, method, target, body=CHAT, extra_headers=override)

    assert b"chat.completion" not in answer.body
    (name,) = override
    assert name.lower() not in lenient.api.last.headers


@pytest.mark.parametrize("target", LEGITIMATE)
def test_a_legitimate_spelling_reaches_the_upstream_exactly_as_sent(
    proxy: str, front: tuple[LenientFront, str], target: str
) -> None:
    lenient, _ = front

    answer = send_raw(proxy, "GET", target)

    assert answer.status != 400, answer.body
    assert lenient.raw_targets == [target.encode()]


def test_the_canonical_chat_path_is_metered_through_the_lenient_front(
    own_proxy: str, records: RecordCollector
) -> None:
    answer = chat(own_proxy, "/v1/chat/completions")

    assert answer.status == 200
    record = records.only()
    usage = record.usage
    assert (record.endpoint, usage.input_tokens, usage.output_tokens) == ("chat", 12, 6)
