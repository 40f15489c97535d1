"""The warm client: `docvec query` answered by a running `docvec serve` of the same index, in a blink.

A query a server answers spends its time starting Python and importing; click, yaml and dataclasses cost more
than the search itself. So the script's entry point hands a `docvec query` to `fast_query` first: it imports only
the standard library, finds the server through a small cache of resolved settings, asks it, prints the answer,
and returns None (the full CLI then runs, as if this module did not exist) whenever anything is unusual: an
option it does not know, no cache entry, a config file that changed, no server, any doubt about an answer.

The cache entry (one small JSON file per config file, folder and environment, in an owner-only folder of the
user's cache) is written by the full CLI after it loaded the settings: the socket beside the index, the
collection, and the query defaults. It is used only while the config file is the very file it was made from
(same inode, size, modification and change times) and the environment and folder are the same.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import zlib
TYPE_CHECKING = False  # typing costs ~7 ms to import: this module is on the warm client's path (query/client.py)
if TYPE_CHECKING:  # and pathlib ~8 ms: paths here are str, handled with os.path
    from typing import Any, Mapping

from docvec.query.limits import MAX_K, MAX_QUERY_CHARS, MODES, SPAN_MODES
from docvec.remote import ask_local_server
from docvec.smallfiles import read_small_file, write_json_atomically
from docvec.text import valid_text

ENV_KEYS = ("OLLAMA_HOST",)  # besides every DOCVEC_* variable: what the settings read from the environment
_VALUE_OPTIONS = {"-k": "top_k", "--top-k": "top_k", "--min-score": "min_score", "--per-file": "per_file",
                  "--file-penalty": "file_penalty", "--where": "where", "--mode": "mode", "--spans": "spans",
                  "--config": "config", "--index": "index", "--collection": "collection"}
_FLAGS = {"--explain": "explain", "--files": "files", "--json": "json"}


def request_body(question: str, where: list[str], q: Mapping[str, Any]) -> dict[str, Any]:
    """What `/search` is asked, from the question, the --where filters and the query settings (as a dict)."""
    fusion = {"method": q["fusion"], "vector_weight": q["vector_weight"], "keyword_weight": q["keyword_weight"],
              "rrf_k": q["rrf_k"], "candidates": q["candidates"], "file_penalty": q["file_penalty"]}
    return {"question": question, "k": q["top_k"], "mode": q["mode"], "where": where, "min_score": q["min_score"],
            "per_file": q["per_file"], "spans": q["spans"], "fusion": fusion}


def checked_hits(answer: Any, collection: str, k: int) -> tuple[list[dict[str, Any]], str]:
    """The hits and docs folder of an answer that is one of this index's: its live collection is this index's, its
    docs folder an absolute path, every hit well formed with a source inside that folder, no more than asked.
    ValueError (or KeyError/TypeError) otherwise."""
    if not isinstance(answer, dict) or not isinstance(answer.get("hits"), list):
        raise ValueError("no list of hits")
    live, root = answer.get("live"), answer.get("docs_root")
    if not isinstance(live, str) or not live.startswith(f"{collection}--"):
        raise ValueError(f"it answers from collection {live!r}, not one of '{collection}'")
    if not isinstance(root, str) or not os.path.isabs(root) or len(answer["hits"]) > k:
        raise ValueError("no docs folder, or more hits than asked")
    hits = [_checked_hit(h) for h in answer["hits"]]
    if any(os.path.isabs(h["source"]) or ".." in h["source"].replace("\\", "/").split("/") for h in hits):
        raise ValueError("a source outside the docs folder")
    return hits, root


def _checked_hit(h: Any) -> dict[str, Any]:
    text_fields, int_fields = ("id", "label", "source", "text"), ("rank", "line", "end_line")
    if not isinstance(h, dict) or not all(isinstance(h.get(f), str) for f in text_fields) or \
            not all(type(h.get(f)) is int for f in int_fields) or type(h.get("score")) not in (int, float):
        raise ValueError("a malformed hit")
    for key in ("answer_lines", "answer_span"):
        pair = h.get(key)
        if pair is not None and not (isinstance(pair, list) and len(pair) == 2 and all(type(v) is int for v in pair)):
            raise ValueError(f"a malformed {key}")
    for place in h.get("also") or []:
        if not isinstance(place, dict) or not isinstance(place.get("source"), str) or \
                not all(type(place.get(f)) is int for f in ("line", "end_line", "start_char", "end_char")):
            raise ValueError("a malformed place in also")
    for key in ("similarity", "similarity_counted", "keyword_score", "penalty"):
        if h.get(key) is not None and type(h[key]) not in (int, float):
            raise ValueError(f"a malformed {key}")
    return h


# --- the cache of resolved settings ----------------------------------------------------------------------------


def cache_dir(environ: Mapping[str, str]) -> str | None:
    """The user's docvec cache folder ($XDG_CACHE_HOME/docvec, else ~/.cache/docvec), or None without a home."""
    base = environ.get("XDG_CACHE_HOME") or (os.path.join(environ["HOME"], ".cache") if environ.get("HOME") else "")
    return os.path.join(base, "docvec") if base and os.path.isabs(base) else None


