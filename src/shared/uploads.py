"""Uploads: S3 notifications (direct, or wrapped in SQS messages) become pipeline jobs."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from shared.batch import SqsMessage
from shared.errors import InvalidRequestError
from shared.models import ChatRequest
from shared.pipeline import Job, Outcome
from shared.records import OBJECT_VERSION_ATTRIBUTE, RUN_ATTRIBUTE, object_version
from shared.request_builder import build_chat_request, check_model_allowed, prepare
from shared.sources import S3Source

if TYPE_CHECKING:
    from shared.runtime import Runtime

logger = logging.getLogger(__name__)

MODEL_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:/-]{1,200}$")
MAX_PROMPT_OVERRIDE = 2000  # S3 user metadata is at most 2 KB anyway


@dataclass(frozen=True)
class Rerun:
    """What a reprocess run asks of one object (shared.reprocess, through the upload queue)."""

    run_id: str
    force: bool
    prompt: str | None
    model_id: str | None


@dataclass(frozen=True)
class Upload:
    bucket: str
    key: str
    size: int | None
    etag: str | None
    version_id: str | None
    sequencer: str | None
    event_name: str
    rerun: Rerun | None = None  # set for an object a reprocess run queued

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Upload:
        try:
            s3 = record["s3"]
            obj = s3["object"]
            return cls(
                bucket=s3["bucket"]["name"],
                key=unquote_plus(obj["key"]),
                size=obj.get("size"),
                etag=obj.get("eTag"),
                version_id=obj.get("versionId") or None,
                sequencer=obj.get("sequencer"),
                event_name=str(record.get("eventName") or ""),
            )
        except (KeyError, TypeError, AttributeError) as missing:
            raise InvalidRequestError(
                "Records[].s3",
                f"an S3 event record needs s3.bucket.name and s3.object.key (missing {missing})",
            ) from None

    @property
    def request_id(self) -> str:
        """The same for every delivery of one upload; a new version or overwrite is a new request. A reprocess
        run's request is named by the object version, and with `force` by the run too (each forced run gets
        requests of its own; the earlier records stay)."""
        if self.rerun is not None:
            version = object_version(self.bucket, self.key, self.etag or "")
            return f"reprocess-{self.rerun.run_id}-{version}" if self.rerun.force else f"reprocess-{version}"
        identity = self.version_id or f"{self.etag}:{self.sequencer}"
        digest = hashlib.sha256(f"{self.bucket}\n{self.key}\n{identity}".encode()).hexdigest()
        return f"upload-{digest[:32]}"

    def source(self) -> dict[str, Any]:
        source = {
            "type": "s3",
            "bucket": self.bucket,
            "key": self.key,
            "versionId": self.version_id,
            "eTag": self.etag,
            "sequencer": self.sequencer,
        }
        if self.rerun is not None:
            source["reprocess"] = {
                "runId": self.rerun.run_id,
                "force": self.rerun.force,
                "prompt": self.rerun.prompt,
                "modelId": self.rerun.model_id,
            }
        return source

    def index_attributes(self) -> dict[str, str]:
        """What the table's indexes read (shared.record_index): the object version, and the reprocess run."""
        attributes = {}
        if self.etag:
            attributes[OBJECT_VERSION_ATTRIBUTE] = object_version(self.bucket, self.key, self.etag)
        if self.rerun is not None:
            attributes[RUN_ATTRIBUTE] = self.rerun.run_id
        return attributes


def uploads_in(body: dict[str, Any]) -> list[Upload]:
    """The uploads an S3 notification announces; none for s3:TestEvent."""
    if body.get("Event") == "s3:TestEvent":
        return []
    records = body.get("Records")
    if not isinstance(records, list):
        raise InvalidRequestError("body", "not an S3 event notification (no Records)")
    uploads = []
    for index, record in enumerate(records):
        if not isinstance(record, dict) or not isinstance(record.get("s3"), dict | None):
            raise InvalidRequestError(f"Records.{index}", "an S3 event record must be a JSON object with s3")
        if record.get("eventSource") != "aws:s3":
            obj = (record.get("s3") or {}).get("object") or {}
            bucket = ((record.get("s3") or {}).get("bucket") or {}).get("name")
            logger.warning(
                "skipped s3://%s/%s: the record's eventSource is %r, not aws:s3",
                bucket,
                unquote_plus(str(obj.get("key", ""))),
                record.get("eventSource"),
            )
            continue
        uploads.append(Upload.from_record(record))
    return uploads


