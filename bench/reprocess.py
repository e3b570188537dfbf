"""Reprocess at scale: N objects (10,000 by default) under incoming/ on the embedded AWS, one forced run of the
real ReprocessObjects state machine (Distributed Map over the S3 listing, batches of ReprocessBatchSize)
queueing every object on the upload queue. Side by side, a dry run of the same listing (listing and checking
only). The upload queue is not drained by the pipeline here (its poller is off): what is measured is the run
itself; the pipeline's own bounds are the soak and adversarial benchmarks'.

Last line: one JSON object with `objects`, `queued`, `queued_per_second`, `dry_run_seconds`, `run_seconds`
and `peak_mb`, the most memory any ReprocessFunction step used (VmHWM of its process).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devtools.local_pipeline import deploy, emulator_target, quiet_step_functions_interpreter, start_emulator
from devtools.reprocess_run import reprocess


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=10_000)
    args = parser.parse_args()
    emulator = start_emulator()
    try:
        with (
            quiet_step_functions_interpreter(),
            deploy(emulator_target(emulator), start_pollers=False) as stack,
        ):
            s3 = stack.client("s3")
            sqs = stack.client("sqs")
            bucket = stack.physical_id("UploadsBucket")
            queue = stack.physical_id("UploadEventsQueue")
            started = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                list(
                    pool.map(
                        lambda i: s3.put_object(
                            Bucket=bucket, Key=f"incoming/f{i:07}.txt", Body=f"object {i}"
                        ),
                        range(args.objects),
                    )
                )
            sqs.purge_queue(QueueUrl=queue)  # the uploads' own notifications: not what is measured
            print(f"{args.objects} objects uploaded in {time.monotonic() - started:.1f} s", file=sys.stderr)
            dry = reprocess(stack, {"prefix": "incoming/", "force": True, "dryRun": True}, timeout=3600)
            run = reprocess(stack, {"prefix": "incoming/", "force": True}, timeout=3600)
            assert run.status == "SUCCEEDED" and run.output, run
            depth = int(
                sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"])[
                    "Attributes"
                ]["ApproximateNumberOfMessages"]
            )
            steps = stack.invocations.for_function("ReprocessFunction")
            result = {
                "objects": args.objects,
                "listed": run.output["listed"],
                "queued": run.output["queued"],
                "messages_in_queue": depth,
                "batch_steps": len([i for i in steps if i.event.get("step") == "queue"]),  # both runs
                "dry_run_seconds": round(dry.seconds, 1),
                "run_seconds": round(run.seconds, 1),
                "queued_per_second": round(run.output["queued"] / run.seconds, 1),
                "peak_mb": round(max(i.max_memory_mb for i in steps), 1),
            }
    finally:
        emulator.stop()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    os._exit(status)
