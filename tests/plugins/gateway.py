"""Fixtures that run the gateway emulator (devtools.emulator) on 127.0.0.1, on a free port."""

from collections.abc import Iterator

import pytest

from devtools.emulator import EmulatorConfig, GatewayEmulator

EMULATOR_TOKEN = "test-token"


class FakeClock:
    """For `emulator.config.clock`: time moves only when a test sets `now`."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _check_no_emulator_bugs(emulator: GatewayEmulator) -> None:
    # An exception inside the emulator reaches the client only as a dropped connection, which retrying
    # code would hide; failing the test at teardown makes it visible.
    errors = emulator.internal_errors
    assert not errors, "the gateway emulator raised:\n" + "\n".join(errors)


@pytest.fixture
def emulator() -> Iterator[GatewayEmulator]:
    """A fresh emulator per test (token "test-token"); tests may change `emulator.config` freely."""
    with GatewayEmulator(EmulatorConfig(token=EMULATOR_TOKEN)) as running:
        yield running
    _check_no_emulator_bugs(running)
