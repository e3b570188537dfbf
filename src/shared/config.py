"""Configuration from the function's environment (set by template.yaml), read when first needed."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from shared.errors import InvalidRequestError

TOKEN_SECRET_MAX_AGE_SECONDS = 300


class Secret:
    """A value that never shows itself in a repr, a log line or an error."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def get_secret_value(self) -> str:
        return self._value


@dataclass(frozen=True)
class Settings:
    gateway_base_url: str
    organisation: str
    token_secret_arn: str
    local_token: Secret | None = field(repr=False)
    default_model_id: str
    results_table: str
    results_bucket: str
    input_prefix: str
    results_prefix: str
    record_ttl_days: int
    event_bus_name: str
    retry_base_delay_seconds: int
    max_receive_count: int
    gateway_max_attempts: int
    routing_rules_parameter: str
    poller_state_machine_arn: str
    price_table: Mapping[str, tuple[float, float]]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        token = env.get("GATEWAY_TOKEN")
        return cls(
            gateway_base_url=env.get("GATEWAY_BASE_URL", "https://dashboard.quantcdn.io"),
            organisation=env.get("GATEWAY_ORGANISATION", ""),
            token_secret_arn=env.get("GATEWAY_TOKEN_SECRET_ARN", ""),
            local_token=Secret(token) if token else None,
            default_model_id=env.get("DEFAULT_MODEL_ID", "amazon.nova-lite-v1:0"),
            results_table=env.get("RESULTS_TABLE", ""),
            results_bucket=env.get("RESULTS_BUCKET", ""),
            input_prefix=env.get("INPUT_PREFIX", "incoming/"),
            results_prefix=env.get("RESULTS_PREFIX", "results/"),
            record_ttl_days=int(env.get("RECORD_TTL_DAYS", "30")),
            event_bus_name=env.get("EVENT_BUS_NAME", "default"),
            retry_base_delay_seconds=int(env.get("RETRY_BASE_DELAY_SECONDS", "30")),
            max_receive_count=int(env.get("MAX_RECEIVE_COUNT", "5")),
            gateway_max_attempts=int(env.get("GATEWAY_MAX_ATTEMPTS", "4")),
            routing_rules_parameter=env.get("ROUTING_RULES_PARAMETER", ""),
            poller_state_machine_arn=env.get("POLLER_STATE_MACHINE_ARN", ""),
            price_table=parse_price_table(env.get("PRICE_TABLE", "")),
        )

    def token_provider(self) -> Callable[[], str]:
        """Locally GATEWAY_TOKEN; in AWS the secret, through Powertools' cache (rotations are picked up)."""
        if self.local_token is not None:
            local_token = self.local_token
            return local_token.get_secret_value
        if not self.token_secret_arn:
            raise InvalidRequestError("GATEWAY_TOKEN_SECRET_ARN", "no gateway token is configured")
        secret_arn = self.token_secret_arn

        def from_secret() -> str:
            from aws_lambda_powertools.utilities import parameters  # only in AWS: keeps local imports light

            return str(parameters.get_secret(secret_arn, max_age=TOKEN_SECRET_MAX_AGE_SECONDS)).strip()

        return from_secret


def parse_price_table(text: str) -> dict[str, tuple[float, float]]:
    """`{"model": [input USD per 1k tokens, output USD per 1k tokens]}`."""
    if not text.strip():
        return {}
    try:
        raw = json.loads(text)
        return {model: (float(prices[0]), float(prices[1])) for model, prices in raw.items()}
    except (ValueError, TypeError, IndexError, AttributeError) as error:
        raise InvalidRequestError(
            "PRICE_TABLE", f"must be JSON {{model: [input, output]}}: {error}"
        ) from None
