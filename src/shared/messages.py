"""The queued request message contract (schema/request-message.schema.json is generated from it)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from shared.models import (
    OPTION_FIELDS,
    ChatRequest,
    NonEmpty,
    RequestOptions,
    WireModel,
    build_validators,
    whole,
    wire_names,
)

REQUEST_ID_PATTERN = whole(r"[A-Za-z0-9._:-]{1,128}")


class Attachment(WireModel):
    uri: Annotated[
        str, Meta(pattern=whole(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+"), description="s3://bucket/key")
    ]
    label: Annotated[str, Meta(min_length=1, max_length=100)] | None = None


class RequestMessage(RequestOptions):
    """Either `request` (a whole chat request) or the short form: `prompt` with the RequestOptions."""

    request_id: (
        Annotated[
            str,
            Meta(pattern=REQUEST_ID_PATTERN, description="Idempotency key; defaults to the SQS message id."),
        ]
        | None
    ) = None
    request: ChatRequest | None = None
    prompt: NonEmpty | None = None
    attachments: Annotated[
        list[Attachment],
        Meta(
            max_length=20, description="S3 objects inlined as media before the text of the last user message."
        ),
    ] = msgspec.field(default_factory=list)
    metadata: Annotated[dict[str, Any], Meta(description="Echoed into the record.")] | None = None

    def __post_init__(self) -> None:
        if (self.request is None) == (self.prompt is None):
            raise ValueError("give either `request` or `prompt`, not both and not neither")
        if self.request is not None:
            names = wire_names(RequestMessage)
            extra = [names[name] for name in ("model_id", *OPTION_FIELDS) if getattr(self, name) is not None]
            if extra:
                raise ValueError(f"{', '.join(extra)} belong to the short form; put them inside `request`")


build_validators(RequestMessage)
