"""Untrusted input stays in its lane: each attack as an attacker inside the account would try it.

On the deployed template in the embedded AWS, with the gateway emulator; the emulator echoes what it is
sent (text inlined, a digest of each media item), so an answer shows what a request could read.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.plugins.pipeline import Pipeline, emulator_gateway, pipeline_parameters
from tests.sample_files import IMAGE_TOOL_CONFIG, SAMPLES

NOVA_PRO = "amazon.nova-pro-v1:0"
SECRET_TOKEN = "IQoJb3JpZ2luX2VjEXAMPLESESSIONTOKEN"


def chat_calls(pipeline: Pipeline) -> list:
    return [c for c in pipeline.emulator.calls if c.kind == "chat"]


def deploy(deploy_stack, emulator, **parameters: str) -> Pipeline:
    emulator.config.execution_pending_seconds = 0.2
    emulator.config.execution_seconds = 0.8
    emulator.config.retry_after_seconds = 0
    stack = deploy_stack(
        parameters={**pipeline_parameters(emulator), **parameters},
        extra_environment=emulator_gateway(emulator).environment(),
        visibility_timeout_override=20,
    )
    return Pipeline(stack, emulator)


# ---- attachments ---------------------------------------------------------------------------------------


def test_a_queue_sender_cannot_read_another_requests_result(pipeline: Pipeline):
    pipeline.send({"requestId": "victim", "prompt": "my salary is ZETA-98765"})
    pipeline.drain()
    victim = pipeline.record("victim")
    assert victim["status"] == "COMPLETED"

    pipeline.send(
        {"requestId": "attacker", "prompt": "repeat it", "attachments": [{"uri": victim["resultLocation"]}]}
    )
    pipeline.drain()
    attacker = pipeline.record("attacker")
    assert attacker["status"] == "FAILED", attacker
    assert "attachment outside the allowed location" in attacker["error"]["message"]
    assert attacker["error"]["message"].startswith("attachments.0.uri")
    assert "ZETA-98765" not in json.dumps(attacker)
    assert len(chat_calls(pipeline)) == 1  # the victim's only


@pytest.mark.parametrize(
    "key", ["incoming/diagram.png", "private/diagram.png", "attachments-not-quite/diagram.png"]
)
def test_attachments_come_only_from_the_attachments_prefix(pipeline: Pipeline, key):
    png = (SAMPLES / "diagram.png").read_bytes()
    pipeline.upload(f"attachments/{key}", png)  # a copy where attachments may come from
    pipeline.stack.client("s3").put_object(Bucket=pipeline.bucket, Key=key, Body=png)
    pipeline.send(
        {"requestId": "outside", "prompt": "x", "attachments": [{"uri": f"s3://{pipeline.bucket}/{key}"}]}
    )
    pipeline.send(
        {
            "requestId": "inside",
            "prompt": "x",
            "attachments": [{"uri": f"s3://{pipeline.bucket}/attachments/{key}"}],
        }
    )
    pipeline.drain()
    assert "attachment outside the allowed location" in pipeline.record("outside")["error"]["message"]
    assert pipeline.record("inside")["status"] == "COMPLETED"


def test_another_bucket_only_when_the_operator_grants_it(deploy_stack, emulator):
    pipeline = deploy(deploy_stack, emulator, AttachmentBuckets="granted-bucket")
    s3 = pipeline.stack.client("s3")
    png = (SAMPLES / "diagram.png").read_bytes()
    for bucket in ("granted-bucket", "other-bucket"):
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="any/where.png", Body=png)
    pipeline.send(
        {"requestId": "granted", "prompt": "x", "attachments": [{"uri": "s3://granted-bucket/any/where.png"}]}
    )
    pipeline.send(
        {"requestId": "other", "prompt": "x", "attachments": [{"uri": "s3://other-bucket/any/where.png"}]}
    )
    pipeline.drain()
    assert pipeline.record("granted")["status"] == "COMPLETED"
    assert "attachment outside the allowed location" in pipeline.record("other")["error"]["message"]


def test_the_same_attachment_twice_is_read_and_sent_once(pipeline: Pipeline):
    pipeline.upload("attachments/diagram.png", (SAMPLES / "diagram.png").read_bytes())
    uri = f"s3://{pipeline.bucket}/attachments/diagram.png"
    pipeline.send({"requestId": "twice", "prompt": "x", "attachments": [{"uri": uri}, {"uri": uri}]})
    pipeline.drain()
    record = pipeline.record("twice")
    assert record["status"] == "COMPLETED", record
    assert record["content"].count("image 1: png") == 1 and "image 2" not in record["content"]


def test_inlined_text_is_bounded_per_request(deploy_stack, emulator):
    text = (SAMPLES / "notes.txt").read_bytes()
    limit = len(text) * 3 + 1  # one file is well within it, four together are not
    pipeline = deploy(deploy_stack, emulator, MaxInlineTextBytes=str(limit))
    for name in ("a", "b", "c", "d"):
        pipeline.upload(f"attachments/{name}.txt", text)
    attachments = [{"uri": f"s3://{pipeline.bucket}/attachments/{n}.txt"} for n in "abcd"]
    pipeline.send({"requestId": "much-text", "prompt": "x", "attachments": attachments})
    pipeline.drain()
    record = pipeline.record("much-text")
    assert record["status"] == "FAILED", record
    assert f"the text files together is {len(text) * 4} bytes" in record["error"]["message"]
    assert str(limit) in record["error"]["message"]
    assert not chat_calls(pipeline)


# ---- uploads -------------------------------------------------------------------------------------------


def forged_event(bucket: str, key: str) -> dict:
    return {
        "Records": [
            {
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": bucket},
                    "object": {"key": key, "size": 10, "eTag": "e", "sequencer": "1"},
                },
            }
        ]
    }


@pytest.mark.parametrize(
    ("bucket", "key"),
    [
        (None, "private/payroll.csv"),
        (None, "results/requests/victim.json"),
        ("someone-elses-bucket", "incoming/x.csv"),
    ],
)
def test_a_forged_upload_event_outside_the_input_prefix_is_skipped(pipeline: Pipeline, bucket, key):
    s3 = pipeline.stack.client("s3")
    target = bucket or pipeline.bucket
    if bucket:
        s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=target, Key=key, Body=b"name,salary\nalice,123456\n")
    pipeline.send(forged_event(target, key), queue="UploadEventsQueue")
    pipeline.drain()
    assert not [r for r in pipeline.records() if (r.get("source") or {}).get("key") == key]
    assert not chat_calls(pipeline)


# ---- generated images ----------------------------------------------------------------------------------


class FileServer:
    """A web server on loopback that counts its hits: a page that must never be fetched, a body too large,
    a signed URL that fails, bytes that are not an image."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits.append(self.path)
                path = self.path.split("?")[0]
                if path == "/huge.png":
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.end_headers()
                    chunk = b"\x89PNG\r\n\x1a\n" + bytes(1024 * 1024 - 8)
                    with contextlib.suppress(OSError):
                        for _ in range(30):
                            self.wfile.write(chunk)
                    return
                if path == "/page.png":
                    body = b"<html><body>admin console</body></html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                elif path == "/expired.png":
                    body = f"<Error><Code>AccessDenied</Code><Token>{SECRET_TOKEN}</Token></Error>".encode()
                    self.send_response(403)
                else:
                    body = b"admin"
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def files() -> Iterator[FileServer]:
    server = FileServer()
    yield server
    server.close()


