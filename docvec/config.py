"""Settings: built-in defaults < config file < DOCVEC_* environment < command-line flags.

The loader takes the environment as a value (the CLI passes ``os.environ``) so that nothing below the CLI
reads the process environment.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import yaml

from docvec.errors import ConfigError

CONFIG_ENV = "DOCVEC_CONFIG"
ENV_PREFIX = "DOCVEC_"
OLLAMA_HOST_ENV = "OLLAMA_HOST"  # honoured as Ollama's own tools do, below every docvec setting
DEFAULT_OLLAMA_HOST = "http://127.0.0.1:11434"


@dataclass(frozen=True)
class DocsSettings:
    path: str = "data/docs"
    include: list[str] = field(default_factory=lambda: ["**/*.md", "**/*.markdown", "**/*.mdx"])
    exclude: list[str] = field(default_factory=list)
    skip_hidden: bool = True
    follow_symlinks: bool = False
    max_file_mb: float = 20.0


@dataclass(frozen=True)
class EmbeddingSettings:
    provider: str = "builtin"
    model: str = "all-MiniLM-L6-v2"
    batch_size: int = 32
    threads: int = 0
    # ollama only
    host: Union[str, None] = None  # None: $OLLAMA_HOST, else DEFAULT_OLLAMA_HOST (resolved by load_settings)
    timeout: float = 120.0
    keep_alive: str = "5m"
    batch_tokens: int = 8192
    concurrency: int = 1
    retries: int = 3
    query_prefix: Union[str, None] = None  # None: the model family's documented prefix
    document_prefix: Union[str, None] = None
    allow_chat_models: bool = False


@dataclass(frozen=True)
class ChunkingSettings:
    max_tokens: int = 256
    min_tokens: int = 48
    overlap_tokens: int = 32
    heading_context: bool = True


@dataclass(frozen=True)
class StoreSettings:
    path: str = "data/index"
    host: Union[str, None] = None
    port: int = 8000
    collection: str = "docvec"
    ssl: bool = False
    headers: dict[str, str] = field(default_factory=dict)  # e.g. {"Authorization": "Bearer ..."}
    tenant: str = "default_tenant"
    database: str = "default_database"
    # HNSW's beam: reads up to this deep explore the same graph, so a longer list never reorders the first hits
    # (Chroma's 100 let -k 100 reorder the top 5 of 4 in 68 span questions in vector mode); +0.4 ms at 100k chunks.
    # Changeable on a built index (None: Chroma's default).
    hnsw_ef_search: Union[int, None] = 400
    hnsw_ef_construction: Union[int, None] = None  # None: Chroma's default (100); fixed when a collection is made
    hnsw_max_neighbors: Union[int, None] = None  # None: Chroma's default (16); fixed when a collection is made


@dataclass(frozen=True)
class QuerySettings:
    top_k: int = 5
    min_score: float = 0.0
    mode: str = "hybrid"
    fusion: str = "score"
    vector_weight: float = 0.7
    keyword_weight: float = 0.3
    rrf_k: int = 60
    candidates: int = 0
    per_file: int = 0
    file_penalty: float = 0.05
    spans: str = "words"


@dataclass(frozen=True)
class ServeSettings:
    listen: str = "127.0.0.1:8765"
    token: Union[str, None] = None  # required to bind anything but a loopback address; never printed or logged
    debounce_ms: int = 500  # watch mode: quiet time after the last change before one sync runs


@dataclass(frozen=True)
class Settings:
    docs: DocsSettings = field(default_factory=DocsSettings)
    embedding: EmbeddingSettings = field(default_factory=EmbeddingSettings)
    chunking: ChunkingSettings = field(default_factory=ChunkingSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    query: QuerySettings = field(default_factory=QuerySettings)
    serve: ServeSettings = field(default_factory=ServeSettings)
    #: folder that relative paths in the settings are resolved against (the config file's folder)
    base_dir: Path = field(default_factory=Path.cwd)
    #: the config file these settings were read from (None: defaults and environment only)
    config_file: Union[Path, None] = None

    def resolve(self, relative: str) -> Path:
        """Resolve a path from the settings against the config file's folder."""
        try:
            path = Path(relative).expanduser()
        except RuntimeError as exc:  # ~nosuchuser/...
            raise ConfigError(f"path '{relative}': {exc} — use an absolute path or an existing user's ~") from exc
        return path if path.is_absolute() else (self.base_dir / path)


