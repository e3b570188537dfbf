"""`python -m devtools.emulator --port 8787 --token T ...`: serve the gateway emulator until Ctrl-C."""

import argparse
import signal
import sys
import time

from devtools.emulator import EmulatorConfig, GatewayEmulator


def parse_args(argv: list[str]) -> EmulatorConfig:
    defaults = EmulatorConfig()
    parser = argparse.ArgumentParser(prog="python -m devtools.emulator", description=__doc__)
    add = parser.add_argument
    add("--host", default="127.0.0.1")
    add("--port", type=int, default=8787)
    add("--token", default=None, help="the only bearer token accepted (default: any)")
    add("--organization", default=None, help="the only organisation accepted in paths (default: any)")
    add("--latency-ms", type=float, default=defaults.latency_ms)
    add("--fault-rate-429", type=float, default=0.0)
    add("--fault-rate-500", type=float, default=0.0)
    add("--fault-rate-503", type=float, default=0.0)
    add("--fault-rate-timeout", type=float, default=0.0)
    add("--fault-rate-truncated", type=float, default=0.0)
    add("--fault-paths", default="chat,executions", help="comma-separated: chat, executions, files")
    add("--seed", type=int, default=defaults.seed)
    add("--retry-after", type=int, default=defaults.retry_after_seconds)
    add("--timeout-hold-seconds", type=float, default=defaults.timeout_hold_seconds)
    add("--images-per-request", type=int, default=defaults.images_per_request)
    add("--execution-pending-seconds", type=float, default=defaults.execution_pending_seconds)
    add("--execution-seconds", type=float, default=defaults.execution_seconds)
    add("--execution-outcome", choices=("complete", "failed"), default=defaults.execution_outcome)
    add("--quiet", action="store_true", help="no per-request log lines")
    args = parser.parse_args(argv)
    return EmulatorConfig(
        host=args.host,
        port=args.port,
        token=args.token,
        organization=args.organization,
        latency_ms=args.latency_ms,
        rate_429=args.fault_rate_429,
        rate_500=args.fault_rate_500,
        rate_503=args.fault_rate_503,
        rate_timeout=args.fault_rate_timeout,
        rate_truncated_json=args.fault_rate_truncated,
        fault_paths=tuple(path.strip() for path in args.fault_paths.split(",") if path.strip()),
        seed=args.seed,
        retry_after_seconds=args.retry_after,
        timeout_hold_seconds=args.timeout_hold_seconds,
        images_per_request=args.images_per_request,
        execution_pending_seconds=args.execution_pending_seconds,
        execution_seconds=args.execution_seconds,
        execution_outcome=args.execution_outcome,
        quiet=args.quiet,
    )


def main(argv: list[str]) -> int:
    config = parse_args(argv)
    try:
        config.check()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # SIGTERM ends the process the same way as Ctrl-C, through the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    emulator = GatewayEmulator(config)
    print(emulator.start(), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
