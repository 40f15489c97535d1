"""Settings precedence and one-line errors for bad configuration."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from docvec.config import load_settings
from docvec.errors import ConfigError


def test_defaults_without_a_file(tmp_path: Path) -> None:
    s = load_settings(None, {}, cwd=tmp_path)
    assert s.embedding.provider == "builtin" and s.query.top_k == 5 and s.base_dir == tmp_path


def test_repository_config_yaml_is_valid_and_matches_defaults() -> None:
    root = Path(__file__).resolve().parents[1]
    s = load_settings(root / "config.yaml", {})
    d = load_settings(None, {}, cwd=root / "tests")
    assert (s.docs, s.embedding, s.chunking, s.store, s.query) == (d.docs, d.embedding, d.chunking, d.store, d.query)


def test_precedence_flag_over_env_over_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("query:\n  top_k: 3\n  min_score: 0.2\nstore:\n  path: idx\n")
    env = {"DOCVEC_CONFIG": str(cfg), "DOCVEC_QUERY_TOP_K": "7"}
    s = load_settings(None, env, {"query.min_score": 0.5})
    assert s.query.top_k == 7 and s.query.min_score == 0.5
    assert s.resolve(s.store.path) == tmp_path / "idx"  # relative to the config file


@pytest.mark.parametrize("content, message", [
    ("query:\n  top_kk: 3\n", "unknown key 'query.top_kk' (did you mean 'top_k'?)"),
    ("qurey:\n  top_k: 3\n", "unknown section 'qurey' (did you mean 'query'?)"),
    ("query:\n  top_k: many\n", "'query.top_k' must be an integer, got str 'many'"),
    ("query:\n  top_k: 0\n", "'query.top_k' is 0; accepted range is 1..1000"),
    ("chunking:\n  max_tokens: -5\n", "'chunking.max_tokens' is -5; accepted range"),
    ("embedding:\n  provider: openai\n", "expected one of builtin"),
    ("query: [1, 2\n", "line 2"),
    ("store:\n  collection: p\n", "'store.collection' is 'p'; expected 3-512 characters"),
    ("- just\n- a list\n", "expected a mapping of sections"),
    # Values YAML takes silently that would index the wrong thing or nothing:
    ("query:\n  top_k: 3\n  mode: vector\n  top_k: 9\n", "line 4: key 'top_k' appears twice"),
    ("query:\n  top_k: 3\nstore:\n  path: x\nquery:\n  mode: vector\n", "line 5: key 'query' appears twice"),
    ("store:\n  path: ''\n", "'store.path' is empty"),  # the project folder itself
    ("docs:\n  path: '  '\n", "'docs.path' is empty"),
    ("docs:\n  include: []\n", "'docs.include' is empty"),  # no file, so every indexed file "removed"
    ("docs:\n  include: ['**/*.md', '']\n", "'docs.include' holds an empty pattern"),
    ("embedding:\n  model: ''\n", "'embedding.model' is empty"),
    ("query:\n  vector_weight: 0\n  keyword_weight: 0\n", "both 0"),
])
def test_bad_config_is_one_clear_line(tmp_path: Path, content: str, message: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(content)
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg, {})
    text = str(exc.value)
    assert message in text and str(cfg) in text and "\n" not in text


def test_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="environment variable DOCVEC_STORE_PORT: 'store.port' must be an integer"):
        load_settings(None, {"DOCVEC_STORE_PORT": "abc"}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="DOCVEC_NOPE_X"):
        load_settings(None, {"DOCVEC_NOPE_X": "1"}, cwd=tmp_path)


def test_yaml_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("query:\n  <<: {top_k: 3, mode: vector}\n  top_k: 2\n")
    s = load_settings(cfg, {})
    assert s.query.top_k == 2 and s.query.mode == "vector"
    with pytest.raises(ConfigError, match="DOCVEC_STORE_PATH: 'store.path' is empty"):
        load_settings(None, {"DOCVEC_STORE_PATH": ""}, cwd=tmp_path)


def test_empty_section_means_defaults(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("chunking:\n  # max_tokens: 128\nquery:\n  top_k: 2\n")
    s = load_settings(cfg, {})
    assert s.chunking.max_tokens == 256 and s.query.top_k == 2


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml", {})


def test_server_settings_headers_and_hnsw(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("store:\n  host: chroma.internal\n  ssl: true\n  headers:\n"
                                          "    Authorization: Bearer abc\n  hnsw_ef_search: 200\n")
    s = load_settings(None, {}, cwd=tmp_path).store
    assert (s.host, s.ssl, s.headers, s.hnsw_ef_search, s.hnsw_max_neighbors) == \
        ("chroma.internal", True, {"Authorization": "Bearer abc"}, 200, None)
    env = {"DOCVEC_STORE_HEADERS": '{"X-Token": 42}'}
    assert load_settings(None, env, cwd=tmp_path).store.headers == {"X-Token": "42"}
    with pytest.raises(ConfigError, match="'store.headers' must be a mapping of names to strings, got list"):
        load_settings(None, {"DOCVEC_STORE_HEADERS": "[a, b]"}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="'store.hnsw_max_neighbors' is 1; accepted range is 2..1000"):
        load_settings(None, {"DOCVEC_STORE_HNSW_MAX_NEIGHBORS": "1"}, cwd=tmp_path)


def test_server_flags_reach_the_settings(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from docvec.cli import cli

    bad = CliRunner().invoke(cli, ["status", "--header", "no colon here"])
    assert bad.exit_code == 2 and "expected 'Name: value'" in bad.output
    port = 1  # nothing listens there: the error names what the flags said
    (tmp_path / "c.yaml").write_text("")
    result = CliRunner().invoke(cli, ["status", "--config", str(tmp_path / "c.yaml"), "--host", "127.0.0.1",
                                      "--port", str(port), "--ssl", "--header", "Authorization: Bearer x"])
    assert result.exit_code == 1 and "https://127.0.0.1:1" in result.output


@pytest.mark.parametrize("env, host, port, ssl", [
    ({"DOCVEC_STORE_HOST": "chroma.internal"}, "chroma.internal", 8000, False),
    ({"DOCVEC_STORE_HOST": "http://chroma.internal:9000"}, "chroma.internal", 9000, False),
    ({"DOCVEC_STORE_HOST": "https://chroma.example.com"}, "chroma.example.com", 443, True),
    ({"DOCVEC_STORE_HOST": "https://chroma.example.com/", "DOCVEC_STORE_PORT": "8443"}, "chroma.example.com", 8443,
     True),
    ({"DOCVEC_STORE_HOST": "http://h"}, "h", 8000, False),
    ({"DOCVEC_STORE_HOST": "::1"}, "[::1]", 8000, False),
    ({"DOCVEC_STORE_HOST": "http://[::1]:8001"}, "[::1]", 8001, False),
])
def test_store_host_may_be_a_url(tmp_path: Path, env: dict[str, str], host: str, port: int, ssl: bool) -> None:
    """A URL in store.host (as Chroma's docs write it) gives host, port and ssl: not http://http://h:8000."""
    s = load_settings(None, env, cwd=tmp_path)
    assert (s.store.host, s.store.port, s.store.ssl) == (host, port, ssl)


@pytest.mark.parametrize("value, message", [
    ("http://user:hunter22@h:1", "must not hold credentials"),
    ("ftp://h", "expected a host name, or a URL http(s)://host[:port]"),
    ("http://h/api", "with nothing after the port"),
    ("h/x", "expected a host name or IP address"),
    ("http://h:99999", "not a valid URL"),
])
def test_bad_store_host_is_one_line_without_secrets(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as raised:
        load_settings(None, {"DOCVEC_STORE_HOST": value}, cwd=tmp_path)
    assert "hunter22" not in str(raised.value) and "\n" not in str(raised.value)


def test_store_host_port_and_store_port_must_agree(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="names port 9000 and 'store.port' is 8000: keep one"):
        load_settings(None, {"DOCVEC_STORE_HOST": "http://h:9000", "DOCVEC_STORE_PORT": "8000"}, cwd=tmp_path)


def test_a_store_host_carrying_a_token_is_never_echoed(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from docvec.cli import cli

    for host in ("127.0.0.1:9?token=SECRETVALUE", "https://chroma:8000/?token=SECRETVALUE", "chroma#SECRETVALUE",
                 "https://chroma:8000/SECRETVALUE", "user:SECRETVALUE@chroma?x", "http://[::1?SECRETVALUE"):
        config = tmp_path / "config.yaml"
        config.write_text(f"store:\n  host: {host!r}\n")
        result = CliRunner().invoke(cli, ["--config", str(config), "status"])
        assert result.exit_code == 2 and "store.host" in result.output, (host, result.output)
        assert "SECRETVALUE" not in result.output, (host, result.output)


def test_a_config_that_is_a_folder_a_fifo_or_huge_is_named_for_what_it_is(tmp_path: Path) -> None:
    import os

    from click.testing import CliRunner

    from docvec.cli import cli

    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.yaml"
    huge.write_text("# padding\n" * 200_000)
    for path, words in ((tmp_path, "is a folder"), (fifo, "is not a regular file"),
                        (tmp_path / "nope.yaml", "does not exist"), (huge, "larger than 1024 KiB")):
        result = CliRunner().invoke(cli, ["--config", str(path), "status"])
        assert result.exit_code == 2 and words in result.output, (path, result.output)
        assert len(result.output.strip().splitlines()) == 1
