"""tiktoken works offline from the bundled, hash-checked BPE files; models map to encodings."""

from __future__ import annotations

import gzip
import hashlib
import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tiktoken_ext.openai_public

from proxy.metering import tokens
from proxy.metering.tokens import CL100K, O200K, BundledBpeError

REPO_ROOT = Path(__file__).resolve().parents[2]
BLOB_URLS = {
    O200K: "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
    CL100K: "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
}


def _network_namespace_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


def run_offline(code: str, temp_root: Path) -> str:
    """Run Python code with no network (a fresh network namespace, else an unroutable proxy)."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR")
    }
    env["TMPDIR"] = str(temp_root)
    # Also set under unshare: if anything tried a download, it would fail either way.
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        env[name] = "http://127.0.0.1:9"
    command = [sys.executable, "-c", code]
    if _network_namespace_works():
        command = ["unshare", "-n", *command]
    done = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def copy_of_bundle(tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    shutil.copytree(tokens.DATA_DIR, data_dir)
    return data_dir


def test_encodings_load_and_count_with_networking_impossible(tmp_path: Path) -> None:
    temp_root = tmp_path / "empty-temp-root"
    temp_root.mkdir()
    code = (
        "from proxy.metering import tokens\n"
        "for model in ('gpt-4o', 'gpt-4'):\n"
        "    print(tokens.count_text(model, 'hello world'),"
        " tokens.count_text(model, 'お誕生日おめでとう'))\n"
    )
    # Counts from tiktoken and the cookbook's "Comparing encodings" (o200k 8, cl100k 9).
    assert run_offline(code, temp_root).splitlines() == ["2 8", "2 9"]


def test_concurrent_first_loads_share_one_encoding(tmp_path: Path) -> None:
    code = (
        "from concurrent.futures import ThreadPoolExecutor\n"
        "from proxy.metering import tokens\n"
        "with ThreadPoolExecutor(8) as pool:\n"
        "    loaded = list(pool.map(tokens.load_encoding, ['o200k_base'] * 8))\n"
        "print(len({id(encoding) for encoding in loaded}))\n"
    )
    assert run_offline(code, tmp_path) == "1"


def test_tiktoken_finds_the_file_in_a_private_cache_under_the_temp_root(tmp_path: Path) -> None:
    code = (
        "import os\n"
        "from proxy.metering import tokens\n"
        "tokens.warm_up()\n"
        "print(os.environ['TIKTOKEN_CACHE_DIR'])\n"
    )
    cache_dir = Path(run_offline(code, tmp_path))
    assert cache_dir.parent == tmp_path
    assert cache_dir.stat().st_mode & 0o077 == 0
    for name, url in BLOB_URLS.items():
        cached = cache_dir / hashlib.sha1(url.encode()).hexdigest()
        assert cached.read_bytes() == tokens.read_bundled_bpe(name)


def test_bundled_hashes_are_the_ones_tiktoken_publishes() -> None:
    published = inspect.getsource(tiktoken_ext.openai_public)
    for name, url in BLOB_URLS.items():
        expected = hashlib.sha256(tokens.read_bundled_bpe(name)).hexdigest()
        assert f'"{url}",\n        expected_hash="{expected}"' in published


def test_a_bundled_file_with_altered_content_fails_the_hash_check(tmp_path: Path) -> None:
    data_dir = copy_of_bundle(tmp_path)
    path = data_dir / "o200k_base.tiktoken.gz"
    content = bytearray(gzip.decompress(path.read_bytes()))
    content[1000] ^= 0x01
    path.write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(BundledBpeError, match="sha256"):
        tokens.read_bundled_bpe(O200K, data_dir)


def test_a_bundled_file_with_a_flipped_compressed_byte_is_rejected(tmp_path: Path) -> None:
    data_dir = copy_of_bundle(tmp_path)
    path = data_dir / "cl100k_base.tiktoken.gz"
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(BundledBpeError):
        tokens.read_bundled_bpe(CL100K, data_dir)


def test_a_missing_bundled_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(BundledBpeError, match="cannot read"):
        tokens.read_bundled_bpe(O200K, tmp_path)


def test_each_encoding_loads_once_per_process() -> None:
    assert tokens.load_encoding(CL100K) is tokens.load_encoding(CL100K)


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", O200K),
        ("gpt-4o-2024-08-06", O200K),
        ("gpt-4o-mini", O200K),
        ("chatgpt-4o-latest", O200K),
        ("gpt-4.1-nano", O200K),
        ("gpt-4.5-preview", O200K),
        ("gpt-5", O200K),
        ("gpt-5-mini-2025-08-07", O200K),
        ("o1", O200K),
        ("o3-mini", O200K),
        ("o4-mini-2025-04-16", O200K),
        ("gpt-image-1", O200K),
        ("codex-mini-latest", O200K),
        ("omni-moderation-latest", O200K),
        ("gpt-4", CL100K),
        ("gpt-4-0613", CL100K),
        ("gpt-4-turbo", CL100K),
        ("gpt-3.5-turbo-0125", CL100K),
        ("gpt-35-turbo", CL100K),
        ("text-embedding-3-small", CL100K),
        ("text-embedding-ada-002", CL100K),
    ],
)
def test_openai_models_map_to_their_own_encoding(model: str, encoding: str) -> None:
    assert tokens.encoding_name_for_model(model) == (encoding, True)


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("ft:gpt-4o-mini:my-org::9abcDEF1", O200K),
        ("ft:gpt-3.5-turbo-0125:my-org:custom:id", CL100K),
        ("openai/gpt-4o", O200K),
        ("GPT-4o", O200K),
    ],
)
def test_fine_tuned_and_prefixed_names_map_to_their_base_model(model: str, encoding: str) -> None:
    assert tokens.encoding_name_for_model(model) == (encoding, True)


@pytest.mark.parametrize(
    "model",
    [
        "meta-llama/Llama-3.1-8B-Instruct",
        "llama3.1:8b",
        "mistralai/Mistral-7B-Instruct-v0.3",
        "Qwen/Qwen2.5-7B-Instruct",
        "",
    ],
)
def test_other_models_get_o200k_flagged_as_approximate(model: str) -> None:
    found = tokens.encoding_for_model(model)
    assert (found.name, found.exact) == (O200K, False)
    assert found.encoding.name == O200K


def test_count_text_matches_the_cookbook_example() -> None:
    # Cookbook: "tiktoken is great!" is 6 tokens in cl100k_base.
    assert tokens.count_text("gpt-4", "tiktoken is great!") == 6


def test_special_token_text_counts_as_ordinary_text() -> None:
    assert tokens.count_text("gpt-4o", "<|endoftext|>") > 1


def test_a_lone_surrogate_is_counted_not_raised() -> None:
    assert tokens.count_text("gpt-4o", "a\ud800b") > 0


def test_a_repeated_text_counts_the_same_from_the_cache() -> None:
    text = "You are a helpful assistant. " * 50
    uncached = len(tokens.load_encoding(O200K).encode_ordinary(text))
    assert tokens.count_text("gpt-4o", text) == tokens.count_text("gpt-4o", text) == uncached


def test_the_same_text_is_cached_apart_per_encoding() -> None:
    text = "お誕生日おめでとう"
    assert (tokens.count_text("gpt-4o", text), tokens.count_text("gpt-4", text)) == (8, 9)
