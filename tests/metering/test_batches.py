"""Requests of a batch created through the proxy are metered at batch price when read back."""

from __future__ import annotations

import gzip

import openai
import orjson

from proxy.metering.batches import MAX_LINES_REMEMBERED_PER_FILE, BatchOutputTap, BatchRegistry
from proxy.metering.inflate import PIECE_BYTES
from proxy.metering.tap import MAX_KEPT_BODY_BYTES
from tests.support.fake_upstream import BATCH_LINES, FakeUpstream
from tests.support.records import RecordCollector

ProxyToFake = tuple[FakeUpstream, str]


def run_batch(proxy_url: str) -> openai.OpenAI:
    client = openai.OpenAI(base_url=proxy_url, api_key="sk-client", max_retries=0)
    batch = client.batches.create(
        completion_window="24h", endpoint="/v1/chat/completions", input_file_id="file-batch-in"
    )
    assert client.batches.retrieve(batch.id).output_file_id == "file-batch-out"
    return client


def test_each_line_of_the_output_file_is_a_batch_record(
    proxy_to_fake: ProxyToFake, records: RecordCollector
) -> None:
    _, proxy_url = proxy_to_fake
    client = run_batch(proxy_url)
    assert client.files.content("file-batch-out").text.count("\n") == BATCH_LINES
    settled = records.wait_for(2 + BATCH_LINES + 1)
    lines = [record for record in settled if record.batch]
    assert [record.request_id for record in lines] == ["batch_req_1", "batch_req_2", "batch_req_3"]
    for record in lines:
        assert (record.team, record.endpoint, record.status) == ("default", "chat", "200")
        assert record.model == "gpt-4o-mini-2024-07-18"
        assert (record.usage.input_tokens, record.usage.output_tokens) == (12, 6)
        assert record.tags == {"batch_id": "batch_fake"}
        assert record.price is not None and "batch" in record.price.entry


def test_batch_price_is_below_the_standard_price(
    proxy_to_fake: ProxyToFake, records: RecordCollector
) -> None:
    _, proxy_url = proxy_to_fake
    client = run_batch(proxy_url)
    client.files.content("file-batch-out")
    client.chat.completions.create(
        model="gpt-4o-mini-2024-07-18", messages=[{"role": "user", "content": "Hi"}]
    )
    settled = records.wait_for(2 + BATCH_LINES + 2)
    batch_cost = next(r.cost_usd for r in settled if r.batch)
    standard_cost = next(r.cost_usd for r in settled if r.endpoint == "chat" and not r.batch)
    assert batch_cost is not None and standard_cost is not None
    assert batch_cost == standard_cost / 2


def test_reading_the_output_file_again_meters_nothing_more(
    proxy_to_fake: ProxyToFake, records: RecordCollector
) -> None:
    _, proxy_url = proxy_to_fake
    client = run_batch(proxy_url)
    client.files.content("file-batch-out")
    client.files.content("file-batch-out")
    settled = records.wait_for(2 + BATCH_LINES + 2)
    assert sum(record.batch for record in settled) == BATCH_LINES


def test_an_untracked_file_is_not_metered(
    proxy_to_fake: ProxyToFake, records: RecordCollector
) -> None:
    _, proxy_url = proxy_to_fake
    client = openai.OpenAI(base_url=proxy_url, api_key="sk-client", max_retries=0)
    client.files.content("file-batch-out")
    assert records.only().endpoint == "files"


def test_a_cut_read_is_metered_once_when_read_again() -> None:
    registry = BatchRegistry()
    registry.observe("search", True, {"object": "batch", "id": "b1", "endpoint": "/v1/embeddings"})
    registry.observe(
        "other-team",
        False,
        {"object": "batch", "id": "b1", "endpoint": "/v1/embeddings", "output_file_id": "f1"},
    )
    to_meter = registry.output_file_to_meter("GET", "files/f1/content")
    assert to_meter is not None
    file_id, batch = to_meter
    assert (batch.team, batch.family) == ("search", "embeddings")
    assert registry.first_time(file_id, "line-1")
    # The read was cut: a second read skips the line already metered and meters the rest.
    assert registry.output_file_to_meter("GET", "files/f1/content") == to_meter
    assert not registry.first_time(file_id, "line-1")
    assert registry.first_time(file_id, "line-2")
    registry.file_metered(file_id)
    assert registry.output_file_to_meter("GET", "files/f1/content") is None


def test_batches_seen_only_when_polled_are_not_tracked() -> None:
    registry = BatchRegistry()
    registry.observe(
        "team", False, {"object": "batch", "id": "b2", "endpoint": "/v1/x", "output_file_id": "f2"}
    )
    assert registry.output_file_to_meter("GET", "files/f2/content") is None


def test_output_files_an_upstream_names_without_end_are_bounded() -> None:
    registry = BatchRegistry(max_batches=3)
    registry.observe("team", True, {"object": "batch", "id": "b1", "endpoint": "/v1/embeddings"})
    # A hostile upstream answers every poll of the same batch with another output file.
    for number in range(10):
        registry.observe(
            "team",
            False,
            {"object": "batch", "id": "b1", "endpoint": "/v1/x", "output_file_id": f"f{number}"},
        )

    files = [f"f{number}" for number in range(10)]
    tracked = [f for f in files if registry.output_file_to_meter("GET", f"files/{f}/content")]
    assert tracked == ["f7", "f8", "f9"]  # the newest ones, as many as the bound


def test_a_files_line_ids_are_remembered_up_to_a_bound() -> None:
    registry = BatchRegistry()
    for number in range(MAX_LINES_REMEMBERED_PER_FILE):
        registry.first_time("f1", f"line-{number}")

    assert not registry.first_time("f1", "line-0")
    # Past the bound a line is metered without being remembered (the ledger stores it once).
    assert registry.first_time("f1", "one-too-many")
    assert registry.first_time("f1", "one-too-many")


def read_output_file(headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> list[str]:
    """The ids of the lines an output tap hands on, for a file relayed in these chunks."""
    ids: list[str] = []
    tap = BatchOutputTap(lambda line: ids.append(line["id"]), lambda: None)
    tap.start(200, headers)
    assert b"".join(tap.feed(chunk) for chunk in chunks) == b"".join(chunks)
    tap.finish()
    return ids


def lines(*ids: str) -> bytes:
    return b"".join(orjson.dumps({"id": line_id}) + b"\n" for line_id in ids)


def test_an_output_file_line_split_across_chunks_is_read_once_whole() -> None:
    data = lines("a", "b", "c")
    for cut in range(1, len(data)):
        assert read_output_file([], [data[:cut], data[cut:]]) == ["a", "b", "c"], cut


def test_an_output_file_line_past_the_kept_body_cap_is_skipped_and_the_next_read() -> None:
    huge = b'{"id":"huge","pad":"' + b" " * (MAX_KEPT_BODY_BYTES + 65536) + b'"}\n'
    data = lines("a") + huge + lines("b")
    chunks = [data[start : start + 65536] for start in range(0, len(data), 65536)]
    assert read_output_file([], chunks) == ["a", "b"]


def test_a_gzip_output_file_is_inflated_piece_by_piece_without_a_limit_in_all() -> None:
    padding = orjson.dumps({"id": "pad", "pad": " " * (2 * PIECE_BYTES)}) + b"\n"
    data = gzip.compress(lines("a") + padding * 20 + lines("b"))
    headers = [(b"content-encoding", b"gzip")]
    assert read_output_file(headers, [data]) == ["a", *["pad"] * 20, "b"]
