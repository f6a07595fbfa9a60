"""Offline tiktoken: the bundled BPE files, hash-checked, and the encoding each model uses."""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import stat
import tempfile
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import tiktoken

DATA_DIR = Path(__file__).with_name("data")
O200K = "o200k_base"
CL100K = "cl100k_base"


@dataclass(frozen=True, slots=True)
class _BpeSource:
    url: str  # where tiktoken would download it; its cache file is named by this URL's sha1
    sha256: str  # tiktoken's expected hash of the decompressed file (tiktoken_ext/openai_public)


_BUNDLED: dict[str, _BpeSource] = {
    O200K: _BpeSource(
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    CL100K: _BpeSource(
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
}

# Longest matching prefix wins, so "gpt-4o-mini" is o200k although "gpt-4" is cl100k.
_ENCODING_BY_PREFIX: dict[str, str] = {
    "gpt-4o": O200K,
    "gpt-4.1": O200K,
    "gpt-4.5": O200K,
    "gpt-5": O200K,
    "o1": O200K,
    "o3": O200K,
    "o4": O200K,
    "chatgpt-4o": O200K,
    "gpt-image-": O200K,
    "codex": O200K,
    "omni-moderation": O200K,
    # o200k_harmony only adds special tokens, so ordinary text counts the same.
    "gpt-oss": O200K,
    "gpt-4": CL100K,
    "gpt-3.5": CL100K,
    "gpt-35": CL100K,  # Azure's spelling
    "text-embedding-3-": CL100K,
    "text-embedding-ada-002": CL100K,
    "davinci-002": CL100K,
    "babbage-002": CL100K,
}
_FALLBACK = O200K

_COUNT_CACHE_ENTRIES = 16_384


class BundledBpeError(RuntimeError):
    """A bundled BPE file is missing, unreadable, or not the file tiktoken expects."""


@dataclass(frozen=True, slots=True)
class ModelEncoding:
    encoding: tiktoken.Encoding
    name: str
    exact: bool  # False: the model's own tokenizer is not bundled, so counts approximate it


def read_bundled_bpe(encoding_name: str, data_dir: Path | None = None) -> bytes:
    """Decompress a bundled BPE file and check it against tiktoken's published sha256."""
    source = _BUNDLED.get(encoding_name)
    if source is None:
        raise ValueError(f"no bundled BPE file for encoding {encoding_name!r}")
    path = (DATA_DIR if data_dir is None else data_dir) / f"{encoding_name}.tiktoken.gz"
    try:
        blob = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as error:
        raise BundledBpeError(f"cannot read bundled BPE file {path}: {error}") from error
    actual = hashlib.sha256(blob).hexdigest()
    if actual != source.sha256:
        raise BundledBpeError(
            f"bundled BPE file {path} has sha256 {actual}, expected {source.sha256}: "
            "the package data is corrupt; reinstall llm-metering-proxy"
        )
    return blob


_load_lock = threading.Lock()
_loaded: dict[str, tiktoken.Encoding] = {}


def load_encoding(encoding_name: str) -> tiktoken.Encoding:
    """The named bundled encoding; loaded once per process, never from the network."""
    encoding = _loaded.get(encoding_name)
    if encoding is not None:
        return encoding
    with _load_lock:
        encoding = _loaded.get(encoding_name)
        if encoding is None:
            encoding = _load_from_bundle(encoding_name)
            _loaded[encoding_name] = encoding
    return encoding


def warm_up() -> None:
    """Load every bundled encoding now, so that no metered call waits for it."""
    for name in _BUNDLED:
        load_encoding(name).encode_ordinary("warm up")


def _load_from_bundle(encoding_name: str) -> tiktoken.Encoding:
    blob = read_bundled_bpe(encoding_name)
    cache_dir = _private_cache_dir()
    cache_key = hashlib.sha1(_BUNDLED[encoding_name].url.encode()).hexdigest()
    _write_atomically(cache_dir / cache_key, blob)
    # tiktoken finds a file in its cache before it would download one; the variable is how it is
    # told where that cache is, and it re-checks the hash itself.
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)
    return tiktoken.get_encoding(encoding_name)


def _private_cache_dir() -> Path:
    """A directory under the temp root that only this user can write, so no one can swap files."""
    path = Path(tempfile.gettempdir()) / f"llm-metering-proxy-tiktoken-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        info = path.lstat()
    except OSError:
        return Path(tempfile.mkdtemp(prefix="llm-metering-proxy-tiktoken-"))
    owned_and_private = (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid == os.getuid()
        and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )
    if owned_and_private:
        return path
    return Path(tempfile.mkdtemp(prefix="llm-metering-proxy-tiktoken-"))


def _write_atomically(path: Path, blob: bytes) -> None:
    # Several workers may write the same file at once; each renames its own complete copy.
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(blob)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


@functools.lru_cache(maxsize=1024)
def encoding_name_for_model(model: str) -> tuple[str, bool]:
    """The encoding a model uses and whether it is the model's own (False: an approximation)."""
    base = _base_model(model)
    matches = [prefix for prefix in _ENCODING_BY_PREFIX if base.startswith(prefix)]
    if not matches:
        return _FALLBACK, False
    return _ENCODING_BY_PREFIX[max(matches, key=len)], True


def encoding_for_model(model: str) -> ModelEncoding:
    """The loaded encoding for a model, flagged when it only approximates the model's tokenizer."""
    name, exact = encoding_name_for_model(model)
    return ModelEncoding(load_encoding(name), name, exact)


def _base_model(model: str) -> str:
    """`openai/gpt-4o` and `ft:gpt-4o-mini:org::id` both name their base model's tokenizer."""
    base = model.strip().lower().rsplit("/", 1)[-1]
    if base.startswith("ft:"):
        base = base.split(":")[1]
    return base


class _CountCache:
    """LRU of token counts keyed by a digest, so long cached texts are not kept in memory."""

    def __init__(self, entries: int) -> None:
        self._entries = entries
        self._counts: OrderedDict[tuple[str, bytes], int] = OrderedDict()
        self._lock = threading.Lock()

    def count(self, encoding: tiktoken.Encoding, text: str) -> int:
        digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        key = (encoding.name, digest)
        with self._lock:
            found = self._counts.get(key)
            if found is not None:
                self._counts.move_to_end(key)
                return found
        # Special-token text in a prompt is ordinary text to the API, so it must not raise here.
        counted = len(encoding.encode_ordinary(text))
        with self._lock:
            self._counts[key] = counted
            if len(self._counts) > self._entries:
                self._counts.popitem(last=False)
        return counted


_cache = _CountCache(_COUNT_CACHE_ENTRIES)


def count_with(encoding: tiktoken.Encoding, text: str) -> int:
    """Tokens in `text` under `encoding`; repeated texts (system prompts, old turns) are cached."""
    return _cache.count(encoding, text) if text else 0


def count_text(model: str, text: str) -> int:
    """Tokens in `text` as `model` counts them (approximately for models not bundled)."""
    return count_with(encoding_for_model(model).encoding, text)
