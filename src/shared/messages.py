"""The queued request message contract (schema/request-message.schema.json is generated from it)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, model_validator

from shared.models import ChatRequest, JsonResponseFormat, ToolConfig, WireModel

REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
SHORT_FORM_FIELDS = (
    "model_id",
    "system_prompt",
    "temperature",
    "max_tokens",
    "response_format",
    "tool_config",
)


class Attachment(WireModel):
    uri: Annotated[
        str, Field(pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+$", description="s3://bucket/key")
    ]
    label: Annotated[str, Field(min_length=1, max_length=100)] | None = None


class RequestMessage(WireModel):
    """Either `request` (a whole chat request) or the short form `prompt` with optional settings."""

    request_id: Annotated[str, Field(pattern=REQUEST_ID_PATTERN)] | None = Field(
        default=None, description="Idempotency key; defaults to the SQS message id."
    )
    request: ChatRequest | None = None
    prompt: Annotated[str, Field(min_length=1)] | None = None
    model_id: Annotated[str, Field(min_length=1)] | None = None
    system_prompt: str | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    max_tokens: Annotated[int, Field(ge=1, le=8192)] | None = None
    response_format: JsonResponseFormat | None = None
    tool_config: ToolConfig | None = None
    attachments: Annotated[list[Attachment], Field(max_length=20)] = Field(
        default_factory=list,
        description="S3 objects inlined as media before the text of the last user message.",
    )
    metadata: dict[str, Any] | None = Field(default=None, description="Echoed into the record.")

    @model_validator(mode="after")
    def _one_form(self) -> RequestMessage:
        if (self.request is None) == (self.prompt is None):
            raise ValueError("give either `request` or `prompt`, not both and not neither")
        if self.request is not None:
            extra = [name for name in SHORT_FORM_FIELDS if getattr(self, name) is not None]
            if extra:
                raise ValueError(f"{', '.join(extra)} belong to the short form; put them inside `request`")
        return self

    def short_form_options(self) -> dict[str, Any]:
        return {
            name: getattr(self, name) for name in SHORT_FORM_FIELDS[1:] if getattr(self, name) is not None
        }
