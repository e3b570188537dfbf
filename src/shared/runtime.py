"""The per-process dependencies of a function, each built on first use (not at import) and then reused,
as Lambda reuses a warm process: one gateway connection pool, one client per AWS service.

The domain modules are imported where they are first needed, so each function's cold start loads only
what that function uses (the poll step never loads the routing rules or the pipeline, for instance).
"""

from __future__ import annotations

import functools
from functools import cached_property
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from shared.config import Settings

if TYPE_CHECKING:
    from shared.gateway import GatewayClient
    from shared.images import UrlAllowlist
    from shared.notifications import Notifier
    from shared.pipeline import Pipeline
    from shared.records import RecordStore
    from shared.request_builder import Limits
    from shared.results import ResultStore
    from shared.routing import RoutingRules
    from shared.telemetry import Telemetry

# Adaptive retries absorb AWS throttling before it reaches our own error handling.
AWS_CONFIG = Config(retries={"mode": "adaptive", "max_attempts": 5}, max_pool_connections=32)


class Runtime:
    def __init__(self, settings: Settings):
        self.settings = settings

    def _client(self, service: str) -> Any:
        return boto3.client(service, config=AWS_CONFIG)

    @cached_property
    def s3(self) -> Any:
        return self._client("s3")

    @cached_property
    def sqs(self) -> Any:
        return self._client("sqs")

    @cached_property
    def telemetry(self) -> Telemetry:
        from shared.telemetry import Telemetry

        return Telemetry(self.settings.price_table)

    @cached_property
    def gateway(self) -> GatewayClient:
        from shared.gateway import GatewayClient, RetryPolicy

        s = self.settings
        retry = RetryPolicy(max_attempts=s.gateway_max_attempts)
        return GatewayClient(
            s.gateway_base_url,
            s.organisation,
            s.token_provider(),
            retry=retry,
            max_request_bytes=s.max_request_bytes,
        )

    @cached_property
    def limits(self) -> Limits:
        from shared.request_builder import Limits

        return Limits(self.settings.max_request_bytes, self.settings.max_inline_text_bytes)

    @cached_property
    def image_allowlist(self) -> UrlAllowlist:
        from shared.images import UrlAllowlist

        return UrlAllowlist(self.settings.image_download_allowed_urls)

    @cached_property
    def records(self) -> RecordStore:
        from shared.records import RecordStore, SweepPolicy

        s = self.settings
        table = boto3.resource("dynamodb", config=AWS_CONFIG).Table(s.results_table)
        sweep = SweepPolicy(grace_seconds=s.sweep_grace_seconds, poller_seconds=s.poller_timeout_seconds)
        return RecordStore(table, ttl_days=s.record_ttl_days, sweep=sweep)

    @cached_property
    def results(self) -> ResultStore:
        from shared.results import ResultStore

        return ResultStore(self.s3, self.settings.results_bucket, self.settings.results_prefix)

    @cached_property
    def notifier(self) -> Notifier:
        from shared.notifications import Notifier

        return Notifier(self._client("events"), self.settings.event_bus_name)

    @cached_property
    def pipeline(self) -> Pipeline:
        from shared.pipeline import Pipeline
        from shared.poller import PollerStarter

        return Pipeline(
            gateway=self.gateway,
            records=self.records,
            results=self.results,
            notifier=self.notifier,
            poller=PollerStarter(self._client("stepfunctions"), self.settings.poller_state_machine_arn),
            max_receive_count=self.settings.max_receive_count,
            telemetry=self.telemetry,
            max_gateway_calls=self.settings.gateway_max_attempts,
        )

    @cached_property
    def routing_rules(self) -> RoutingRules:
        from botocore.exceptions import ClientError

        from shared.errors import ConfigurationError, InvalidRequestError
        from shared.routing import load_rules

        name = self.settings.routing_rules_parameter
        try:
            return load_rules(name, self._client("ssm") if name else None)
        except InvalidRequestError as error:
            raise ConfigurationError(f"invalid routing rules: {error}") from error
        except ClientError as error:
            # A missing or unreadable parameter is a deployment fault: uploads wait (and are retried).
            problem = error.response.get("Error", {})
            raise ConfigurationError(
                f"routing rules parameter {name} could not be read: {problem.get('Code')}: {problem.get('Message')}"
            ) from error


@functools.cache
def runtime() -> Runtime:
    return Runtime(Settings.from_env())
