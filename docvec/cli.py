"""The `docvec` command: a thin layer that parses options, loads settings, calls the core and renders results.

Subcommands live with their stage (`ingest/cli.py`, `query/cli.py`) and are imported only when invoked, so
`docvec --help` stays fast and the stages never import each other.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import click

from docvec import __version__
from docvec.config import Settings, check_headers, load_settings
from docvec.entry import STOP_SIGNALS, STOPPED, stop_signal
from docvec.errors import ConfigError, DocvecError, Interrupted
from docvec.settings import store_location
from docvec.status import compaction_advised, mask_userinfo, status_data
from docvec.text import json_safe, printable

F = TypeVar("F", bound=Callable[..., Any])

SUBCOMMANDS = {
    "ingest": ("docvec.ingest.cli", "ingest_command"),
    "query": ("docvec.query.cli", "query_command"),
    "eval": ("docvec.query.cli", "eval_command"),
    "verify": ("docvec.ingest.cli", "verify_command"),
    "reindex": ("docvec.ingest.cli", "reindex_command"),
    "rollback": ("docvec.ingest.cli", "rollback_command"),
    "prune": ("docvec.ingest.cli", "prune_command"),
    "status": ("docvec.cli", "status_command"),
    "serve": ("docvec.serve.cli", "serve_command"),
    "completion": ("docvec.cli", "completion_command"),
}


class ConfigProblem(click.ClickException):
    """A bad setting, flag or query: a usage error, exit code 2 (without click's usage text)."""

    exit_code = 2


class DocvecCommand(click.Command):
    """A command whose DocvecErrors become one-line click errors: exit 2 for configuration, 1 for the rest.

    Disk and database errors that escape the core (a full disk, a read-only folder) are one line too, and no
    message ever shows a secret: header values, tokens and the user-info of URLs are masked."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            raise ConfigProblem(redact(str(exc), ctx)) from exc
        except Interrupted as exc:  # a run stopped between two writes says what it kept: 130 / 143 / 129, not 1
            click.echo(redact(str(exc), ctx), err=True)
            sys.exit(interrupted_exit_code())
        except DocvecError as exc:
            raise click.ClickException(redact(str(exc), ctx)) from exc
        except BrokenPipeError:  # `docvec query ... | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
            sys.exit(0)
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise click.ClickException(redact(f"{where}{exc.strerror or exc} — nothing indexed was lost", ctx)) \
                from exc
        except sqlite3.Error as exc:
            raise click.ClickException(redact(f"database error: {exc} — nothing indexed was lost", ctx)) from exc
        except click.ClickException as exc:
            setattr(exc, "message", redact(exc.message, ctx))  # click marks it final; it is a plain attribute
            raise


def redact(message: str, ctx: click.Context | None = None) -> str:
    """The message with known secrets (header values) and URL user-info replaced by ***."""
    for secret in (ctx.meta.get("docvec.secrets", ()) if ctx is not None else ()):
        if len(secret) >= 4:
            message = message.replace(secret, "***")
    return printable(mask_userinfo(message))  # a file name in a message can carry escapes too


def echo(message: str = "", err: bool = False) -> None:
    """Print a line of text output or a message (stderr with err): file names, headings and document text
    can hold terminal escapes, so every line goes through `printable` (JSON goes through `emit_json`)."""
    click.echo(printable(message), err=err)


class FiniteFloat(click.ParamType):  # type: ignore[type-arg]
    """A float option that must be finite and within [low, high] (click's FloatRange lets nan through)."""

    name = "float"

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or not self.low <= number <= self.high:
            self.fail(f"{value!r} is not a finite number in {self.low:g}..{self.high:g}", param, ctx)
        return number


class LazyGroup(click.Group):
    """Imports a subcommand's module only when that subcommand runs (or help lists it)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in SUBCOMMANDS:
            return None
        module, attr = SUBCOMMANDS[name]
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="docvec")
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              help="Config file for every command (also accepted after the command).")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """Index a folder of markdown docs into Chroma and query it from the shell.

    Config: --config, else $DOCVEC_CONFIG, else config.yaml in this folder or the nearest parent that has a
    docvec one, else ~/.config/docvec/config.yaml. Shell completion: docvec completion bash|zsh|fish."""
    if config_path is not None:
        ctx.meta["docvec.config"] = config_path


def _stash(key: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    """A callback keeping a flag's value as a settings override for `load` (so commands need no parameter)."""
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is not None:
            ctx.meta.setdefault("docvec.flags", {})[key] = value
    return callback


def _headers(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> None:
    """--header 'Name: value' (repeatable) -> store.headers."""
    if not value:
        return
    pairs = [v.split(":", 1) for v in value]
    if any(len(p) != 2 or not p[0].strip() for p in pairs):
        raise click.BadParameter("expected 'Name: value', e.g. --header 'Authorization: Bearer $TOKEN' "
                                 "(the value given is not shown)")
    headers = {k.strip(): v.strip() for k, v in pairs}
    ctx.meta.setdefault("docvec.secrets", set()).update(headers.values())
    try:
        check_headers(headers, "--header")
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from exc
    _stash("store.headers")(ctx, param, headers)


def config_options(func: F) -> F:
    """--config, --index, --collection and the Chroma server flags, shared by every command."""
    func = click.option("--header", "headers", multiple=True, expose_value=False, callback=_headers,
                        metavar="'NAME: VALUE'", help="HTTP header for the Chroma server, e.g. an auth token "
                        "(store.headers). Repeatable.")(func)
    func = click.option("--ssl/--no-ssl", default=None, expose_value=False, callback=_stash("store.ssl"),
                        help="Use https for the Chroma server (store.ssl).")(func)
    func = click.option("--port", type=int, expose_value=False, callback=_stash("store.port"),
                        help="Chroma server port (store.port).")(func)
    func = click.option("--host", expose_value=False, callback=_stash("store.host"),
                        help="Use the Chroma server on this host instead of a local index (store.host).")(func)
    func = click.option("--collection", help="Chroma collection name (store.collection).")(func)
    func = click.option("--index", "index_path", type=click.Path(path_type=Path),
                        help="Folder of the persistent index (store.path).")(func)
    func = click.option("--config", "config_path", type=click.Path(path_type=Path),
                        help="Config file (default: $DOCVEC_CONFIG, else ./config.yaml).")(func)
    return func


def load(config_path: Path | None, overrides: dict[str, Any]) -> Settings:
    """Settings from the config file and environment, with command-line overrides on top."""
    ctx = click.get_current_context(silent=True)
    if config_path is None and ctx is not None:
        config_path = ctx.meta.get("docvec.config")  # `docvec --config X query ...`
    stashed = dict(ctx.meta.get("docvec.flags", {})) if ctx is not None else {}
    flags = {k: str(v) if isinstance(v, Path) else v for k, v in {**stashed, **overrides}.items()}
    if ctx is not None:  # values that messages must never show, even when the settings are refused
        raw = [v for k, v in os.environ.items() if k.endswith(("_HEADERS", "_TOKEN"))]
        ctx.meta.setdefault("docvec.secrets", set()).update(raw)
    settings = load_settings(config_path, os.environ, flags)
    if ctx is not None:
        ctx.meta["docvec.secrets"].update(settings.store.headers.values())
    return settings


def emit_json(data: Any) -> None:
    """One JSON object on one line of stdout: strict JSON (a NaN or infinity is a bug, not output)."""
    text = json.dumps(data, ensure_ascii=False, default=str, allow_nan=False)
    # json escapes only C0 controls; C1 controls (\x9b is a CSI) and bidi overrides become \u escapes too: the
    # same JSON value, and nothing a terminal acts on (they occur only inside strings)
    click.echo(json_safe(text))


@click.command(cls=DocvecCommand)
@config_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status_command(config_path: Path | None, index_path: Path | None, collection: str | None, as_json: bool) -> None:
    """Show what the index holds: docs folder, last sync, model, files, chunks, size, writer."""
    from docvec.store import Store

    settings = load(config_path, {"store.path": index_path, "store.collection": collection})
    store = Store.open_for_reading(store_location(settings), records=False)
    data = status_data(store, settings)
    data["runs_on"] = redact(data["runs_on"])
    if as_json:
        emit_json(data)
    else:
        _render_status(data)


def _render_status(data: dict[str, Any]) -> None:
    fp = data["fingerprint"]
    size = data["size_bytes"]
    when = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(data["last_sync"])) + f" ({data['last_sync_seconds']:.1f} s)"
            if data["last_sync"] else "unknown (built before docvec recorded it)")
    skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(data["skipped"].items())) or "none"
    echo(f"config     {data.get('config') or 'none (defaults and environment)'}")
    echo(f"index      {data['index']}")
    echo(f"docs       {data['docs_root'] or 'unknown (recorded at the next ingest)'}")
    echo(f"last sync  {when}" + ("; a later run was interrupted: run `docvec ingest` to finish it"
                                          if data["interrupted_run"] else ""))
    files = data["files"] if data["files"] is not None else "?"
    echo(f"contents   {files} files, {data['chunks']} chunks; skipped: {skipped}")
    since = data.get("folder_since_sync")
    if since is not None:
        known = (data["files"] or 0) + sum(data["skipped"].values())
        moved = since["modified_after_sync"] or since["files"] != known
        echo("folder     " + (f"changed since the last sync ({since['modified_after_sync']} files new or modified "
                               f"since, {since['files']} files now, {known} then): run `docvec ingest`" if moved else
                                    "unchanged since the last sync (sizes and times)"))
    echo(f"writer     {data['writer'] or 'none'}")
    watch = data.get("watch")
    if watch:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(watch["since"]))
        held = watch.get("held_deletions") or []
        echo(f"watch      {watch['state']} (pid {watch['pid']}, since {since})"
             + (f": {watch['detail']}" if watch.get("detail") and not held else "")
             + (f"; holding the deletion of {len(held)} files (e.g. {held[0]}): `docvec ingest --yes` deletes them"
                if held else ""))
    echo(f"model      {data['provider']}:{data['model']} ({data['dimension']} dimensions, digest "
               f"{fp['digest'][:12] or '-'}) on {data['runs_on']}, {data['cpus']} CPUs available")
    echo(f"size       {_human(size) if size is not None else 'on server'}")
    echo(f"chunking   max {fp['max_tokens']} tokens, min {fp['min_tokens']}, overlap {fp['overlap_tokens']}, "
               f"heading context {'on' if fp['heading_context'] else 'off'} (chunker v{fp['chunker_version']})")
    h = data["hnsw"]
    echo(f"hnsw       {h.get('space')}, ef_search {h.get('ef_search')}, ef_construction "
               f"{h.get('ef_construction')}, max_neighbors {h.get('max_neighbors')}" + _slots_line(h))
    echo(f"built by   docvec {data['built_by']}")
    for c in data["collections"]:
        role = ("live" if c["live"] else "incomplete: a run stopped while writing it (`docvec reindex` resumes "
                "a build, `docvec prune` deletes it)" if c.get("incomplete") else "previous (rollback)"
                if c["previous"] else "backup (prune)")
        echo(f"collection {c['name']}: {role}, {c['model']}, {c['chunks']} chunks")


