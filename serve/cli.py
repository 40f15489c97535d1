"""`docvec serve`: keep the model, the collection and the keyword index warm; answer over HTTP and MCP."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import click

from docvec.cli import DocvecCommand, config_options, echo, load
from docvec.config import Settings
from docvec.errors import ConfigError, IndexNotFound, LockHeld
from docvec.ingest.watch import WatchEvent
from docvec.remote import Reachable, advert_path, lock_path, read_advert, remove_advert, socket_path, write_advert
from docvec.serve.index import Index


@click.command(cls=DocvecCommand)
@config_options
@click.option("--listen", metavar="HOST:PORT", help="HTTP address (serve.listen, default 127.0.0.1:8765).")
@click.option("--mcp", "stdio_mcp", is_flag=True,
              help="Speak MCP on stdin/stdout instead of HTTP (how editors and agents launch a server).")
@click.option("--watch", is_flag=True, help="Re-sync the index whenever the docs folder changes.")
def serve_command(config_path: Path | None, index_path: Path | None, collection: str | None, listen: str | None,
                  stdio_mcp: bool, watch: bool) -> None:
    """Answer searches from a warm process: HTTP JSON API + MCP at /mcp, or MCP over stdio with --mcp."""
    settings = load(config_path, {"store.path": index_path, "store.collection": collection,
                                  "serve.listen": listen})
    host, port = parse_listen(settings.serve.listen)
    sock = None if stdio_mcp else bind(host, port, settings.serve.token)  # before loading: a busy port fails fast
    if watch:
        _build_if_missing(settings)
    else:
        _require_index(settings)
    index = Index(settings)
    for note in index.notes:
        log(f"note: {note}")
    with _watching(index, settings, watch):
        if stdio_mcp:
            from docvec.serve.tools import build_mcp, run_stdio

            try:
                run_stdio(build_mcp(index))  # returns when the client closes stdin
            except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGHUP (docvec's handler: KeyboardInterrupt)
                log("stopped")
            return
        assert sock is not None
        address, real_port = sock.getsockname()[:2]  # the port the kernel gave for :0
        with _advertised(index, settings, address, real_port) as local:
            _serve_http(index, [sock, *local], address, real_port, settings.serve.token)


def parse_listen(value: str) -> tuple[str, int]:
    """'127.0.0.1:8765', '[::1]:8765', 'localhost:0' -> (host, port); ConfigError naming the value otherwise."""
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"serve.listen '{value}': expected HOST:PORT, e.g. 127.0.0.1:8765")
    return host, int(port)


def bind(host: str, port: int, token: str | None) -> socket.socket:
    """A listening socket on what `host` resolves to. A name is judged by its addresses, not its spelling: any
    address that is not loopback makes the index reachable from other machines, and that needs a token."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"serve.listen host '{host}' does not resolve ({exc.strerror}): use an address such as "
                          f"127.0.0.1") from None
    addresses = sorted({str(info[4][0]) for info in infos})
    if not token and not all(_loopback(a) for a in addresses):
        raise ConfigError(f"serving on {host} ({', '.join(addresses)}) makes the index reachable from other "
                          f"machines: set a token (DOCVEC_SERVE_TOKEN or serve.token), or listen on 127.0.0.1")
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}): choose another port with --listen "
                          f"or serve.listen (HOST:0 takes any free port)") from None
    return sock


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _build_if_missing(settings: Settings) -> None:
    """`serve --watch` on a folder with no index yet builds it first (watching is syncing: it would anyway)."""
    from docvec.settings import chunk_params, make_configured_embedder, store_location
    from docvec.ingest.pipeline import index_exists
    from docvec.ingest.sync import scan_options, sync_index

    location = store_location(settings)
    if index_exists(location) is not None:
        return
    log(f"no index at {location.describe()} yet: building it from {settings.resolve(settings.docs.path)}")
    report = sync_index(location, make_configured_embedder(settings), scan_options(settings),
                        chunk_params(settings))
    log(f"built: {len(report.files_added)} files, {report.chunks_total} chunks in {report.seconds:.1f} s")


def _require_index(settings: Settings) -> None:
    """A server of nothing answers nothing: without --watch, a missing index is an error at start."""
    from docvec.ingest.pipeline import index_exists
    from docvec.settings import store_location

    location = store_location(settings)
    if index_exists(location) is None:
        raise IndexNotFound(f"no {location.describe()}: build it with `docvec ingest`, or start "
                            "`docvec serve --watch`, which builds it first")


