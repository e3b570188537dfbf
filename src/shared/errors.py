"""The failures the pipeline knows by type: each says whether retrying could help."""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every failure that ends up in a record's `error` field."""

    retryable = False
    # The sender's to fix (what it sent), not the operator's: the two are counted (and alarmed on) apart.
    caller_fault = False

    @property
    def kind(self) -> str:
        return type(self).__name__


class InvalidRequestError(PipelineError):
    """A request, message, rule or override breaks a rule; `field` and `rule` say which."""

    caller_fault = True

    def __init__(self, field: str, rule: str):
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}" if field else rule)


class UnsupportedMediaError(PipelineError):
    """An item is of a type the gateway does not take; `detected` names what was found."""

    caller_fault = True

    def __init__(self, detected: str, message: str | None = None):
        self.detected = detected
        super().__init__(message or f"unsupported file type: {detected}")


class MediaTooLargeError(PipelineError):
    caller_fault = True

    def __init__(self, what: str, size: int, limit: int):
        self.size = size
        self.limit = limit
        super().__init__(f"{what} is {size} bytes, over the gateway's limit of {limit} bytes")


class RequestTooLargeError(PipelineError):
    """The request's JSON body (base64 included) would be over the gateway's payload limit: nothing is sent."""

    caller_fault = True

    def __init__(self, size: int, limit: int, what: str = "the request body"):
        self.size = size
        self.limit = limit
        super().__init__(f"{what} would be {size} bytes, over the limit of {limit} bytes (MaxRequestBytes)")


class SourceNotFoundError(PipelineError):
    """An object named by an event or an attachment does not exist (or cannot be read)."""

    caller_fault = True


class GatewayError(PipelineError):
    not_sent = False  # True when the request never reached the gateway (the connection was not made)

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 1):
        self.status = status
        self.attempts = attempts
        super().__init__(message)


class PermanentGatewayError(GatewayError):
    """A 4xx (other than 429) or a response that breaks the contract: retrying gives the same answer."""


class ContractBreachError(PermanentGatewayError):
    """A 200 whose body breaks the contract (no `response`, wrong types). The gateway may have billed it, so
    the raw answer travels with the error to be stored with the request's result."""

    def __init__(self, message: str, raw: object, *, status: int | None = None):
        super().__init__(message, status=status)
        self.raw = raw


class GatewayCallsExhaustedError(PipelineError):
    """The request has made as many chat calls the gateway may have billed as it is allowed, over all its
    deliveries together (GatewayMaxAttempts)."""

    def __init__(self, calls: int, last_error: Exception | None = None):
        self.calls = calls
        super().__init__(f"gave up after {calls} gateway calls" + (f": {last_error}" if last_error else ""))


class ToolExecutionFailed(PipelineError):
    """The gateway's answer says a tool it ran for the request failed."""


class GatewayAuthError(GatewayError):
    """401 or 403 even with the token fetched anew: it is missing, wrong or not allowed. Retryable: the
    request waits (its message kept, its record saying why) until the token is fixed, then goes through."""

    retryable = True


class GatewayNotFoundError(PermanentGatewayError):
    """404: for a tool execution, it is unknown or expired (executions live 24 hours)."""


class PayloadTooLargeError(PermanentGatewayError):
    """413 from the gateway."""

    caller_fault = True


class TransientGatewayError(GatewayError):
    """429, 5xx, timeouts, broken connections or truncated bodies: worth retrying later."""

    retryable = True
    retry_after: float | None = None  # seconds, from a 429's Retry-After


class RecordRefusedError(PipelineError):
    """DynamoDB refused what the request would store (a number out of its range, say): retrying cannot help."""


class TransientStoreError(PipelineError):
    """DynamoDB or S3 throttled or failed in a way that may pass."""

    retryable = True


# What AWS services (S3, DynamoDB, ...) answer when the same call may succeed a little later.
TRANSIENT_AWS_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "TransactionConflictException",
        "InternalError",
        "InternalServerError",
        "ServiceUnavailable",
    }
)


def aws_error_code(error: Exception) -> str:
    """The code of a botocore ClientError ("" for anything else)."""
    return str(getattr(error, "response", {}).get("Error", {}).get("Code", ""))


class ConfigurationError(PipelineError):
    """The deployment is misconfigured (e.g. invalid routing rules). Retryable: once it is fixed, the
    retried or redriven messages go through."""

    retryable = True
