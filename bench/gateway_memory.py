"""Peak memory and time of sending the largest PDF one request can carry (18.7 MB: its base64 fills the
gateway's 25,000,000-byte payload limit) to the gateway emulator, three ways, in the same run.

    ours             this project's GatewayClient: the file is streamed through base64 into the body
    httpx_json       plain httpx: the file base64'd into a dict, then `httpx.post(url, json=body)`
    official_client  quantcdn-client 4.8.0, its request built from its model classes

Each send runs in a fresh python process that imports everything and builds its (long-lived) client first,
then records its baseline RSS; "peak growth" is the peak RSS during the send minus that baseline, in MiB
(2**20 bytes). "seconds" is the wall time of the send: reading the file, building the request, the POST
and the emulator's answer. The emulator runs in this (parent) process, so its own memory is not counted;
its time to parse the body is in every way's seconds alike, so a fourth child, the "floor", posts the same
body built before its clock starts: a way's seconds minus the floor is what the client itself adds.
Peak RSS is the kernel's VmHWM, reset through /proc/self/clear_refs; where that is refused, VmRSS sampled
every 5 ms from a thread (which can miss peaks reached inside one long C call).

    python bench/gateway_memory.py            # the table, then one JSON line
    python bench/gateway_memory.py --runs 1
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
# The largest file whose request fits the gateway's payload limit (the whole JSON body, base64 included),
# with room for the JSON around it.
FILE_BYTES = (25_000_000 - 4096) // 4 * 3
TOKEN = "bench-token"
ORGANISATION = "acme"
MODEL_ID = "amazon.nova-lite-v1:0"
PROMPT = "Summarise this document"
WAYS = ("ours", "httpx_json", "official_client")
# Not a way: the same body built before the clock starts, so only the POST and the emulator's parsing of
# 35 MB of JSON are timed. Every way pays this; it shows how much of a way's seconds is the client's own.
FLOOR = "floor"
TARGET_PEAK_MIB = 16.0
TARGET_TIME_RATIO = 0.25  # ours' seconds over the official client's
SAMPLE_SECONDS = 0.005


# ---- measuring peak RSS ------------------------------------------------------------------------------


def status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise LookupError(f"{field} is not in /proc/self/status")


def reset_high_water_mark() -> bool:
    """Writing "5" to clear_refs sets VmHWM back to the current RSS (Linux 4.0+); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def high_water_mark_works() -> bool:
    """Whether a reset VmHWM then catches a short-lived 64 MiB allocation (checked once, in the parent,
    before the emulator starts, so the children's baselines stay untouched)."""
    if not reset_high_water_mark():
        return False
    before = status_kib("VmHWM")
    block = b"\x01" * (64 * MIB)  # written, so every page is really resident
    del block
    caught = status_kib("VmHWM") - before >= 60 * 1024
    reset_high_water_mark()
    return caught and status_kib("VmHWM") - status_kib("VmRSS") < 1024


class RssSampler:
    """The fallback where VmHWM cannot be reset: VmRSS read every 5 ms from a thread. It can miss a peak
    shorter than that, or one reached while a C call holds the GIL and freed before it lets go."""

    def __init__(self) -> None:
        self.peak_kib = status_kib("VmRSS")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.peak_kib = max(self.peak_kib, status_kib("VmRSS"))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kib = max(self.peak_kib, status_kib("VmRSS"))


# ---- the three ways and the floor (each runs in its own child process) -------------------------------

Send = Callable[[], int]  # does the whole send and returns the HTTP status the emulator answered


def setup_ours(base_url: str, path: Path) -> Send:
    sys.path.insert(0, str(ROOT / "src"))
    from shared.errors import GatewayError
    from shared.gateway import GatewayClient, RetryPolicy
    from shared.request_builder import build_chat_request, prepare
    from shared.sources import FileSource

    # One attempt: the other two ways do not retry either.
    client = GatewayClient(base_url, ORGANISATION, lambda: TOKEN, retry=RetryPolicy(max_attempts=1))

    def send() -> int:
        request = build_chat_request([prepare(FileSource(path))], PROMPT, model_id=MODEL_ID)
        try:
            client.chat(request)
        except GatewayError as error:
            return error.status or 0
        return 200

    return send


def setup_httpx_json(base_url: str, path: Path) -> Send:
    import base64

    import httpx

    url = f"{base_url}/api/v3/organizations/{ORGANISATION}/ai/chat"

    def send() -> int:
        data = path.read_bytes()
        document = {"format": "pdf", "name": "report", "source": {"bytes": base64.b64encode(data).decode()}}
        body = {"messages": [{"role": "user", "content": [{"document": document}, {"text": PROMPT}]}]}
        body["modelId"] = MODEL_ID
        headers = {"Authorization": f"Bearer {TOKEN}"}
        return httpx.post(url, json=body, headers=headers, timeout=120).status_code

    return send