def log(message: str) -> None:
    """Server messages go to stderr (stdout may be the MCP channel), with the time."""
    echo(f"{time.strftime('%H:%M:%S')} docvec serve: {message}", err=True)


@contextlib.contextmanager
def _advertised(index: Index, settings: Settings, host: str, port: int) -> Iterator[list[socket.socket]]:
    """Hold the index's serve lock, advertise the URL and listen on the owner-only socket beside the index, for
    `docvec query` (a read-only index: none of them); yields the local socket to serve."""
    from filelock import FileLock, Timeout

    location = index.location
    advert = advert_path(location.path, location.collection, location.host)
    lock = FileLock(str(lock_path(advert)))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        running = read_advert(advert) or {}
        raise LockHeld(f"docvec serve is already running for {location.describe()} (pid {running.get('pid', '?')}"
                       f" at {running.get('url', '?')}): query it, or stop it first") from None
    except OSError as exc:
        log(f"note: cannot advertise beside a read-only index ({exc.strerror}): `docvec query` will not find "
            f"this server by itself")
        yield []
        return
    local = socket_path(location.path, location.collection, location.host)
    try:
        shown = f"[{host}]" if ":" in host else host
        write_advert(advert, f"http://{shown}:{port}", bool(settings.serve.token), str(location.path))
        with _listening(local) as listening:
            yield listening
    finally:
        remove_advert(advert)
        lock.release()


@contextlib.contextmanager
def _listening(path: Path) -> Iterator[list[socket.socket]]:
    """An owner-only Unix socket at `path` (created 0600 under the serve lock, so a file there is a dead
    server's); none if the folder refuses it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with Reachable(path) as reach:
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)
            old = os.umask(0o177)
            try:
                sock.bind(reach.address)
            finally:
                os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        log(f"note: no local socket at {path} ({exc.strerror}): `docvec query` answers in its own process")
        yield []
        return
    try:
        yield [sock]
    finally:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)


def _serve_http(index: Index, sockets: list[socket.socket], host: str, port: int, token: str | None) -> None:
    import uvicorn

    from docvec.serve.http import create_app

    app = create_app(index, host, port, token)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    # uvicorn handles SIGINT/SIGTERM itself (finish open requests, stop) and then re-raises the signal into the
    # handlers it found: make those no-ops, so that the cleanup below runs and the exit is a clean 0.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: None)
    if hasattr(signal, "SIGHUP"):  # a closed terminal: stop as for SIGTERM (uvicorn leaves SIGHUP deadly)
        signal.signal(signal.SIGHUP, server.handle_exit)
    shown = f"[{host}]" if ":" in host else host
    log(f"http://{shown}:{port} — POST /search, POST /get, GET /status, GET /healthz, MCP at /mcp "
        f"({index.location.describe()}{', token required' if token else ''})")
    server.run(sockets=sockets)  # SIGINT / SIGTERM / SIGHUP: finish open requests, then return
    log("stopped")


@contextlib.contextmanager
def _watching(index: Index, settings: Settings, enabled: bool) -> Iterator[None]:
    """With --watch, a thread that syncs once, then after every burst of changes; stopped cleanly on exit."""
    if not enabled:
        yield
        return
    from docvec.watchstate import state_path
    from docvec.ingest.pipeline import SyncGuard
    from docvec.ingest.watch import follow, recorder, watch_folder

    index.check_docs_root()  # watching another folder than the index's could only fail, forever: say so now
    stop = threading.Event()
    location = index.location
    on_event = recorder(state_path(location.path, location.collection, location.host), report_event)

    def sync(on_progress: Any) -> Any:  # deletions of most of the index wait for `docvec ingest --yes`
        return index.sync(on_progress, SyncGuard(hold_mass_delete=True))

    def run() -> None:
        if follow(sync, stop, on_event).kind != "stopped":
            watch_folder(settings, sync, stop, on_event)

    thread = threading.Thread(target=run, name="docvec-watch", daemon=True)
    thread.start()
    log(f"watching {settings.resolve(settings.docs.path)}")
    try:
        yield
    finally:
        stop.set()  # a sync in progress stops between two writes, like Ctrl-C
        thread.join(timeout=120)


def report_event(event: WatchEvent) -> None:
    """One log line per watch event."""
    from docvec.ingest.watch import describe

    log(describe(event))


def main(argv: list[str] | None = None) -> Any:
    """`python -m docvec.serve`."""
    return serve_command.main(argv if argv is not None else sys.argv[1:], prog_name="python -m docvec.serve")