def complete_with_urls(*urls: str):
    def answer(route) -> dict:
        return {
            "executionId": route.execution_id,
            "toolName": "generate_image",
            "status": "complete",
            "createdAt": 1,
            "completedAt": 2,
            "result": {"s3Urls": list(urls)},
        }

    return answer


def image_request(request_id: str) -> dict:
    return {"requestId": request_id, "prompt": "Draw", "modelId": NOVA_PRO, "toolConfig": IMAGE_TOOL_CONFIG}


def test_an_image_url_the_operator_did_not_allow_is_never_fetched(pipeline: Pipeline, files: FileServer):
    pipeline.emulator.answer_next(complete_with_urls(f"{files.url}/admin?x=1"), path="executions", count=10)
    pipeline.send(image_request("admin-page"))
    pipeline.drain(timeout=60)
    record = pipeline.record("admin-page")
    assert record["status"] == "FAILED", record
    assert f"download from {files.url}/admin is not allowed" in record["error"]["message"]
    assert files.hits == []


def test_image_downloads_are_capped_sniffed_and_never_show_a_query(deploy_stack, emulator, files: FileServer):
    pipeline = deploy(deploy_stack, emulator, ImageDownloadAllowedUrls=f"{emulator.base_url},{files.url}")
    signed = f"{files.url}/expired.png?X-Amz-Security-Token={SECRET_TOKEN}&X-Amz-Signature=abc"
    cases = {"huge": f"{files.url}/huge.png?sig=1", "page": f"{files.url}/page.png", "expired": signed}
    for name, url in cases.items():
        emulator.answer_next(complete_with_urls(url), path="executions")
        pipeline.send(image_request(name))
        pipeline.drain(timeout=60)

    errors = {name: pipeline.record(name)["error"]["message"] for name in cases}
    assert "over 20971520 bytes" in errors["huge"]
    assert "not an image" in errors["page"]
    assert f"download from {files.url}/expired.png: HTTP 403" in errors["expired"]
    sfn = pipeline.stack.client("stepfunctions")
    arn = pipeline.stack.physical_id("ToolExecutionPoller")
    histories = [
        json.dumps(sfn.get_execution_history(executionArn=e["executionArn"])["events"], default=str)
        for e in sfn.list_executions(stateMachineArn=arn)["executions"]
    ]
    everything = json.dumps(pipeline.records()) + "".join(histories)
    assert (
        SECRET_TOKEN not in everything and "X-Amz-Signature" not in everything and "sig=1" not in everything
    )


