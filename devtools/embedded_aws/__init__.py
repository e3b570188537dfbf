"""An embedded AWS for development and tests: deploys template.yaml into moto and runs the handlers in-process.

with EmbeddedAws.deploy("template.yaml", parameters={"GatewayOrganisation": "acme"}) as stack:
    stack.client("s3").put_object(Bucket=stack.physical_id("UploadsBucket"), Key="incoming/a.txt", Body=b"hi")
    stack.drain()
"""

from devtools.embedded_aws.environment import EnvironmentConflictError
from devtools.embedded_aws.lambda_runtime import (
    Invocation,
    InvocationLog,
    LambdaContext,
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
    "EnvironmentConflictError",
    "FunctionInfo",
    "Invocation",
    "InvocationLog",
    "LambdaContext",
    "LambdaError",
    "LambdaRuntimeError",
    "SqsEventSource",
    "Template",
    "TemplateError",
    "UnsupportedPropertyError",
    "UnsupportedResourceTypeError",
]