def _slots_line(h: dict[str, Any]) -> str:
    if "slots" not in h:
        return ""
    dead, slots = h["dead_slots"], h["slots"]
    line = f"; {slots} slots ({_human(h['memory_bytes'])} in memory), {dead} of deleted chunks"
    if compaction_advised(h):
        line += f" ({dead / slots:.0%}): `docvec reindex --compact` rebuilds the graph without them"
    return line


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} GiB"


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion_command(shell: str) -> None:
    """Print the shell completion script: eval "$(docvec completion bash)" in ~/.bashrc (zsh, fish alike)."""
    from click.shell_completion import get_completion_class

    completion = get_completion_class(shell)
    assert completion is not None
    click.echo(completion(cli, {}, "docvec", "_DOCVEC_COMPLETE").source())


READ_ONLY = {"query", "status", "eval"}  # commands that write nothing, so may skip interpreter teardown


def interrupted_exit_code() -> int:
    """128 + the signal that stopped the run: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    return 128 + (STOPPED[-1] if STOPPED else signal.SIGINT)


def main() -> None:
    """Run the CLI (docvec.entry.main, the script, installs the stop signals before importing this). A
    KeyboardInterrupt that no command turned into its own summary leaves here, for the entry point's one line."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, stop_signal)
    try:
        code = cli.main(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except click.exceptions.Abort:
        raise KeyboardInterrupt from None  # click's name for an interrupt inside its own prompts
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except SystemExit as done:
        command = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
        if command in READ_ONLY and isinstance(done.code, (int, type(None))):
            # Tearing down Chroma's and onnxruntime's modules costs ~0.25 s of a 1.5 s cold query; a read-only
            # command has nothing to flush but its own output (and the copy of a read-only index to remove, made
            # only by a store this process opened: a query a server answered never imports one).
            if "docvec.store" in sys.modules:
                from docvec.store import remove_snapshots

                remove_snapshots()
            flushed = _flush_output()
            os._exit(done.code or (0 if flushed else 1))
        raise


def _flush_output() -> bool:
    """Flush stdout and stderr before a fast exit; False when the output could not be written (a full disk, a
    closed pipe). A stream closed at start (`docvec status >&-`) is None and has nothing to flush."""
    ok = True
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            ok = False
    return ok


if __name__ == "__main__":
    # `python -m docvec.cli`: the script's entry point, on the imported module (the stages import docvec.cli, and
    # one module must hold the state, such as the signal that stopped a run).
    from docvec.entry import main as _entry

    _entry()
