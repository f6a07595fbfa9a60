"""Routing reads `model` from JSON and multipart bodies without decoding the rest."""

from __future__ import annotations

import pytest

from proxy.endpoints import MODEL_ROUTED_ENDPOINTS
from proxy.errors import InvalidJSON, InvalidRequest
from proxy.request_fields import read_request_fields

CHAT = MODEL_ROUTED_ENDPOINTS["chat/completions"]
EDIT = MODEL_ROUTED_ENDPOINTS["images/edits"]
MODERATIONS = MODEL_ROUTED_ENDPOINTS["moderations"]
BOUNDARY = b"----b0undary"
MULTIPART = b"multipart/form-data; boundary=" + BOUNDARY


def form(*parts: tuple[bytes, bytes]) -> bytes:
    body = b""
    for headers, value in parts:
        body += b"--" + BOUNDARY + b"\r\n" + headers + b"\r\n\r\n" + value + b"\r\n"
    return body + b"--" + BOUNDARY + b"--\r\n"


def test_json_model_and_stream() -> None:
    fields = read_request_fields(CHAT, b"application/json", b'{"model": "gpt-4o", "stream": true}')
    assert (fields.model, fields.stream) == ("gpt-4o", True)


def test_json_without_model_where_the_endpoint_has_a_default() -> None:
    assert read_request_fields(MODERATIONS, b"application/json", b"{}").model is None


@pytest.mark.parametrize("body", [b"{", b"[1, 2]", b"\xff\xfe"])
def test_body_that_is_not_a_json_object_is_refused(body: bytes) -> None:
    with pytest.raises(InvalidJSON):
        read_request_fields(CHAT, b"application/json", body)


def test_model_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="model"):
        read_request_fields(CHAT, b"application/json", b'{"model": 4}')


def test_multipart_model_is_found_after_a_file_part() -> None:
    # The file's bytes happen to contain what looks like a model field; only headers count.
    image = b'fake png name="model"\r\n\r\nwrong\r\n'
    body = form(
        (b'Content-Disposition: form-data; name="image"; filename="a.png"', image),
        (b'Content-Disposition: form-data; name="model"', b"dall-e-2"),
    )
    assert read_request_fields(EDIT, MULTIPART, body).model == "dall-e-2"


def test_multipart_filename_model_is_not_the_model_field() -> None:
    body = form((b'Content-Disposition: form-data; name="image"; filename="model"', b"x"))
    assert read_request_fields(EDIT, MULTIPART, body).model is None


def test_multipart_without_boundary_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="boundary"):
        read_request_fields(EDIT, b"multipart/form-data", b"")


def test_multipart_text_fields_are_read_and_files_are_not() -> None:
    body = form(
        (b'Content-Disposition: form-data; name="image"; filename="a.png"', b"\x89PNG"),
        (b'Content-Disposition: form-data; name="n"', b"2"),
        (b'Content-Disposition: form-data; name="size"', b"512x512"),
    )
    assert read_request_fields(EDIT, MULTIPART, body).document == {"n": "2", "size": "512x512"}