SECTIONS: dict[str, type] = {
    f.name: typing.get_type_hints(Settings)[f.name] for f in dataclasses.fields(Settings)
    if f.name not in ("base_dir", "config_file")
}

SECRET_SUFFIXES = ("token", "headers")  # settings whose values no message may show

# Ranges a value must lie in, checked after types: (section, key) -> (min, max), None meaning unbounded.
RANGES: dict[tuple[str, str], tuple[float | None, float | None]] = {
    ("docs", "max_file_mb"): (0.001, 4096),
    ("embedding", "batch_size"): (1, 4096),
    ("embedding", "threads"): (0, 256),
    ("embedding", "timeout"): (0.1, 86_400),
    ("embedding", "batch_tokens"): (16, 1_000_000),
    ("embedding", "concurrency"): (1, 64),
    ("embedding", "retries"): (0, 20),
    ("chunking", "max_tokens"): (16, 8192),
    ("chunking", "min_tokens"): (0, 8192),
    ("chunking", "overlap_tokens"): (0, 8192),
    ("store", "port"): (1, 65535),
    ("store", "hnsw_ef_search"): (1, 100_000),
    ("store", "hnsw_ef_construction"): (1, 100_000),
    ("store", "hnsw_max_neighbors"): (2, 1_000),
    ("query", "top_k"): (1, 1000),
    ("query", "min_score"): (-1.0, 1.0),
    ("query", "vector_weight"): (0.0, 100.0),
    ("query", "keyword_weight"): (0.0, 100.0),
    ("query", "rrf_k"): (1, 10_000),
    ("query", "candidates"): (0, 10_000),
    ("query", "per_file"): (0, 1000),
    ("query", "file_penalty"): (0.0, 2.0),
    ("serve", "debounce_ms"): (0, 600_000),
}
MIN_TOKEN_CHARS = 16  # a serve token guards an index reachable from other machines: no "abc", no "   "
# Chroma's own rule for collection names, checked here so the error names the setting.
PATTERNS: dict[tuple[str, str], tuple[str, str]] = {
    ("store", "collection"): (r"[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]",
                              "3-512 characters of a-z A-Z 0-9 . _ -, starting and ending with a letter or digit"),
    # visible ASCII: sent verbatim in an Authorization header
    ("serve", "token"): (rf"[\x21-\x7e]{{{MIN_TOKEN_CHARS},}}",
                         f"at least {MIN_TOKEN_CHARS} visible ASCII characters without spaces, e.g. the output of: "
                         "python -c \"import secrets; print(secrets.token_urlsafe())\""),
}
# Text settings that an empty (or blank) value would silently turn into something else: store.path "" is the
# project folder itself, an empty model name Ollama's default, include [] no file at all (so every file "removed").
NOT_EMPTY = {("docs", "path"), ("docs", "include"), ("store", "path"), ("store", "tenant"), ("store", "database"),
             ("embedding", "model"), ("embedding", "host"), ("embedding", "keep_alive"), ("serve", "listen"),
             ("serve", "token")}
CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("embedding", "provider"): ("builtin", "ollama"),
    ("query", "mode"): ("vector", "keyword", "hybrid"),
    ("query", "fusion"): ("score", "rrf"),
    ("query", "spans"): ("words", "model", "off"),
}


def include_suffixes(include: Sequence[str]) -> tuple[str, ...]:
    """The file endings docs.include's globs name ("**/*.md" -> ".md"), for cheap checks that do not glob."""
    return tuple(sorted({os.path.splitext(p)[1] for p in include if os.path.splitext(p)[1]}))


