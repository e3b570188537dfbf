"""The queued request message contract (schema/request-message.schema.json is generated from it)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AfterValidator, Field, model_validator

from shared.models import (
    OPTION_FIELDS,
    ChatRequest,
    JsonObject,
    NonEmpty,
    RequestOptions,
    WireModel,
    build_models,
)

REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
# Metadata is echoed into the record: small and shallow, so it never crowds the item or a reader's stack.
MAX_METADATA_BYTES = 8 * 1024
MAX_METADATA_DEPTH = 10


def _bounded_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    stack: list[tuple[Any, int]] = [(metadata, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_METADATA_DEPTH:
                raise ValueError(f"more than {MAX_METADATA_DEPTH} levels deep")
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)
    size = len(json.dumps(metadata, separators=(",", ":")).encode())
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"{size} bytes as JSON, over the limit of {MAX_METADATA_BYTES}")
    return metadata


class Attachment(WireModel):
    uri: Annotated[
        str, Field(pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+$", description="s3://bucket/key")
    ]
    label: Annotated[str, Field(min_length=1, max_length=100)] | None = None


class RequestMessage(RequestOptions):
    """Either `request` (a whole chat request) or the short form: `prompt` with the RequestOptions."""

    request_id: (
        Annotated[
            str,
            Field(pattern=REQUEST_ID_PATTERN, description="Idempotency key; defaults to the SQS message id."),
        ]
        | None
    ) = None
    request: ChatRequest | None = None
    prompt: NonEmpty | None = None
    attachments: Annotated[
        list[Attachment],
        Field(
            max_length=20, description="S3 objects inlined as media before the text of the last user message."
        ),
    ] = Field(default_factory=list)
    metadata: (
        Annotated[
            JsonObject,
            AfterValidator(_bounded_metadata),
            Field(description="Echoed into the record: at most 8 KB as JSON and 10 levels deep."),
        ]
        | None
    ) = None

    @model_validator(mode="after")
    def _one_form(self) -> RequestMessage:
        if (self.request is None) == (self.prompt is None):
            raise ValueError("give either `request` or `prompt`, not both and not neither")
        if self.request is not None:
            fields = type(self).model_fields
            extra = [
                fields[n].alias or n for n in ("model_id", *OPTION_FIELDS) if getattr(self, n) is not None
            ]
            if extra:
                raise ValueError(f"{', '.join(extra)} belong to the short form; put them inside `request`")
        return self


build_models(RequestMessage)
