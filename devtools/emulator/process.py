"""EmulatorProcess: the gateway emulator's CLI (`python -m devtools.emulator`) in a subprocess of its own.

For benchmarks that must not share a GIL with the emulator, as they never would with the real, remote
gateway: the emulator's CPU work (parsing requests, building replies) then runs beside the caller's, not
between its threads.

    with EmulatorProcess("--token", "t", "--latency-ms", "500", "--quiet") as emulator:
        url = emulator.base_url
    emulator.stderr  # what it wrote there (tracebacks of its internal errors; request lines without --quiet)
"""

import selectors
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import IO

ROOT = Path(__file__).resolve().parents[2]  # where `python -m devtools.emulator` finds the package


class EmulatorProcess:
    def __init__(self, *cli_args: str, start_timeout: float = 30.0, stop_timeout: float = 10.0) -> None:
        self.cli_args = cli_args
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.stderr = ""  # filled in by stop()
        self._process: subprocess.Popen[str] | None = None
        self._stderr_file: IO[str] | None = None
        self._base_url: str | None = None

    def start(self) -> str:
        if self._process is not None:
            raise RuntimeError("the emulator process is already running")
        self.stderr = ""
        # stderr goes to a file, not a pipe: nobody reads it while the emulator runs, and a full pipe would
        # block the emulator mid-request.
        self._stderr_file = tempfile.TemporaryFile("w+")  # noqa: SIM115 (stop() closes it)
        # --port 0 (the system picks a free port) comes first, so the caller's --port, if any, wins.
        command = [sys.executable, "-m", "devtools.emulator", "--port", "0", *self.cli_args]
        self._process = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=self._stderr_file, text=True
        )
        try:
            line = self._first_line()
        except BaseException:  # Ctrl-C while waiting, say: no emulator is left behind
            self.stop()
            raise
        if not line.startswith("http"):
            # Empty: it exited (bad flags, say; the reason is in its stderr) or printed nothing in time.
            self.stop()
            raise RuntimeError(f"the emulator did not start: {line or 'no URL'}\n{self.stderr}")
        # Nothing more comes on stdout (the CLI prints only the URL), so the unread pipe never fills.
        self._base_url = line
        return line

    def _first_line(self) -> str:
        """The line the CLI prints once it listens, within start_timeout: a hung start cannot hang us."""
        assert self._process is not None and self._process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._process.stdout, selectors.EVENT_READ)
            ready = selector.select(self.start_timeout)
        return self._process.stdout.readline().strip() if ready else ""

    def stop(self) -> None:
        """SIGTERM, which the CLI turns into a clean stop; a kill if it does not end in time. Idempotent."""
        process, self._process = self._process, None
        self._base_url = None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
        if self._stderr_file is not None:
            self._stderr_file.seek(0)
            self.stderr = self._stderr_file.read()
            self._stderr_file.close()
            self._stderr_file = None

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("the emulator process has not been started")
        return self._base_url

    def __enter__(self) -> "EmulatorProcess":
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
