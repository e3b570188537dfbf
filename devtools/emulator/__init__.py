"""A local stand-in for Quant Cloud's AI gateway, for tests, benchmarks and `make run`."""

from devtools.emulator.config import EmulatorConfig
from devtools.emulator.server import CallRecord, GatewayEmulator

__all__ = ["CallRecord", "EmulatorConfig", "GatewayEmulator"]