def setup_official_client(base_url: str, path: Path) -> Send:
    import base64

    import quantcdn
    from quantcdn.exceptions import ApiException
    from quantcdn.models import (
        ChatInferenceRequest,
        ChatInferenceRequestMessagesInner,
        ChatInferenceRequestMessagesInnerContent,
        ChatInferenceRequestMessagesInnerContentOneOfInner,
        ChatInferenceRequestMessagesInnerContentOneOfInnerOneOf,
        ChatInferenceRequestMessagesInnerContentOneOfInnerOneOf3,
        ChatInferenceRequestMessagesInnerContentOneOfInnerOneOf3Document,
        ChatInferenceRequestMessagesInnerContentOneOfInnerOneOf3DocumentSource,
    )

    configuration = quantcdn.Configuration(host=base_url, access_token=TOKEN)
    api = quantcdn.AIInferenceApi(quantcdn.ApiClient(configuration))
    block = ChatInferenceRequestMessagesInnerContentOneOfInner

    def send() -> int:
        data = path.read_bytes()
        # Built from the model classes: the client's own from_dict cannot handle a content array.
        source = ChatInferenceRequestMessagesInnerContentOneOfInnerOneOf3DocumentSource(
            bytes=base64.b64encode(data).decode()
        )
        document = ChatInferenceRequestMessagesInnerContentOneOfInnerOneOf3Document(
            format="pdf", name="report", source=source
        )
        content = ChatInferenceRequestMessagesInnerContent(
            actual_instance=[
                block(
                    actual_instance=ChatInferenceRequestMessagesInnerContentOneOfInnerOneOf3(
                        document=document
                    )
                ),
                block(actual_instance=ChatInferenceRequestMessagesInnerContentOneOfInnerOneOf(text=PROMPT)),
            ]
        )
        message = ChatInferenceRequestMessagesInner(role="user", content=content)
        request = ChatInferenceRequest(messages=[message], model_id=MODEL_ID)
        try:
            api.chat_inference(ORGANISATION, request, _request_timeout=120)
        except ApiException as error:
            return error.status or 0
        return 200

    return send


def setup_floor(base_url: str, path: Path) -> Send:
    import base64

    import httpx

    url = f"{base_url}/api/v3/organizations/{ORGANISATION}/ai/chat"
    document = {
        "format": "pdf",
        "name": "report",
        "source": {"bytes": base64.b64encode(path.read_bytes()).decode()},
    }
    body = {"messages": [{"role": "user", "content": [{"document": document}, {"text": PROMPT}]}]}
    body["modelId"] = MODEL_ID
    content = json.dumps(body).encode()
    del body, document
    client = httpx.Client(headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})

    def send() -> int:
        return client.post(url, content=content, timeout=120).status_code

    return send


SETUPS = {
    "ours": setup_ours,
    "httpx_json": setup_httpx_json,
    "official_client": setup_official_client,
    FLOOR: setup_floor,
}


def child(way: str, base_url: str, path: Path, use_hwm: bool) -> None:
    send = SETUPS[way](base_url, path)  # imports and the client, before the baseline
    baseline_kib = status_kib("VmRSS")
    if use_hwm:
        reset_high_water_mark()
        started = time.perf_counter()
        status = send()
        seconds = time.perf_counter() - started
        peak_kib = status_kib("VmHWM")
    else:
        with RssSampler() as sampler:
            started = time.perf_counter()
            status = send()
            seconds = time.perf_counter() - started
        peak_kib = sampler.peak_kib
    figures = {
        "baseline_mib": baseline_kib / 1024,
        "peak_growth_mib": (peak_kib - baseline_kib) / 1024,
        "seconds": seconds,
        "status": status,
    }
    print(json.dumps(figures))


# ---- the parent: file, emulator, runs, report ---------------------------------------------------------


def write_pdf_like(path: Path) -> None:
    """A real PDF header, then 64 KiB blocks alternating seeded random bytes and repeated text (so the
    file is partly compressible), cut to exactly FILE_BYTES."""
    with path.open("wb") as out:
        remaining = FILE_BYTES
        for chunk in _pdf_like_chunks():
            piece = chunk[:remaining]
            out.write(piece)
            remaining -= len(piece)
            if remaining == 0:
                break


