"""A stop signal at any moment of any command: one line, exit 128 + the signal (130 SIGINT, 143 SIGTERM, 129
SIGHUP), never click's "Aborted!", exit 1 or a traceback — also while the command is still importing."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from docvec.cli import cli

DOCVEC = Path(sys.executable).with_name("docvec")


@pytest.mark.parametrize("delay", [0.2, 0.6])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_while_a_command_starts_is_one_line_and_its_exit_code(project: Path, delay: float,
                                                                            signum: int) -> None:
    assert CliRunner().invoke(cli, ["--config", str(project / "config.yaml"), "ingest", "-q"]).exit_code == 0
    proc = subprocess.Popen([str(DOCVEC), "--config", str(project / "config.yaml"), "verify", "--repair"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    if "checked" in err:
        pytest.skip("the command had done its work before the signal")  # a fast machine: nothing left to stop
    assert proc.returncode == 128 + signum, (proc.returncode, err)
    assert "Aborted!" not in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert signal.Signals(signum).name in err


def test_an_interrupted_sync_exits_with_the_signal_code_not_1(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """verify --repair's sync interrupted between two writes says what it kept and exits 130, as ingest does."""
    from docvec.ingest import pipeline

    runner = CliRunner()
    assert runner.invoke(cli, ["--config", str(project / "config.yaml"), "ingest", "-q"]).exit_code == 0
    (project / "docs" / "guides" / "new.md").write_text("# New\n\nA page the repair must index.\n")

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "_execute", interrupted)
    result = runner.invoke(cli, ["--config", str(project / "config.yaml"), "verify", "--repair"])
    assert result.exit_code == 130 and "interrupted: what was stored is kept" in result.output, result.output


def _wrapped_interrupt() -> ImportError:
    """What pybind11's module init raises when a signal lands while it runs (onnxruntime's first import)."""
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as stop:
            raise ImportError("initialization failed") from stop
    except ImportError as exc:
        return exc


def test_an_interrupt_a_third_party_re_raised_as_its_own_error_is_found_down_the_chain() -> None:
    from docvec.errors import interrupt_behind

    wrapped = _wrapped_interrupt()
    assert isinstance(interrupt_behind(wrapped), KeyboardInterrupt)
    assert interrupt_behind(ImportError("initialization failed")) is None
    looped = ValueError("a chain that loops")
    looped.__context__ = ValueError("back")
    looped.__context__.__context__ = looped
    assert interrupt_behind(looped) is None


def test_a_store_error_mapping_lets_a_wrapped_interrupt_through(tmp_path: Path) -> None:
    """Chroma's errors become StoreError in one place; an interrupt inside one must stay an interrupt (exit 130)."""
    from docvec.errors import StoreError
    from docvec.location import StoreLocation
    from docvec.store import _chroma

    location = StoreLocation(tmp_path / "index", "docs")
    with pytest.raises(KeyboardInterrupt):
        with _chroma("reading", location):
            raise _wrapped_interrupt()
    with pytest.raises(StoreError):
        with _chroma("reading", location):
            raise ImportError("initialization failed")
