"""EMF metrics as CloudWatch reads them: one JSON line per set of metrics that share dimensions."""

import json

import pytest

from shared.models import Usage
from shared.telemetry import Telemetry

NOVA = "amazon.nova-lite-v1:0"


@pytest.fixture
def emitted(capsys, monkeypatch):
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "quant-ai-pipeline")
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)

    def lines() -> list[dict]:
        return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]

    return lines


def declared(line: dict) -> tuple[str, list[list[str]], dict[str, str]]:
    [directive] = line["_aws"]["CloudWatchMetrics"]
    return (
        directive["Namespace"],
        directive["Dimensions"],
        {m["Name"]: m["Unit"] for m in directive["Metrics"]},
    )


def test_an_answer_is_one_line_with_latency_tokens_and_its_estimated_cost(emitted):
    telemetry = Telemetry({NOVA: (0.06, 0.24)})
    telemetry.gateway_answered(NOVA, 0.25, Usage(input_tokens=1000, output_tokens=500, total_tokens=1500))
    [line] = emitted()
    namespace, dimensions, units = declared(line)
    assert namespace == "QuantAiPipeline" and dimensions == [["ModelId", "service"]]
    assert units == {
        "GatewayLatency": "Milliseconds",
        "InputTokens": "Count",
        "OutputTokens": "Count",
        "EstimatedCostUSD": "None",
    }
    assert line["ModelId"] == NOVA and line["GatewayLatency"] == [250.0]
    assert (line["InputTokens"], line["OutputTokens"]) == ([1000.0], [500.0])
    assert line["EstimatedCostUSD"] == [pytest.approx(0.06 + 0.12)]


def test_a_model_without_a_price_has_no_cost_and_an_answer_without_usage_only_latency(emitted):
    telemetry = Telemetry({})
    telemetry.gateway_answered("anthropic.claude-3-haiku-20240307-v1:0", 0.1, Usage(input_tokens=5))
    telemetry.gateway_answered(NOVA, 0.1, None)
    priced, bare = emitted()
    assert set(declared(priced)[2]) == {"GatewayLatency", "InputTokens", "OutputTokens"}
    assert set(declared(bare)[2]) == {"GatewayLatency"}


def test_requests_and_failures_by_kind_carry_their_own_dimensions(emitted):
    telemetry = Telemetry(namespace="Custom")
    telemetry.request_received("queue")
    telemetry.request_failed("UnsupportedMediaError", caller_fault=True)
    telemetry.request_completed()
    received, failed, by_fault, completed = emitted()
    assert (
        declared(received)[:2] == ("Custom", [["EntryPoint", "service"]])
        and received["EntryPoint"] == "queue"
    )
    assert declared(failed)[1] == [["FailureKind", "service"]]
    assert failed["FailureKind"] == "UnsupportedMediaError" and failed["RequestsFailed"] == [1.0]
    # And by whose fault it is, the dimension the failure alarms watch.
    assert declared(by_fault)[1] == [["Fault", "service"]] and by_fault["Fault"] == "caller"
    assert declared(completed)[1:] == ([["service"]], {"RequestsCompleted": "Count"})


@pytest.mark.parametrize(
    ("alarm_name", "emit", "dimensions"),
    [
        ("GatewayTokenRefusedAlarm", lambda t: t.gateway_token_refused(), {}),
        ("ServiceFailuresAlarm", lambda t: t.request_failed("PollerFailedError"), {"Fault": "service"}),
        (
            "CallerFailuresAlarm",
            lambda t: t.request_failed("InvalidRequestError", caller_fault=True),
            {"Fault": "caller"},
        ),
        ("RecordsSweptAlarm", lambda t: t.records_swept({"PROCESSING": 2}), {}),
    ],
)
def test_each_alarm_on_our_own_metrics_watches_what_the_functions_emit(emitted, alarm_name, emit, dimensions):
    import yaml

    from tests.plugins.aws import TEMPLATE

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)  # CloudFormation's short tags
    template = yaml.load(TEMPLATE.read_text(), Loader=Loader)
    alarm = template["Resources"][alarm_name]["Properties"]
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    emit(Telemetry())
    lines = [line for line in emitted() if alarm["MetricName"] in line]
    watched = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
    assert watched == {**dimensions, "service": variables["POWERTOOLS_SERVICE_NAME"]}
    matching = [line for line in lines if all(line.get(k) == v for k, v in watched.items())]
    [line] = [line for line in matching if sorted(declared(line)[1][0]) == sorted(watched)]
    assert declared(line)[0] == alarm["Namespace"] == variables["POWERTOOLS_METRICS_NAMESPACE"]