# ---- request ids ---------------------------------------------------------------------------------------


def test_an_unreadable_message_never_changes_another_request(pipeline: Pipeline):
    pipeline.send({"requestId": "owner-1", "prompt": "hello"})
    pipeline.drain()
    before = pipeline.record("owner-1")
    message_id = pipeline.send({"requestId": "owner-1", "prompt": 42})
    pipeline.drain()
    assert pipeline.record("owner-1") == before
    mine = pipeline.record(message_id)
    assert mine["status"] == "FAILED" and mine["error"]["message"].startswith("prompt:")


def test_a_different_message_cannot_take_over_a_failed_retryable_request(pipeline: Pipeline):
    pipeline.emulator.fail_next("429", count=6)  # every attempt of every delivery: gave up, retryable
    pipeline.send({"requestId": "owned", "prompt": "the owner's question"})
    pipeline.drain()
    before = pipeline.record("owned")
    assert before["status"] == "FAILED" and before["error"]["retryable"] is True

    intruder = pipeline.send({"requestId": "owned", "prompt": "the intruder's question"})
    pipeline.drain()
    assert pipeline.record("owned") == before
    taken = pipeline.record(intruder)
    assert taken["status"] == "FAILED"
    assert "'owned' belongs to another request" in taken["error"]["message"]

    pipeline.send({"requestId": "owned", "prompt": "the owner's question"})  # the same message again
    pipeline.drain()
    assert pipeline.record("owned")["status"] == "COMPLETED"


# ---- bounds --------------------------------------------------------------------------------------------


def test_only_allowed_models_may_be_named(deploy_stack, emulator):
    pipeline = deploy(deploy_stack, emulator, AllowedModelIds="amazon.nova-lite-v1:0,amazon.nova-micro-v1:0")
    pipeline.send({"requestId": "micro", "prompt": "x", "modelId": "amazon.nova-micro-v1:0"})
    pipeline.send({"requestId": "pro", "prompt": "x", "modelId": NOVA_PRO})
    pipeline.send(
        {
            "requestId": "pro-full",
            "request": {"messages": [{"role": "user", "content": "x"}], "modelId": NOVA_PRO},
        }
    )
    pipeline.upload("incoming/photo.jpg", (SAMPLES / "photo.jpg").read_bytes(), **{"model-id": NOVA_PRO})
    pipeline.drain()
    assert pipeline.record("micro")["status"] == "COMPLETED"
    assert "not an allowed model" in pipeline.record("pro")["error"]["message"]
    assert pipeline.record("pro-full")["error"]["message"].startswith("request.modelId:")
    assert "x-amz-meta-model-id" in pipeline.record_for_key("incoming/photo.jpg")["error"]["message"]
    assert len(chat_calls(pipeline)) == 1


def test_metadata_is_bounded(pipeline: Pipeline):
    deep: dict = {}
    node = deep
    for _ in range(11):
        node["a"] = {}
        node = node["a"]
    too_deep = pipeline.send({"requestId": "deep", "prompt": "x", "metadata": deep})
    too_big = pipeline.send({"requestId": "big", "prompt": "x", "metadata": {"blob": "x" * 9000}})
    unparsable = pipeline.send("[" * 100_000)  # deeper than the JSON parser goes
    pipeline.drain()
    # A message that cannot be read is recorded under its own message id, not the requestId it names.
    assert "metadata: more than 10 levels deep" in pipeline.record(too_deep)["error"]["message"]
    assert (
        "metadata: 9011 bytes as JSON, over the limit of 8192" in pipeline.record(too_big)["error"]["message"]
    )
    assert "not valid JSON" in pipeline.record(unparsable)["error"]["message"]
    assert not chat_calls(pipeline)
    assert pipeline.queue_depth("RequestDLQ") == 0
    assert len(pipeline.records()) == 3  # the unparsable one has a FAILED record of its own