def refusal_reason(upload: Upload, rt: Runtime) -> str | None:
    """Why an event names an object this stack must not read. The queue takes messages from the bucket only
    (its policy), but an event is untrusted input all the same: only the input prefix of the stack's bucket
    is processed, never its results."""
    if upload.bucket != rt.settings.results_bucket:
        return f"the bucket is not the stack's ({rt.settings.results_bucket})"
    if upload.key.startswith(rt.settings.results_prefix):
        return "the key is under the results prefix (our own output)"
    # The operator's ReprocessPrefix: reprocess runs (only) may take objects from there too.
    prefixes = rt.settings.reprocess_prefixes if upload.rerun is not None else (rt.settings.input_prefix,)
    if not upload.key.startswith(prefixes):
        named = [f"the input prefix ({prefixes[0]})", *(f"the reprocess prefix ({p})" for p in prefixes[1:])]
        return f"the key is not under {' or '.join(named)}"
    return None


def skip_reason(upload: Upload, rt: Runtime) -> str | None:
    if upload.rerun is None and not upload.event_name.startswith("ObjectCreated"):
        return f"event {upload.event_name} is not an object creation"
    if upload.key.endswith("/") and not upload.size:
        return "a zero-byte folder marker"
    return None


def overrides_from(metadata: dict[str, str]) -> tuple[str | None, str | None]:
    prompt = metadata.get("prompt")
    model_id = metadata.get("model-id")
    if prompt is not None and not (0 < len(prompt.strip()) <= MAX_PROMPT_OVERRIDE):
        raise InvalidRequestError("x-amz-meta-prompt", f"must be 1 to {MAX_PROMPT_OVERRIDE} characters")
    if model_id is not None and not MODEL_ID_PATTERN.fullmatch(model_id):
        raise InvalidRequestError("x-amz-meta-model-id", f"{model_id!r} is not a model id")
    return prompt, model_id


def build_upload_request(rt: Runtime, source: S3Source, rerun: Rerun | None = None) -> ChatRequest:
    # HEAD first: an oversize object is refused before any byte is read.
    item = prepare(source, limits=rt.limits)
    rule_name, settings = rt.routing_rules.choose(source.key, item.detected.kind)
    prompt_override, model_override = overrides_from(source.user_metadata)
    if model_override is not None:
        check_model_allowed(model_override, rt.settings.allowed_model_ids, "x-amz-meta-model-id")
    # A reprocess run's prompt and model win over the object's metadata and the rule, for that run.
    if rerun is not None and rerun.model_id is not None:
        check_model_allowed(rerun.model_id, rt.settings.allowed_model_ids, "reprocess.modelId")
        model_override = rerun.model_id
    if rerun is not None and rerun.prompt is not None:
        prompt_override = rerun.prompt
    model_id = model_override or settings.model_id or rt.settings.default_model_id
    prompt = prompt_override or rt.routing_rules.prompt_for(settings, item.detected.kind)
    logger.info(
        "upload %s is %s/%s, rule %s, model %s",
        source.uri,
        item.detected.kind,
        item.detected.format,
        rule_name,
        model_id,
    )
    return build_chat_request([item], prompt, model_id=model_id, **settings.options())


def process_upload(
    rt: Runtime, upload: Upload, *, receive_count: int, budget_seconds: float
) -> Outcome | None:
    refused = refusal_reason(upload, rt)
    if refused:
        logger.warning("skipped s3://%s/%s: %s", upload.bucket, upload.key, refused)
        rt.telemetry.upload_refused()
        return None
    reason = skip_reason(upload, rt)
    if reason:
        logger.info("skipped s3://%s/%s: %s", upload.bucket, upload.key, reason)
        return None
    source = S3Source(rt.s3, upload.bucket, upload.key, upload.version_id)
    job = Job(
        request_id=upload.request_id,
        source=upload.source(),
        build=lambda: build_upload_request(rt, source, upload.rerun),
        result_key=rt.pipeline.results.key_for_upload(upload.key, upload.request_id),
        receive_count=receive_count,
        attributes=upload.index_attributes(),
    )
    rt.telemetry.request_received("upload" if upload.rerun is None else "reprocess")
    return rt.pipeline.run(job, budget_seconds=budget_seconds)


def uploads_in_message(message: SqsMessage) -> list[Upload]:
    try:
        body = json.loads(message.body)
    except (ValueError, RecursionError) as error:  # RecursionError: nested deeper than the parser goes
        raise InvalidRequestError("body", f"not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("body", "an S3 event notification must be a JSON object")
    if "reprocess" in body:
        # Imported here: the S3 notifications' path (and cold start) stays as it was.
        from shared.reprocess_messages import upload_from_message

        return [upload_from_message(body)]
    return uploads_in(body)


def process_upload_message(rt: Runtime, message: SqsMessage, *, budget_seconds: float) -> list[Outcome]:
    try:
        uploads = uploads_in_message(message)
    except InvalidRequestError as reason:
        request_id = f"upload-message-{message.message_id}"
        source = {"type": "sqs", "queue": message.queue_arn, "messageId": message.message_id}
        return [rt.pipeline.fail(request_id, reason, source=source)]
    outcomes = []
    for upload in uploads:
        outcome = process_upload(
            rt, upload, receive_count=message.receive_count, budget_seconds=budget_seconds
        )
        if outcome:
            outcomes.append(outcome)
    return outcomes
