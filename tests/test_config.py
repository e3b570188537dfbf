"""Settings come from the function's environment, checked once: a missing or malformed variable is named."""

import pytest

from shared.config import Settings
from shared.errors import ConfigurationError

VALID = {
    "GATEWAY_BASE_URL": "https://dashboard.quantcdn.io",
    "GATEWAY_ORGANISATION": "acme",
    "GATEWAY_TOKEN_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:token",
    "DEFAULT_MODEL_ID": "amazon.nova-lite-v1:0",
    "RESULTS_TABLE": "results",
    "RESULTS_BUCKET": "bucket",
    "INPUT_PREFIX": "incoming/",
    "RESULTS_PREFIX": "results/",
    "RECORD_TTL_DAYS": "30",
    "EVENT_BUS_NAME": "default",
    "RETRY_BASE_DELAY_SECONDS": "30",
    "MAX_RECEIVE_COUNT": "5",
    "GATEWAY_MAX_ATTEMPTS": "4",
    "MAX_REQUEST_BYTES": "25000000",
    "BATCH_PARALLELISM": "10",
    "SWEEP_GRACE_SECONDS": "900",
    "POLLER_TIMEOUT_SECONDS": "3600",
    "ROUTING_RULES_PARAMETER": "",
    "PRICE_TABLE": '{"amazon.nova-lite-v1:0": [0.00006, 0.00024]}',
    "ATTACHMENTS_PREFIX": "attachments/",
    "ATTACHMENT_BUCKETS": "",
    "ALLOWED_MODEL_IDS": "",
    "MAX_INLINE_TEXT_BYTES": "1048576",
    "IMAGE_DOWNLOAD_ALLOWED_URLS": "https://*.amazonaws.com",
}


def test_the_template_variables_make_settings():
    settings = Settings.from_env(VALID)
    assert settings.max_request_bytes == 25_000_000 and settings.gateway_max_attempts == 4
    assert settings.price_table == {"amazon.nova-lite-v1:0": (0.00006, 0.00024)}


@pytest.mark.parametrize(
    "name", ["GATEWAY_ORGANISATION", "RESULTS_TABLE", "MAX_REQUEST_BYTES", "INPUT_PREFIX"]
)
def test_a_missing_variable_is_named(name):
    env = {k: v for k, v in VALID.items() if k != name}
    with pytest.raises(ConfigurationError, match=rf"{name}: required") as caught:
        Settings.from_env(env)
    assert caught.value.retryable  # the messages wait until the deployment is fixed


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_MAX_ATTEMPTS", "four"),
        ("GATEWAY_MAX_ATTEMPTS", "0"),
        ("MAX_REQUEST_BYTES", "-1"),
        ("GATEWAY_BASE_URL", "dashboard.quantcdn.io"),
        ("INPUT_PREFIX", "incoming"),
        ("PRICE_TABLE", "{not json"),
        ("PRICE_TABLE", '{"m": [1]}'),
        ("RECORD_TTL_DAYS", "1.5"),
        ("ATTACHMENT_BUCKETS", "ok-bucket,Not_A_Bucket"),
        ("IMAGE_DOWNLOAD_ALLOWED_URLS", "https://*.amazonaws.com/path?x=1"),
    ],
)
def test_a_malformed_variable_is_named(name, value):
    with pytest.raises(ConfigurationError, match=rf"environment variable {name}: "):
        Settings.from_env({**VALID, name: value})


def test_a_token_never_shows_itself():
    settings = Settings.from_env({**VALID, "GATEWAY_TOKEN": "s3cr3t-token"})
    assert "s3cr3t" not in repr(settings) and "s3cr3t" not in str(settings)
    assert settings.token_provider()() == "s3cr3t-token"
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({**VALID, "GATEWAY_TOKEN": "s3cr3t-token", "RECORD_TTL_DAYS": "x"})
    assert "s3cr3t" not in str(caught.value)


def test_no_token_configured_is_named():
    settings = Settings.from_env({**VALID, "GATEWAY_TOKEN_SECRET_ARN": ""})
    with pytest.raises(ConfigurationError, match="GATEWAY_TOKEN_SECRET_ARN"):
        settings.token_provider()
