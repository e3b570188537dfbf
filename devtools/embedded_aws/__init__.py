"""An embedded AWS for development and tests: deploys template.yaml into moto (served on loopback, IAM
enforced) and runs each function in processes of its own, under its own role, timeout and memory size.

with EmbeddedAws.deploy("template.yaml", parameters={"GatewayOrganisation": "acme"}) as stack:
    stack.client("s3").put_object(Bucket=stack.physical_id("UploadsBucket"), Key="incoming/a.txt", Body=b"hi")
    stack.drain()
"""

from devtools.embedded_aws.lambda_runtime import (
    FunctionError,
    Invocation,
    InvocationLog,
    LambdaError,
    LambdaRuntimeError,
)
from devtools.embedded_aws.resources import UnsupportedPropertyError, UnsupportedResourceTypeError
from devtools.embedded_aws.serverless import FunctionInfo, SqsEventSource
from devtools.embedded_aws.stack import DEFAULT_STACK_NAME, DeployedResource, DeployedStack, EmbeddedAws
from devtools.embedded_aws.template import Template, TemplateError

__all__ = [
    "DEFAULT_STACK_NAME",
    "DeployedResource",
    "DeployedStack",
    "EmbeddedAws",
    "FunctionError",
    "FunctionInfo",
    "Invocation",
    "InvocationLog",
    "LambdaError",
    "LambdaRuntimeError",
    "SqsEventSource",
    "Template",
    "TemplateError",
    "UnsupportedPropertyError",
    "UnsupportedResourceTypeError",
]
