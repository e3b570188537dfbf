"""The message a reprocess run puts on the upload queue for one object, and how the upload function reads it.

`{"reprocess": {"runId", "bucket", "key", "eTag", "size", "force", "prompt", "modelId"}}`. The queue's policy
lets only the stack's bucket and the reprocess function send, but the message is untrusted input all the
same: it is read strictly here, and the object it names is held to the same prefixes as an upload's
(shared.uploads.refusal_reason), its model to AllowedModelIds.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from shared.errors import InvalidRequestError
from shared.models import build_models, parse

if TYPE_CHECKING:
    from shared.uploads import Upload

ModelT = TypeVar("ModelT", bound=BaseModel)
MESSAGE_KEY = "reprocess"
EVENT_NAME = "Reprocess"
MAX_PROMPT_OVERRIDE = 2000
# A run id is the execution's name; it goes into request ids and result keys.
RUN_ID = re.compile(r"^[A-Za-z0-9._-]{1,80}$")
RunId = Annotated[str, Field(pattern=RUN_ID.pattern)]
ModelId = Annotated[str, Field(pattern=r"^[A-Za-z0-9._:/-]{1,200}$")]
Prompt = Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_OVERRIDE, pattern=r"\S")]


class ReprocessMessage(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        allow_inf_nan=False,
        hide_input_in_errors=True,
        defer_build=True,
    )

    runId: RunId
    bucket: Annotated[str, Field(min_length=3, max_length=63)]
    key: Annotated[str, Field(min_length=1, max_length=1024)]
    eTag: Annotated[str, Field(pattern=r'^"?[A-Za-z0-9-]{1,100}"?$')]
    size: Annotated[int, Field(ge=0)]
    force: bool
    prompt: Prompt | None = None
    modelId: ModelId | None = None

    def body(self) -> str:
        return json.dumps({MESSAGE_KEY: self.model_dump(mode="json")}, separators=(",", ":"))


def parse_under(model: type[ModelT], data: Any, root: str) -> ModelT:
    """`data` checked against `model`, a problem named from `root` (`input.force: must be a boolean...`)."""
    try:
        return parse(model, data, root=root)
    except InvalidRequestError as error:
        where = error.field if error.field == root else f"{root}.{error.field}"
        raise InvalidRequestError(where, error.rule) from None


def upload_from_message(body: dict[str, Any]) -> Upload:
    from shared.uploads import Rerun, Upload

    if set(body) != {MESSAGE_KEY}:
        raise InvalidRequestError("body", f"a reprocess message has only the field {MESSAGE_KEY!r}")
    message = parse_under(ReprocessMessage, body[MESSAGE_KEY], MESSAGE_KEY)
    return Upload(
        bucket=message.bucket,
        key=message.key,
        size=message.size,
        etag=message.eTag.strip('"'),
        version_id=None,
        sequencer=None,
        event_name=EVENT_NAME,
        rerun=Rerun(message.runId, message.force, message.prompt, message.modelId),
    )


build_models(ReprocessMessage)
