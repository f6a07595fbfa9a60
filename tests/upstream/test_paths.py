"""Which client paths go upstream: each in its one canonical spelling, exactly as sent, and none
that a lenient server could read as a metered path or as a place above `/v1/`."""

from __future__ import annotations

import pytest

from proxy.errors import InvalidPath, InvalidValue
from proxy.upstream.paths import judge_path, model_as_segment

FORWARDED = [
    "chat/completions",
    "responses",
    "files",
    "files/",  # a trailing slash where it makes no alias
    "models/",
    "files/file-abc/content",
    "files/file-ABC/content",
    "models/ft:gpt-4o:org::id",
    "models/ft%3Agpt-4o%3Aorg%3A%3Aid",  # reserved characters may be escaped, and stay so
    "models/meta-llama%2FLlama-3.1-8B-Instruct",
    "models/meta-llama%2F..%2F..%2Fsecret",  # decoded, still below /v1/
    "models/a%3Bb",
    "chat/completions/chatcmpl-1/messages",
    "responses/resp_1/input_items",
    "batches/batch_1/cancel",
    "batches/Batch_1",  # batch metering reads it as it is: no alias
    "containers/cntr_1/files/cfile_1/content",
    "vector_stores/vs_1/files/file-abc/content",
    "vector_stores/vs_1/file_batches/vsfb_1",
    "uploads/upload_1/complete",
    "fine_tuning/jobs/ftjob-1/checkpoints",
    "models/llama-3.1-8b.gguf",
    "",
]


@pytest.mark.parametrize("path", FORWARDED)
def test_a_canonical_path_is_forwarded_as_sent(path: str) -> None:
    assert judge_path(b"/v1/" + path.encode()) == path


def test_the_bare_v1_path_names_the_base_itself() -> None:
    assert judge_path(b"/v1") == ""


REFUSED = [
    ("/%761/chat/completions", "must start with `/v1/`"),
    ("/v1%2Fchat/completions", "must start with `/v1/`"),
    ("/v1/chat/compl\x00etions", "must be percent-encoded"),
    ("/v1/chat\\completions", "must be percent-encoded"),
    ("/v1/chat/compl\xe9tions", "must be percent-encoded"),
    ("/v1/chat/completions{x}", "must be percent-encoded"),
    ("/v1/chat;v=1/completions", "path parameter"),
    ("/v1/models/x;y", "path parameter"),
    ("/v1//chat/completions", "empty segment"),
    ("/v1/files//x", "empty segment"),
    ("/v1/./chat/completions", "dot segment"),
    ("/v1/files/..", "dot segment"),
    ("/v1/x/../chat/completions", "dot segment"),
    ("/v1/%2e%2e/internal", "dot segment"),
    ("/v1/.%2E/internal", "dot segment"),
    ("/v1/%2E./internal", "dot segment"),
    ("/v1/%2e/files", "dot segment"),
    ("/v1/%63hat/completions", "percent-encodes `c` as `%63`"),
    ("/v1/files/file%2Dabc/content", "percent-encodes `-`"),
    ("/v1/models/a%7Eb", "percent-encodes `~`"),
    ("/v1/models/x%4", "not followed by two hexadecimal digits"),
    ("/v1/models/x%zz", "not followed by two hexadecimal digits"),
    ("/v1/models/x%+1", "not followed by two hexadecimal digits"),
    ("/v1/models/%252e%252e", "a percent sign, backslash or control character"),
    ("/v1/chat%5Ccompletions", "a percent sign, backslash or control character"),
    ("/v1/chat/completions%00", "a percent sign, backslash or control character"),
    ("/v1/models/x%0Ay", "a percent sign, backslash or control character"),
    ("/v1/%C0%AE%C0%AE/internal", "not UTF-8 text"),
    ("/v1/models/x%FF", "not UTF-8 text"),
    ("/v1/x%2F..%2F..%2Finternal", "leads above `/v1/`"),
    ("/v1/%2F..%2Finternal", "leads above `/v1/`"),
    ("/v1/models/x%EF%BC%8F..%EF%BC%8F..%EF%BC%8F..%EF%BC%8Fsecret", "leads above `/v1/`"),
]


@pytest.mark.parametrize(("raw_path", "problem"), REFUSED)
def test_a_path_not_in_its_canonical_spelling_is_refused(raw_path: str, problem: str) -> None:
    with pytest.raises(InvalidPath) as refused:
        judge_path(raw_path.encode("latin-1"))

    assert problem in refused.value.message
    assert (refused.value.status, refused.value.code) == (400, "invalid_path")


ALIASES = [
    ("chat/completions/", "chat/completions"),
    ("Chat/Completions", "chat/completions"),
    ("CHAT/COMPLETIONS", "chat/completions"),
    ("chat%2Fcompletions", "chat/completions"),
    ("chat%3Bx/completions", "chat/completions"),
    ("chat/completions%3Fx", "chat/completions"),
    ("chat/completions%23x", "chat/completions"),
    ("chat/completions%20", "chat/completions"),
    ("chat./completions", "chat/completions"),
    ("chat%EF%BC%8Fcompletions", "chat/completions"),  # a full-width solidus
    ("%2Fchat/completions", "chat/completions"),
    ("v1/chat/completions", "chat/completions"),
    ("deployments/gpt-4o/chat/completions", "chat/completions"),
    ("engines/davinci/completions", "completions"),
    ("openai/deployments/gpt-4o/embeddings", "embeddings"),
    ("anything/audio/speech", "audio/speech"),
    ("Responses", "responses"),
    ("batches/", "batches"),
    ("Batches", "batches"),
    ("openai/batches", "batches"),
    ("Batches/batch_1", "batches/batch_1"),
    ("batches/batch%3A1", "batches/batch:1"),
    ("files/file-abc/content/", "files/file-abc/content"),
    ("Files/file-abc/Content", "files/file-abc/content"),
    ("files/file-abc%2Fcontent", "files/file-abc/content"),
    ("v1/files/file-abc/content", "files/file-abc/content"),
    ("files/file-abc/content%3Bx=1", "files/file-abc/content"),
]


@pytest.mark.parametrize(("path", "metered"), ALIASES)
def test_a_path_a_lenient_server_reads_as_a_metered_path_is_refused(
    path: str, metered: str
) -> None:
    with pytest.raises(InvalidPath) as refused:
        judge_path(b"/v1/" + path.encode())

    assert f"would read it as `/v1/{metered}`" in refused.value.message


@pytest.mark.parametrize("model", ["gpt-4o", "ft:gpt-4o:org::id", "gpt 4o", "modèle"])
def test_a_model_name_is_one_encoded_path_segment(model: str) -> None:
    segment = model_as_segment(model)

    assert "/" not in segment
    assert judge_path(b"/v1/models/" + segment.encode()) == f"models/{segment}"


@pytest.mark.parametrize(
    "model", [".", "..", " .. ", "../../x", "a/b", "a\\b", "..%2F..", "a%2Fb", "\uff0e\uff0e"]
)
def test_a_model_name_that_could_read_as_a_path_of_its_own_is_refused(model: str) -> None:
    with pytest.raises(InvalidValue) as refused:
        model_as_segment(model)

    assert refused.value.param == "model"
