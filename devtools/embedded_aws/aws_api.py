"""Calls AWS APIs with values written the CloudFormation way (numbers and booleans often arrive as strings)."""

from __future__ import annotations

import json
import threading
from functools import cache
from typing import Any

import boto3
from botocore import xform_name
from botocore.model import Shape

_client_creation = threading.Lock()


@cache
def _session() -> boto3.session.Session:
    return boto3.session.Session()


def local_client(service: str, **arguments: Any) -> Any:
    """A boto3 client from one session kept while this process lives, for the deployer and the Step Functions
    interpreter. moto's mock_aws gives boto3 a new default session each time it starts, that is, every deploy;
    a new session reads and parses each service's model again, a fifth of a deploy's CPU. The arguments name
    the endpoint, the region and the credentials, so nothing is taken from the session's environment. Under a
    lock: a botocore session is not safe to create clients from on several threads at once."""
    with _client_creation:
        return _session().client(service, **arguments)


def call(client: Any, operation: str, **params: Any) -> dict[str, Any]:
    """`client.<operation>(**params)` after coercing every value to the type the API's model declares.

    CloudFormation converts "300" to 300 (and 300 to "300") where the API wants it; this does the same, so
    creators can pass resolved template values straight through.
    """
    input_shape = client.meta.service_model.operation_model(operation).input_shape
    return getattr(client, xform_name(operation))(**_coerce(params, input_shape))


def _coerce(value: Any, shape: Shape | None) -> Any:
    if shape is None:
        return value
    match shape.type_name:
        case "structure" if isinstance(value, dict):
            return {key: _coerce(item, shape.members.get(key)) for key, item in value.items()}
        case "list" if isinstance(value, list):
            return [_coerce(item, shape.member) for item in value]
        case "map" if isinstance(value, dict):
            return {str(key): _coerce(item, shape.value) for key, item in value.items()}
        case "integer" | "long" if isinstance(value, str):
            return int(value)
        case "float" | "double" if isinstance(value, (str, int)):
            return float(value)
        case "boolean" if isinstance(value, str):
            return value.lower() == "true"
        case "string" if isinstance(value, bool):
            return "true" if value else "false"
        case "string" if isinstance(value, (int, float)):
            return str(value)
        case "string" if isinstance(value, (dict, list)):
            # Policy documents and the like are JSON strings in the API, objects in templates.
            return json.dumps(value)
    return value


def tag_list(tags: Any) -> list[dict[str, str]]:
    """Tags as `[{"Key": k, "Value": v}]`, from either that form or SAM's `{k: v}`."""
    if isinstance(tags, dict):
        return [{"Key": str(key), "Value": str(value)} for key, value in tags.items()]
    return [{"Key": str(tag["Key"]), "Value": str(tag["Value"])} for tag in tags or []]


def tag_map(tags: Any) -> dict[str, str]:
    """Tags as `{k: v}`, from either that form or `[{"Key": k, "Value": v}]`."""
    return {tag["Key"]: tag["Value"] for tag in tag_list(tags)}
