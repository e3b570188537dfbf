"""Peak memory of SqsRequestFunction on a batch of ten messages built to use the most memory it allows.

template.yaml is deployed into the embedded AWS (each function in a process of its own, its MemorySize
enforced) with the gateway emulator. Each of the ten messages of one batch is as heavy as the limits let
it be, and they run at once (the batch's messages run concurrently):
- the largest body SQS takes (256 KiB): a full-form request with an inline base64 image;
- attachments up to the text limit (MaxInlineTextBytes, 1 MiB together) of text that JSON escapes the
  most (every character a `\\u00e9`: three bytes on the wire for each one read), which the emulator
  echoes back, so the answer is large too;
- a media attachment as large as the payload limit lets the rest of the request be, streamed;
- metadata at its 8 KB bound, 10 levels deep.
The baseline is the same function's process after one small request (its clients built), in the same run.
The peak is the function processes' own high-water mark (VmHWM), read from /proc after the batch.

    python bench/adversarial_memory.py        # the table, then one JSON line
"""

from __future__ import annotations

import base64
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for entry in (str(ROOT / "src"), str(ROOT)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

from devtools.local_pipeline import LocalPipeline, deploy, emulator_target, start_emulator  # noqa: E402

FUNCTION = "SqsRequestFunction"
MESSAGES = 10
SQS_MAX_BODY = 256 * 1024
TEXT_BYTES = 1024 * 1024  # MaxInlineTextBytes' default
TEXT_FILES = 4
# With the escaped text (about 3 MB on the wire) and the inline image, just under the 25,000,000-byte limit.
MEDIA_BYTES = 15_500_000


def heavy_metadata() -> dict:
    node: dict = {}
    top = node
    for _ in range(9):
        node["n"] = {}
        node = node["n"]
    node["pad"] = "m" * 7_900
    return top


def inline_image_request(request_id: str, attachments: list[dict]) -> str:
    png = (ROOT / "samples" / "diagram.png").read_bytes()
    message = {
        "requestId": request_id,
        "request": {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"image": {"format": "png", "source": {"bytes": ""}}},
                        {"text": "Describe everything."},
                    ],
                }
            ],
            "modelId": "amazon.nova-lite-v1:0",
        },
        "attachments": attachments,
        "metadata": heavy_metadata(),
    }
    # Pad the PNG (its trailing bytes are ignored by readers) so the body is just under SQS's limit.
    room = SQS_MAX_BODY - len(json.dumps(message).encode()) - 64
    padded = png + bytes(max(0, room * 3 // 4 - len(png)))
    message["request"]["messages"][0]["content"][0]["image"]["source"]["bytes"] = base64.b64encode(
        padded
    ).decode()
    body = json.dumps(message)
    assert len(body.encode()) <= SQS_MAX_BODY, len(body)
    return body


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def function_pids(stack) -> list[int]:
    runtime = stack._runtime(FUNCTION)
    return [p.process.pid for p in [*runtime._idle, *runtime._running] if p.process.is_alive()]


def main() -> None:
    emulator = start_emulator()
    with tempfile.TemporaryDirectory(prefix="adversarial-memory-") as scratch:
        stack = deploy(
            emulator_target(emulator),
            # One batch of ten, all at once: no concurrency cap below the batch, no batching window.
            parameters={"MaxRequestBytes": "25000000"},
            function_log=Path(scratch) / "functions.log",
        )
        try:
            pipeline = LocalPipeline(stack, emulator)
            memory = stack._runtime(FUNCTION).spec.memory
            pipeline.send({"requestId": "warm-up", "prompt": "hello"})
            pipeline.drain(timeout=60)
            baseline = max(vm_hwm_mb(pid) for pid in function_pids(stack))

            text = ("é" * (TEXT_BYTES // 2 // TEXT_FILES)).encode()  # two bytes each in UTF-8
            for index in range(TEXT_FILES):
                pipeline.upload(f"attachments/text-{index}.txt", text)
            pipeline.upload("attachments/big.pdf", b"%PDF-1.4\n" + bytes(MEDIA_BYTES - 9))
            uris = [f"s3://{pipeline.bucket}/attachments/text-{i}.txt" for i in range(TEXT_FILES)]
            attachments = [{"uri": uri} for uri in [*uris, f"s3://{pipeline.bucket}/attachments/big.pdf"]]
            bodies = [inline_image_request(f"heavy-{i}", attachments) for i in range(MESSAGES)]
            for body in bodies:  # one by one (a batch send is capped at 1 MiB), within the batching window
                pipeline.send(body)
            pipeline.drain(timeout=300)

            records = {r["requestId"]: r for r in pipeline.records()}
            statuses = [records.get(f"heavy-{i}", {}).get("status") for i in range(MESSAGES)]
            errors = [
                str((records.get(f"heavy-{i}") or {}).get("error", {}).get("message"))[:200]
                for i in range(MESSAGES)
                if statuses[i] != "COMPLETED"
            ]
            peak = max(vm_hwm_mb(pid) for pid in function_pids(stack))
            invocations = stack.invocations.for_function(FUNCTION)
            batch_sizes = [len(i.event.get("Records", [])) for i in invocations if isinstance(i.event, dict)]
        finally:
            stack.close()
            emulator.stop()

    completed = statuses.count("COMPLETED")
    print(f"{FUNCTION}: {memory} MB; a batch of {MESSAGES} heavy messages (batch sizes seen: {batch_sizes})")
    print(f"process baseline after one small request: {baseline:.1f} MB (VmHWM)")
    print(f"peak with the heavy batch: {peak:.1f} MB, {peak / memory:.0%} of the function's memory")
    print(f"heavy requests completed: {completed} of {MESSAGES}; target: peak under half the memory")
    for reason in sorted(set(errors)):
        print(f"  failed: {reason}")
    print(
        json.dumps(
            {
                "peak_mb": round(peak, 1),
                "baseline_mb": round(baseline, 1),
                "function_memory_mb": memory,
                "messages": MESSAGES,
                "completed": completed,
                "batch_sizes": batch_sizes,
                "under_half": peak < memory / 2,
            }
        )
    )


if __name__ == "__main__":
    main()