def cache_key(cwd: str, config: str, index: str | None, collection: str | None,
              environ: Mapping[str, str]) -> list[Any]:
    """What the settings of a `docvec query` depend on besides the config file's content."""
    env = sorted([k, v] for k, v in environ.items() if k.startswith("DOCVEC_") or k in ENV_KEYS)
    return [cwd, config, index, collection, env]


def entry_path(folder: str, key: list[Any]) -> str:
    """The cache file of a key. A checksum names it (hashlib's OpenSSL costs 5 ms to import); the entry holds the
    key itself, so two keys with one name only replace each other."""
    return os.path.join(folder, f"{zlib.crc32(json.dumps(key).encode()):08x}.json")


def file_identity(path: str) -> list[int] | None:
    """What changes whenever a file's content does: device, inode, size, modification and change times (an
    atomic replace is a new inode; an edit moves ctime, which no user can set back)."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    return [info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]


def config_choice(config: str | None, environ: Mapping[str, str], cwd: str) -> str:
    """The config file a query reads when it is named (--config, $DOCVEC_CONFIG), else ./config.yaml (a query whose
    settings come from a parent folder's or the user's config is left to the full CLI)."""
    chosen = config or environ.get("DOCVEC_CONFIG") or "config.yaml"
    return os.path.abspath(os.path.join(cwd, chosen))


def remember(key: list[Any], config_file: str, identity: list[int] | None, socket: str, collection: str,
             query: Mapping[str, Any], environ: Mapping[str, str]) -> None:
    """Record the resolved settings for the fast path; `identity` is the config file's before they were read (the
    full CLI calls this; failures are not errors)."""
    folder = cache_dir(environ)
    if folder is None or identity is None or file_identity(config_file) != identity:
        return  # no cache folder, or the file changed while it was read
    entry = {"key": key, "config": identity, "socket": socket, "collection": collection, "query": dict(query)}
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        if not _owner_only(folder) or _read_entry(entry_path(folder, key)) == entry:
            return
        write_json_atomically(entry_path(folder, key), entry, mode=0o600)
    except OSError:
        return


def _owner_only(path: str) -> bool:
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return info.st_uid == os.getuid() and not info.st_mode & 0o077 and not stat.S_ISLNK(info.st_mode)


def _read_entry(path: str) -> dict[str, Any] | None:
    data = read_small_file(path)
    try:
        entry = json.loads(data) if data is not None and _owner_only(path) else None
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


# --- the fast path -----------------------------------------------------------------------------------------------


def parse(argv: list[str]) -> dict[str, Any] | None:
    """The options of `docvec query ARGV` when each is one this path knows in a form click reads the same way;
    None otherwise (--help, --no-server, server flags, `-`, `--`, a value click would refuse...)."""
    opts: dict[str, Any] = {"where": [], "words": []}
    args = iter(argv)
    for arg in args:
        if arg == "-" or not arg.startswith("-"):
            opts["words"].append(arg)
            continue
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name in _FLAGS and not eq:
            opts[_FLAGS[name]] = True
        elif name in _VALUE_OPTIONS:
            value = value if eq else next(args, None)  # type: ignore[assignment]
            if value is None or not _set(opts, _VALUE_OPTIONS[name], value):
                return None
        else:
            return None
    return opts if opts["words"] and opts["words"] != ["-"] else None


def source_filter(item: str) -> str | None:
    """The value of a `--where source=VALUE` filter; None for any other filter."""
    key, sep, value = item.partition("=")
    return value.strip() if sep and key.strip() == "source" else None


def _set(opts: dict[str, Any], key: str, value: str) -> bool:
    """Store an option's value if it is what click's type accepts, exactly; False otherwise."""
    bounds = {"top_k": (int, 1, MAX_K), "per_file": (int, 0, 1000), "min_score": (float, -1.0, 1.0),
              "file_penalty": (float, 0.0, 2.0)}
    if key in bounds:
        kind, low, high = bounds[key]
        try:
            number = kind(value.strip()) if kind is float or value.strip().lstrip("-").isdigit() else None
        except ValueError:
            return False
        if number is None or number != number or not low <= number <= high:
            return False
        opts[key] = number
    elif key == "where":
        if source_filter(value) is not None:
            return False  # a path as printed is mapped, and an empty answer explained, by the full CLI
        opts["where"].append(value)
    elif key in ("mode", "spans"):
        if value not in (MODES if key == "mode" else SPAN_MODES):
            return False
        opts[key] = value
    else:
        if key in opts or not value:
            return False
        opts[key] = value
    return True


def fast_query(argv: list[str], environ: Mapping[str, str]) -> int | None:
    """Answer `docvec query ARGV` through a running server: the exit code, or None when the full CLI must."""
    opts = parse(argv)
    if opts is None or not hasattr(os, "getuid"):  # no owner checks (Windows): no Unix socket to ask either
        return None
    question = " ".join(opts["words"]).strip()
    if not question or len(question) > MAX_QUERY_CHARS or valid_text(question) != question:
        return None  # a lone surrogate (an undecodable byte in argv) is replaced by the full CLI
    cwd = os.getcwd()
    config = config_choice(opts.get("config"), environ, cwd)
    entry = current_entry(cache_key(cwd, config, opts.get("index"), opts.get("collection"), environ), config,
                          environ)
    return None if entry is None else _ask_and_show(entry, opts, question)


def current_entry(key: list[Any], config: str, environ: Mapping[str, str]) -> dict[str, Any] | None:
    """The cached settings of `key`, while the config file is the very file they were resolved from."""
    folder = cache_dir(environ)
    if folder is None or not _owner_only(folder):
        return None
    entry = _read_entry(entry_path(folder, key))
    if entry is None or entry.get("key") != key or entry.get("config") != file_identity(config):
        return None
    return entry


def _ask_and_show(entry: dict[str, Any], opts: dict[str, Any], question: str) -> int | None:
    q = dict(entry["query"])
    q.update({k: opts[k] for k in ("top_k", "min_score", "mode", "per_file", "spans", "file_penalty") if k in opts})
    if opts.get("files"):
        q["per_file"] = 1
    answer, _ = ask_local_server(str(entry["socket"]), "/search", request_body(question, opts["where"], q))
    try:
        hits, root = checked_hits(answer, str(entry["collection"]), int(q["top_k"]))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None  # no server, or an answer in doubt: the full CLI asks again and says why
    from docvec.query.render import Printer, View

    view = View(bool(opts.get("explain")), bool(opts.get("json")), bool(opts.get("files")), root)
    printer = Printer()
    view.show(hits, printer)
    return 0


def main() -> None:
    """`docvec query` through a server, for the script's entry point: exits when answered, returns otherwise.

    Output that cannot be written ends as the full CLI's does: a reader that stopped (`| head`) is exit 0, a full
    disk exit 1, a closed stdout is left to the full CLI."""
    if len(sys.argv) <= 2 or sys.argv[1] != "query" or sys.stdout is None:
        return
    try:
        code = fast_query(sys.argv[2:], os.environ)
        if code is None:
            return
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        code = 0
    except OSError:
        code = 1
    os._exit(code)  # nothing else to flush; a teardown would try stdout again