def _pdf_like_chunks() -> Iterator[bytes]:
    """Endless: the caller cuts it to size."""
    yield b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"
    rng = random.Random(25)
    line = b"BT /F1 12 Tf 72 712 Td (The quick brown fox jumps over the lazy dog.) Tj ET\n"
    block = 64 * 1024
    text = (line * (block // len(line) + 1))[:block]
    while True:
        yield rng.randbytes(block)
        yield text


def run_child(way: str, base_url: str, path: Path, use_hwm: bool) -> dict:
    command = [sys.executable, __file__, "--child", way, "--url", base_url, "--file", str(path)]
    if not use_hwm:
        command.append("--sample")
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{way} failed in its child process:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(runs: int, path: Path, use_hwm: bool) -> tuple[dict[str, list[dict]], dict[str, set[str]]]:
    from devtools.emulator import EmulatorConfig, GatewayEmulator

    samples: dict[str, list[dict]] = {way: [] for way in SETUPS}
    paths: dict[str, set[str]] = {way: set() for way in SETUPS}
    emulator = GatewayEmulator(EmulatorConfig(token=TOKEN))
    base_url = emulator.start()
    try:
        for _ in range(runs):
            # Round-robin, so drift on a busy machine touches every way alike.
            for way in SETUPS:
                seen = len(emulator.calls)
                samples[way].append(run_child(way, base_url, path, use_hwm))
                paths[way].update(call.path for call in emulator.calls[seen:])
        if emulator.internal_errors:
            raise SystemExit("the emulator failed:\n" + "\n".join(emulator.internal_errors))
    finally:
        emulator.stop()
    return samples, paths


def summarise(samples: list[dict]) -> dict:
    growth = [s["peak_growth_mib"] for s in samples]
    seconds = [s["seconds"] for s in samples]
    statuses = sorted({s["status"] for s in samples})
    return {
        "peak_growth_mb": round(statistics.median(growth), 1),
        "seconds": round(statistics.median(seconds), 3),
        "status": statuses[0] if len(statuses) == 1 else statuses,
        "peak_growth_min_max": [round(min(growth), 1), round(max(growth), 1)],
        "seconds_min_max": [round(min(seconds), 3), round(max(seconds), 3)],
        "baseline_mb": round(statistics.median(s["baseline_mib"] for s in samples), 1),
        "x_file_size": round(statistics.median(growth) * MIB / FILE_BYTES, 2),
    }


def report(runs: int, meter: str, samples: dict[str, list[dict]], paths: dict[str, set[str]]) -> dict:
    figures = {way: summarise(samples[way]) for way in WAYS}
    floor = summarise(samples[FLOOR])
    for f in figures.values():
        # What the client itself adds on top of moving and parsing the same body.
        f["seconds_over_floor"] = round(f["seconds"] - floor["seconds"], 3)

    print(f"one {FILE_BYTES:,}-byte PDF ({FILE_BYTES / MIB:.3f} MiB) to the gateway emulator's POST /chat")
    print(f"median of {runs} fresh process(es) per way; MiB = 2**20 bytes; peak RSS from {meter}")
    header = f"{'way':<17}{'peak growth MiB':>16}{'min..max':>14}{'x file':>8}{'seconds':>9}{'min..max':>14}"
    print(header + f"{'over floor':>12}{'status':>8}{'baseline MiB':>14}")
    for way, f in figures.items():
        growth_spread = "{:.1f}..{:.1f}".format(*f["peak_growth_min_max"])
        time_spread = "{:.3f}..{:.3f}".format(*f["seconds_min_max"])
        print(
            f"{way:<17}{f['peak_growth_mb']:>16.1f}{growth_spread:>14}{f['x_file_size']:>8.2f}"
            f"{f['seconds']:>9.3f}{time_spread:>14}{f['seconds_over_floor']:>12.3f}{f['status']!s:>8}"
            f"{f['baseline_mb']:>14.1f}"
        )
    floor_spread = "{:.3f}..{:.3f}".format(*floor["seconds_min_max"])
    print(
        f"floor: the same body pre-built, only the POST timed (transport + the emulator's parse): "
        f"{floor['seconds']:.3f} s ({floor_spread}), status {floor['status']}"
    )
    for way in WAYS:
        print(f"{way} posted to: {', '.join(sorted(paths[way])) or '(nothing arrived)'}")

    ours, official = figures["ours"], figures["official_client"]
    ratio = ours["seconds"] / official["seconds"]
    peak_met = ours["peak_growth_mb"] <= TARGET_PEAK_MIB
    time_met = ratio <= TARGET_TIME_RATIO
    all_200 = all(f["status"] == 200 for f in (*figures.values(), floor))
    print(
        f"targets: ours peak growth <= {TARGET_PEAK_MIB:g} MiB: {ours['peak_growth_mb']:.1f} "
        f"({'met' if peak_met else 'MISSED'}); ours seconds <= {TARGET_TIME_RATIO}x official: "
        f"{ratio:.2f}x ({'met' if time_met else 'MISSED'}); every request answered 200: {all_200}"
    )
    return {
        "file_mb": round(FILE_BYTES / 1_000_000, 1),
        **figures,
        "targets_met": peak_met and time_met and all_200,
        "file_bytes": FILE_BYTES,
        "unit": "MiB",
        "runs": runs,
        "meter": meter,
        "floor_seconds": floor["seconds"],
        "ours_seconds_over_official": round(ratio, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="fresh processes per way (default 3)")
    parser.add_argument("--child", choices=tuple(SETUPS), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sample", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.url, args.file, use_hwm=not args.sample)
        return

    sys.path.insert(0, str(ROOT))  # for devtools.emulator when run as `python bench/gateway_memory.py`
    use_hwm = high_water_mark_works()
    meter = "VmHWM (reset via /proc/self/clear_refs)" if use_hwm else "VmRSS sampled every 5 ms"
    with tempfile.TemporaryDirectory(prefix="gateway-memory-") as tmp:
        path = Path(tmp) / "report.pdf"
        write_pdf_like(path)
        samples, paths = measure(args.runs, path, use_hwm)
    print(json.dumps(report(args.runs, meter, samples, paths)))


if __name__ == "__main__":
    main()
