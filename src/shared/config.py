"""The function's settings, from the environment template.yaml gives it, checked once per process.

A variable that is missing or malformed is an error that names it (ConfigurationError: retryable, so the
messages wait in their queue until the deployment is fixed), never a silent default.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from shared.errors import ConfigurationError

TOKEN_SECRET_MAX_AGE_SECONDS = 300


def _price_table(value: Any) -> Any:
    """`{"model": [input USD per 1k tokens, output USD per 1k tokens]}`; empty is no prices."""
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            return json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"must be JSON {{model: [input, output]}}: {error}") from None
    return value


PriceTable = Annotated[
    dict[str, tuple[Annotated[float, Field(ge=0)], Annotated[float, Field(ge=0)]]],
    BeforeValidator(_price_table),
]
Prefix = Annotated[str, Field(pattern=r"^[^/].*/$")]  # a folder: "incoming/"


def _comma_list(value: Any) -> Any:
    """A CloudFormation CommaDelimitedList as the environment holds it: "a,b" (empty: none)."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


CommaList = Annotated[tuple[str, ...], BeforeValidator(_comma_list)]
BucketName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False, hide_input_in_errors=True)

    gateway_base_url: Annotated[str, Field(alias="GATEWAY_BASE_URL", pattern=r"^https?://[^/\s]+")]
    organisation: Annotated[str, Field(alias="GATEWAY_ORGANISATION", min_length=1)]
    token_secret_arn: Annotated[str, Field(alias="GATEWAY_TOKEN_SECRET_ARN")] = ""
    local_token: Annotated[SecretStr | None, Field(alias="GATEWAY_TOKEN")] = None
    default_model_id: Annotated[str, Field(alias="DEFAULT_MODEL_ID", pattern=r"\S")]
    results_table: Annotated[str, Field(alias="RESULTS_TABLE", min_length=1)]
    results_bucket: Annotated[str, Field(alias="RESULTS_BUCKET", min_length=1)]
    input_prefix: Annotated[Prefix, Field(alias="INPUT_PREFIX")]
    results_prefix: Annotated[Prefix, Field(alias="RESULTS_PREFIX")]
    record_ttl_days: Annotated[int, Field(alias="RECORD_TTL_DAYS", ge=0)]
    event_bus_name: Annotated[str, Field(alias="EVENT_BUS_NAME", min_length=1)]
    retry_base_delay_seconds: Annotated[int, Field(alias="RETRY_BASE_DELAY_SECONDS", ge=0, le=900)]
    max_receive_count: Annotated[int, Field(alias="MAX_RECEIVE_COUNT", ge=1)]
    gateway_max_attempts: Annotated[int, Field(alias="GATEWAY_MAX_ATTEMPTS", ge=1)]
    max_request_bytes: Annotated[int, Field(alias="MAX_REQUEST_BYTES", ge=1024)]
    # Messages of a batch one instance processes at once: with MaximumConcurrency, the gateway's calls in flight.
    batch_parallelism: Annotated[int, Field(alias="BATCH_PARALLELISM", ge=1, le=10)]
    # When a record that has not ended counts as stranded (shared.records.SweepPolicy).
    sweep_grace_seconds: Annotated[int, Field(alias="SWEEP_GRACE_SECONDS", ge=60)]
    poller_timeout_seconds: Annotated[int, Field(alias="POLLER_TIMEOUT_SECONDS", ge=1)]
    routing_rules_parameter: Annotated[str, Field(alias="ROUTING_RULES_PARAMETER")] = ""
    # Only the entry points start the poller; the poll and finish steps have no such variable.
    poller_state_machine_arn: Annotated[str, Field(alias="POLLER_STATE_MACHINE_ARN")] = ""
    # Only the reprocess function puts messages on the upload queue.
    upload_queue_url: Annotated[str, Field(alias="UPLOAD_QUEUE_URL")] = ""
    price_table: Annotated[PriceTable, Field(alias="PRICE_TABLE")] = Field(default_factory=dict)
    # Where queued attachments may come from: the attachments prefix of the stack's bucket, and other
    # buckets the operator granted. Never the results prefix.
    attachments_prefix: Annotated[Prefix, Field(alias="ATTACHMENTS_PREFIX")]
    attachment_buckets: Annotated[
        tuple[BucketName, ...], BeforeValidator(_comma_list), Field(alias="ATTACHMENT_BUCKETS")
    ]
    allowed_model_ids: Annotated[CommaList, Field(alias="ALLOWED_MODEL_IDS")]  # empty: any
    max_inline_text_bytes: Annotated[int, Field(alias="MAX_INLINE_TEXT_BYTES", ge=1)]
    # Where reprocess runs may take objects from besides the input prefix (ReprocessPrefix; empty: none).
    reprocess_prefix: Annotated[Prefix | Literal[""], Field(alias="REPROCESS_PREFIX")] = ""
    image_download_allowed_urls: Annotated[
        tuple[Annotated[str, Field(pattern=r"^https?://(\*\.)?[A-Za-z0-9.-]+(:[0-9]+)?/?$")], ...],
        BeforeValidator(_comma_list),
        Field(alias="IMAGE_DOWNLOAD_ALLOWED_URLS"),
    ]

    @property
    def reprocess_prefixes(self) -> tuple[str, ...]:
        """Where a reprocess run may take objects from: the input prefix, and the ReprocessPrefix if any."""
        return (self.input_prefix, self.reprocess_prefix) if self.reprocess_prefix else (self.input_prefix,)

    @field_validator("reprocess_prefix")
    @classmethod
    def _never_the_results(cls, value: str, info: ValidationInfo) -> str:
        results = info.data.get("results_prefix", "")
        if value and results and (value.startswith(results) or results.startswith(value)):
            raise ValueError(f"must not hold the results prefix ({results}) nor lie under it")
        return value

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        try:
            return cls.model_validate(dict(env))
        except ValidationError as error:
            problems = [
                f"environment variable {detail['loc'][0]}: "
                + ("required" if detail["type"] == "missing" else detail["msg"].removeprefix("Value error, "))
                for detail in error.errors(include_url=False)
            ]
            raise ConfigurationError("; ".join(problems)) from None

    def token_provider(self) -> TokenSource:
        """Locally GATEWAY_TOKEN; in AWS the secret, through Powertools' cache (rotations are picked up)."""
        if self.local_token is not None:
            return FixedToken(self.local_token)
        if not self.token_secret_arn:
            raise ConfigurationError(
                "environment variable GATEWAY_TOKEN_SECRET_ARN (or GATEWAY_TOKEN): no gateway token is configured"
            )
        return SecretToken(self.token_secret_arn)


class TokenSource(Protocol):
    """The gateway token, asked for on every request and never stored where it could be shown."""

    def __call__(self) -> str: ...

    def refresh(self) -> None:
        """Forget any cached value: the gateway refused the token, which may have been rotated since."""


@dataclass(frozen=True)
class FixedToken:
    value: SecretStr

    def __call__(self) -> str:
        return self.value.get_secret_value()

    def refresh(self) -> None:
        """Nothing to refresh: a token from the environment changes only with the deployment."""


@dataclass(frozen=True)
class SecretToken:
    secret_arn: str

    def __call__(self) -> str:
        from aws_lambda_powertools.utilities import parameters  # only in AWS: keeps local imports light

        return str(parameters.get_secret(self.secret_arn, max_age=TOKEN_SECRET_MAX_AGE_SECONDS)).strip()

    def refresh(self) -> None:
        from aws_lambda_powertools.utilities import parameters

        parameters.get_secret(self.secret_arn, max_age=TOKEN_SECRET_MAX_AGE_SECONDS, force_fetch=True)
