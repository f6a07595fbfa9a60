"""Proxy keys through the real OpenAI SDK: who they attribute calls to, and who they refuse."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import ProxyFactory, single_upstream_config
from tests.support.admin import ADMIN_ENVIRON, Admin
from tests.support.clock import FakeClock
from tests.support.fake_upstream import FakeUpstream
from tests.support.records import RecordCollector
from tests.support.waiting import comes_true

HI = [{"role": "user", "content": "Hi"}]


def chat(proxy_url: str, key: str, model: str = "gpt-4o") -> openai.types.chat.ChatCompletion:
    client = openai.OpenAI(base_url=proxy_url, api_key=key, max_retries=0)
    return client.chat.completions.create(model=model, messages=HI)  # type: ignore[arg-type]


def test_a_call_with_a_proxy_key_is_attributed_to_its_team_key_and_end_user(
    admin_proxy: str, records: RecordCollector, fake_upstream: tuple[FakeUpstream, str]
) -> None:
    admin = Admin(admin_proxy)
    admin.team("search")
    issued = admin.key("search", name="ci", end_user="batch-job")

    chat(admin_proxy, issued["key"])

    record = records.wait_for(1)[0]
    assert (record.team, record.key_id, record.user) == ("search", issued["id"], "batch-job")
    fake, _ = fake_upstream
    assert issued["key"] not in str(fake.last.headers)  # managed or not, never sent upstream


def test_an_unknown_proxy_key_gets_401_before_the_upstream_sees_the_call(
    admin_proxy: str, fake_upstream: tuple[FakeUpstream, str]
) -> None:
    with pytest.raises(openai.AuthenticationError) as refused:
        chat(admin_proxy, "sk-mp-" + "x" * 43)

    assert refused.value.code == "invalid_api_key"
    assert fake_upstream[0].requests == []


def test_a_key_differing_from_a_valid_one_only_in_its_last_character_is_refused(
    admin_proxy: str,
) -> None:
    admin = Admin(admin_proxy)
    admin.team("search")
    key = admin.key("search")["key"]
    almost = key[:-1] + ("B" if key.endswith("A") else "A")

    with pytest.raises(openai.AuthenticationError) as refused:
        chat(admin_proxy, almost)

    assert refused.value.code == "invalid_api_key"
    chat(admin_proxy, key)


def test_a_revoked_key_is_refused(admin_proxy: str) -> None:
    admin = Admin(admin_proxy)
    admin.team("search")
    issued = admin.key("search")
    chat(admin_proxy, issued["key"])

    admin.call("DELETE", f"/admin/keys/{issued['id']}")

    with pytest.raises(openai.AuthenticationError, match="revoked"):
        chat(admin_proxy, issued["key"])


def test_a_rotated_key_works_during_the_grace_period_only(
    admin_proxy: str, clock: FakeClock
) -> None:
    admin = Admin(admin_proxy)
    admin.team("search")
    old = admin.key("search")

    new = admin.call("POST", f"/admin/keys/{old['id']}/rotate", {"grace_seconds": 600}, 201)

    chat(admin_proxy, old["key"])
    chat(admin_proxy, new["key"])
    clock.advance(seconds=601)
    chat(admin_proxy, new["key"])
    with pytest.raises(openai.AuthenticationError, match="expired"):
        chat(admin_proxy, old["key"])


def test_an_expired_key_is_refused(admin_proxy: str, clock: FakeClock) -> None:
    admin = Admin(admin_proxy)
    admin.team("search")
    issued = admin.key("search", expires_at="2026-11-25T13:00:00Z")
    chat(admin_proxy, issued["key"])

    clock.advance(hours=1)

    with pytest.raises(openai.AuthenticationError, match="expired"):
        chat(admin_proxy, issued["key"])


def test_a_key_calls_only_the_models_of_its_allow_list(admin_proxy: str) -> None:
    admin = Admin(admin_proxy)
    admin.team("search")
    issued = admin.key("search", models=["gpt-4o-mini*"])

    chat(admin_proxy, issued["key"], model="gpt-4o-mini")
    with pytest.raises(openai.PermissionDeniedError) as refused:
        chat(admin_proxy, issued["key"], model="gpt-4o")

    assert refused.value.code == "model_not_allowed"


def test_a_key_revoked_through_another_process_stops_working_within_the_poll_interval(
    fake_upstream: tuple[FakeUpstream, str], start_proxy: ProxyFactory, tmp_path: object
) -> None:
    _, upstream_url = fake_upstream
    shared = {"METERING_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/shared.db"}
    config = single_upstream_config(upstream_url) + "[access]\npoll_seconds = 0.1\n"
    first = start_proxy(config, {**ADMIN_ENVIRON, **shared})
    second = start_proxy(config, {**ADMIN_ENVIRON, **shared})
    admin = Admin(first)
    admin.team("search")
    issued = admin.key("search")

    def second_accepts() -> bool:
        try:
            chat(second, issued["key"])
        except openai.AuthenticationError:
            return False
        return True

    assert comes_true(second_accepts)
    admin.call("DELETE", f"/admin/keys/{issued['id']}")
    assert comes_true(lambda: not second_accepts())


def test_with_proxy_keys_required_a_call_without_one_gets_401(
    fake_upstream: tuple[FakeUpstream, str], start_proxy: ProxyFactory
) -> None:
    _, upstream_url = fake_upstream
    proxy_url = start_proxy(
        single_upstream_config(upstream_url) + "[access]\nrequire_proxy_key = true\n"
    )

    with pytest.raises(openai.AuthenticationError, match="requires a proxy key"):
        chat(proxy_url, "sk-the-clients-own-openai-key")


def test_keys_declared_in_the_config_file_work(
    fake_upstream: tuple[FakeUpstream, str], start_proxy: ProxyFactory, records: RecordCollector
) -> None:
    _, upstream_url = fake_upstream
    key = "sk-mp-declared-in-config-0123456789abcdefghijklmnop"
    config = single_upstream_config(upstream_url) + (
        '[[teams]]\nname = "ops"\n[[teams.keys]]\nname = "cron"\nkey_env = "OPS_KEY"\n'
    )
    proxy_url = start_proxy(config, {"OPS_KEY": key})

    chat(proxy_url, key)

    assert records.wait_for(1)[0].team == "ops"