def load_settings(
    config_path: Path | None,
    environ: Mapping[str, str],
    overrides: Mapping[str, Any] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Build Settings from defaults, a config file, DOCVEC_* variables and ``section.key`` overrides."""
    cwd = cwd or Path.cwd()
    path = _pick_config_file(config_path, environ, cwd)
    raw: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    origins: dict[tuple[str, str], str] = {}  # where each value came from, for error messages
    if path is not None:
        _merge(raw, origins, _read_yaml(path), str(path))
    _merge(raw, origins, _env_values(environ), "environment variable DOCVEC_{SECTION}_{KEY}")
    _merge(raw, origins, _nest(overrides or {}), "command line")
    if raw["embedding"].get("host") is None:
        raw["embedding"]["host"] = environ.get(OLLAMA_HOST_ENV) or DEFAULT_OLLAMA_HOST
        origins[("embedding", "host")] = f"environment variable {OLLAMA_HOST_ENV}"
    sections = {name: _build_section(name, cls, raw[name], origins) for name, cls in SECTIONS.items()}
    sections["store"] = _store_host(sections["store"], origins)
    settings = Settings(**sections, base_dir=path.parent if path else cwd, config_file=path)
    _check_relations(settings, str(path) if path else "settings")
    return settings


def _pick_config_file(config_path: Path | None, environ: Mapping[str, str], cwd: Path) -> Path | None:
    if config_path is None and environ.get(CONFIG_ENV):
        config_path = Path(environ[CONFIG_ENV])
    if config_path is not None:
        if not config_path.is_file():
            what = ("is a folder, not a config file" if config_path.is_dir() else "is not a regular file"
                    if config_path.exists() else "does not exist")
            raise ConfigError(f"config file {config_path} {what}: fix the path or unset {CONFIG_ENV}")
        return config_path.resolve()
    default = cwd / "config.yaml"
    if default.is_file():
        return default.resolve()
    for folder in cwd.resolve().parents:  # like git and ruff: the project's config from any subfolder
        candidate = folder / "config.yaml"
        if candidate.is_file() and _looks_like_ours(candidate):
            return candidate
    home = environ.get("XDG_CONFIG_HOME") or (str(Path(environ["HOME"]) / ".config") if environ.get("HOME") else None)
    user = Path(home) / "docvec" / "config.yaml" if home else None
    return user.resolve() if user is not None and user.is_file() else None


def _looks_like_ours(path: Path) -> bool:
    """A parent folder's config.yaml counts only if it is docvec's (another tool's config.yaml is not)."""
    try:
        data = yaml.safe_load(_config_text(path))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ConfigError):
        return False
    return isinstance(data, dict) and bool(data) and set(data) <= set(SECTIONS)


MAX_CONFIG_BYTES = 2**20


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML keeps the last one silently, so a
    second `top_k:` further down would quietly win over the one the user is looking at)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` then an override is not a duplicate
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, typing.Hashable):
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key '{key}' appears twice in one mapping: keep one", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """YAML's safe load, refusing a key given twice in one mapping (yaml.YAMLError naming the line)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def _config_text(path: Path) -> str:
    """A config file's text; one larger than MAX_CONFIG_BYTES is refused before YAML parses it (50 MB took
    over 20 s), and what is read is capped, whatever the file does meanwhile."""
    with path.open("rb") as f:
        data = f.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_CONFIG_BYTES // 2**10} KiB, which no docvec config needs: "
                          f"is it the right file?")
    return data.decode("utf-8")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = load_yaml(_config_text(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise ConfigError(f"{path}{where}: {problem} — fix the YAML syntax") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections ({', '.join(SECTIONS)}), got {_kind(data)}")
    return data


def _env_values(environ: Mapping[str, str]) -> dict[str, Any]:
    """DOCVEC_STORE_PATH=x -> {"store": {"path": "x"}}; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        rest = name[len(ENV_PREFIX):].lower()
        section = next((s for s in SECTIONS if rest.startswith(s + "_")), None)
        if section is None:
            raise ConfigError(f"environment variable {name}: unknown setting — expected DOCVEC_<SECTION>_<KEY> "
                              f"with SECTION one of {', '.join(SECTIONS)}")
        key = rest[len(section) + 1:]
        if _is_text(section, key):  # a token or path is taken as written ("0123" is not the number 123)
            parsed: Any = value
        else:
            try:
                parsed = yaml.safe_load(value) if value.strip() else value
            except yaml.YAMLError:
                parsed = value
        out.setdefault(section, {})[key] = parsed
    return out


def _is_text(section: str, key: str) -> bool:
    """Whether a setting holds text (str or None), so that an environment value must not be parsed as YAML."""
    expected = typing.get_type_hints(SECTIONS[section]).get(key)
    return expected is str or (typing.get_origin(expected) in (Union, types.UnionType)
                               and set(typing.get_args(expected)) == {str, type(None)})


def _nest(overrides: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, key = dotted.split(".", 1)
        out.setdefault(section, {})[key] = value
    return out


def _merge(raw: dict[str, dict[str, Any]], origins: dict[tuple[str, str], str], layer: Mapping[str, Any],
           origin: str) -> None:
    for section, values in layer.items():
        if values is None:
            values = {}  # a section whose keys are all commented out
        if section not in SECTIONS:
            raise ConfigError(f"{origin}: unknown section '{section}'{_suggest(str(section), SECTIONS)} "
                              f"— expected one of {', '.join(SECTIONS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{origin}: section '{section}' must be a mapping of keys, got {_kind(values)}")
        raw[section].update(values)
        for key in values:
            origins[(section, str(key))] = origin.format(SECTION=section.upper(), KEY=str(key).upper())


def _build_section(name: str, cls: type, values: dict[str, Any], origins: dict[tuple[str, str], str]) -> Any:
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        origin = origins[(name, key)]
        if key not in hints:
            raise ConfigError(f"{origin}: unknown key '{name}.{key}'{_suggest(str(key), hints)} "
                              f"— valid keys: {', '.join(hints)}")
        values[key] = _check_value(f"{name}.{key}", value, hints[key], origin)
        _check_range(name, key, values[key], origin)
    return cls(**values)


def _check_value(key: str, value: Any, expected: Any, origin: str) -> Any:
    origin_type = typing.get_origin(expected)
    if origin_type in (Union, types.UnionType):
        if value is None and type(None) in typing.get_args(expected):
            return None
        expected = next(a for a in typing.get_args(expected) if a is not type(None))
        origin_type = typing.get_origin(expected)
    if origin_type is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, (str, int, float))
                                                  for k, v in value.items()):
            raise ConfigError(f"{origin}: '{key}' must be a mapping of names to strings, got {_kind(value)}")
        headers = {k: str(v) for k, v in value.items()}
        check_headers(headers, f"{origin}: '{key}'")
        return headers
    if origin_type is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{origin}: '{key}' must be a list of strings, got {_kind(value)}")
        return list(value)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{origin}: '{key}' must be a finite number, got {value!r}")
    if expected is not bool and isinstance(value, bool) or not isinstance(value, expected):
        shown = "" if key.endswith(SECRET_SUFFIXES) else f" {value!r}"  # a secret is never echoed
        raise ConfigError(f"{origin}: '{key}' must be {_type_name(expected)}, got {_kind(value)}{shown}")
    return value


def _check_range(section: str, key: str, value: Any, origin: str) -> None:
    if value is None:
        return
    if (section, key) in NOT_EMPTY and _blank(value):
        default = getattr(SECTIONS[section](), key)
        hint = f" (the default is {default!r})" if default is not None and not key.endswith(SECRET_SUFFIXES) else ""
        what = "holds an empty pattern" if isinstance(value, list) and value else "is empty"
        raise ConfigError(f"{origin}: '{section}.{key}' {what}; give it a value or remove the key{hint}")
    low, high = RANGES.get((section, key), (None, None))
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"{origin}: '{section}.{key}' is {value}; accepted range is {low}..{high}")
    pattern = PATTERNS.get((section, key))
    if pattern and not re.fullmatch(pattern[0], value):
        shown = "not valid" if key.endswith(SECRET_SUFFIXES) else repr(value)  # a secret is never echoed
        raise ConfigError(f"{origin}: '{section}.{key}' is {shown}; expected {pattern[1]}")
    choices = CHOICES.get((section, key))
    if choices and value not in choices:
        raise ConfigError(f"{origin}: '{section}.{key}' is {value!r}; expected one of {', '.join(choices)}")


_HOST = re.compile(r"[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")  # name, IPv4, IPv6


def _host_shown(value: str) -> str:
    """store.host as a message may show it: user-info, a path, a query or a fragment can carry a token, so
    they are replaced by '…'."""
    scheme, sep, rest = value.rpartition("://") if "://" in value else ("", "", value)
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in authority:
        authority = "…@" + authority.rsplit("@", 1)[1]
    return f"{scheme}{sep}{authority}" + ("…" if len(authority) < len(rest) or "…@" in authority else "")


def _store_host(store: StoreSettings, origins: Mapping[tuple[str, str], str]) -> StoreSettings:
    """store.host as a bare host name. A URL (http://chroma:8000, as Chroma's own docs write it) gives the host,
    the port and ssl; anything else is refused here, not by a connection error that quotes it back mangled."""
    if store.host is None:
        return store
    origin = origins.get(("store", "host"), "settings")
    if "://" not in store.host:
        if not _HOST.fullmatch(store.host):
            raise ConfigError(f"{origin}: 'store.host' is {_host_shown(store.host)!r}; expected a host name or IP "
                              f"address, or a URL http(s)://host[:port]")
        return dataclasses.replace(store, host=_bracketed(store.host))
    try:
        url = urllib.parse.urlsplit(store.host)
        port = url.port
    except ValueError:
        raise ConfigError(f"{origin}: 'store.host' {_host_shown(store.host)!r} is not a valid URL") from None
    if url.username is not None or url.password is not None:  # the value is not shown: it holds a password
        raise ConfigError(f"{origin}: 'store.host' must not hold credentials: send them as a header in "
                          f"store.headers (e.g. Authorization), set from an environment variable")
    if url.scheme not in ("http", "https") or not url.hostname or url.path.strip("/") or url.query or url.fragment:
        raise ConfigError(f"{origin}: 'store.host' is {_host_shown(store.host)!r}; expected a host name, or a URL "
                          f"http(s)://host[:port] with nothing after the port")
    explicit = ("store", "port") in origins
    if port is not None and explicit and port != store.port:
        raise ConfigError(f"{origin}: 'store.host' names port {port} and 'store.port' is {store.port}: keep one")
    if port is None:  # https://host is port 443 as a browser reads it; http://host is Chroma's 8000
        port = store.port if explicit or url.scheme == "http" else 443
    return dataclasses.replace(store, host=_bracketed(url.hostname), port=port, ssl=url.scheme == "https")


def _bracketed(host: str) -> str:
    """An IPv6 address in brackets, as URLs need it (Chroma builds http://HOST:PORT)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _blank(value: Any) -> bool:
    """An empty or whitespace-only text, or a list that is empty or holds one."""
    if isinstance(value, list):
        return not value or any(_blank(v) for v in value)
    return isinstance(value, str) and not value.strip()


def _check_relations(settings: Settings, origin: str) -> None:
    q = settings.query
    if q.vector_weight + q.keyword_weight == 0:
        raise ConfigError(f"{origin}: query.vector_weight and query.keyword_weight are both 0, so every hybrid "
                          f"score would be 0: give one of them a weight above 0")
    e = settings.embedding
    if e.provider == "builtin" and (e.query_prefix or e.document_prefix):
        raise ConfigError(f"{origin}: embedding.query_prefix/document_prefix apply to the ollama provider; "
                          f"the built-in model uses none — remove them")
    c = settings.chunking
    if c.min_tokens >= c.max_tokens or c.overlap_tokens >= c.max_tokens // 2:
        raise ConfigError(f"{origin}: chunking needs min_tokens < max_tokens and overlap_tokens < max_tokens/2 "
                          f"(got min {c.min_tokens}, overlap {c.overlap_tokens}, max {c.max_tokens})")


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token


def check_headers(headers: Mapping[str, str], where: str) -> None:
    """HTTP header names must be tokens and values free of control characters (CR/LF would inject headers).
    Errors name the header, never its value: values are usually secrets."""
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise ConfigError(f"{where}: header name {name!r} is not a valid HTTP header name")
        if any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in value):
            raise ConfigError(f"{where}: the value of header '{name}' contains a line break or control character "
                              f"— remove it (the value is not shown)")


def _suggest(word: str, options: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _type_name(t: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(t, str(t))


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__
