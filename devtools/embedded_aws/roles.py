"""The IAM roles SAM makes for a template's functions and state machines, made in the embedded AWS.

SAM's own translator (samtranslator, offline) turns the template into CloudFormation: each function's and
state machine's `<LogicalId>Role` with its policy templates expanded and the managed policies SAM attaches.
The embedded AWS creates those roles as written, with every intrinsic resolved against the deployed stack,
so that the functions' calls are checked against exactly what AWS would check them against.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import os
import pickle
from collections.abc import Mapping
from typing import Any

from devtools.embedded_aws.template import Copies, Resolver, Template, TemplateError

# Placeholders for the local paths the translator wants as S3 locations; only roles are read from its output.
CODE_PLACEHOLDER = "s3://embedded-aws/code.zip"
DEFINITION_PLACEHOLDER = "s3://embedded-aws/definition.json"
MANAGED_POLICY_PREFIX = "managed-"


class _NoManagedPolicyLookups:
    """The translator looks up managed policies by name only for `Policies: [<name>]`; offline there are none."""

    def load(self) -> dict[str, str]:
        return {}


_translated = Copies()  # by the template's document (its digest: a caller may have changed it) and region


def translate(template: Template, region: str) -> dict[str, Any]:
    """The template as CloudFormation, as `sam deploy` would send it (SAM's transform applied offline); a copy
    of its own for each caller."""
    key = (hashlib.sha256(pickle.dumps(template.document)).digest(), region)
    return _translated.get(key, lambda: _translate(template, region))


def _translate(template: Template, region: str) -> dict[str, Any]:
    from samtranslator.translator.transform import transform

    document = copy.deepcopy(template.document)
    for resource in document["Resources"].values():
        properties = resource.setdefault("Properties", {}) or {}
        resource["Properties"] = properties
        if resource.get("Type") == "AWS::Serverless::Function" and "ImageUri" not in properties:
            properties["CodeUri"] = CODE_PLACEHOLDER
        if resource.get("Type") == "AWS::Serverless::StateMachine" and isinstance(
            properties.get("DefinitionUri"), str
        ):
            properties["DefinitionUri"] = DEFINITION_PLACEHOLDER
    # Its usage metrics are never published offline; it warns about that on every run.
    logging.getLogger("samtranslator.metrics").setLevel(logging.ERROR)
    previous_region = os.environ.get("AWS_DEFAULT_REGION")
    # The translator asks boto3 for the region (for the partition); no request is made.
    os.environ["AWS_DEFAULT_REGION"] = region
    try:
        return transform(document, {}, _NoManagedPolicyLookups())
    finally:
        if previous_region is None:
            os.environ.pop("AWS_DEFAULT_REGION", None)
        else:
            os.environ["AWS_DEFAULT_REGION"] = previous_region


def role_logical_id(translated: Mapping[str, Any], logical_id: str) -> str:
    """The role SAM generated for a function or state machine."""
    role_id = f"{logical_id}Role"
    resource = translated["Resources"].get(role_id)
    if resource is None or resource["Type"] != "AWS::IAM::Role":
        raise TemplateError(
            f"{logical_id}: SAM generated no role for it (a `Role` property names an existing one); the embedded"
            " AWS only runs functions under the roles SAM generates"
        )
    return role_id


@functools.cache
def _managed_policy_documents() -> dict[str, Any]:
    from moto.iam.aws_managed_policies import aws_managed_policies_data

    return json.loads(aws_managed_policies_data)


def managed_policy_document(arn: str) -> dict[str, Any]:
    """An AWS managed policy's document (moto carries a copy of them all)."""
    name = arn.rsplit("/", 1)[-1]
    policies = _managed_policy_documents()
    if ":aws:policy/" not in arn or name not in policies:
        raise TemplateError(
            f"managed policy {arn} is not one the embedded AWS knows (only AWS managed policies)"
        )
    return policies[name]["Document"]


def versioned(document: Mapping[str, Any]) -> dict[str, Any]:
    """SAM's policy templates carry no Version, which IAM accepts (as 2008-10-17) and moto refuses; they use
    no policy variables, so the current version means the same."""
    return {"Version": "2012-10-17", **document}


class StackRoles:
    """The roles of one stack: each made (trust policy only) when its function or state machine is created,
    its policies put once every resource they name exists (as CloudFormation orders a role's policies)."""

    def __init__(self, translated: Mapping[str, Any], iam: Any, stack_name: str) -> None:
        self._translated = translated
        self._iam = iam
        self._stack_name = stack_name
        self.arns: dict[str, str] = {}  # by the function's or state machine's logical id
        self.names: dict[str, str] = {}

    def role_arn(self, logical_id: str) -> str:
        if logical_id not in self.arns:
            role_id = role_logical_id(self._translated, logical_id)
            trust = self._translated["Resources"][role_id]["Properties"]["AssumeRolePolicyDocument"]
            name = f"{self._stack_name}-{role_id}"[:64]
            self.arns[logical_id] = self._iam.create_role(
                RoleName=name, AssumeRolePolicyDocument=json.dumps(trust)
            )["Role"]["Arn"]
            self.names[logical_id] = name
        return self.arns[logical_id]

    def put_policies(self, resolver: Resolver) -> None:
        for logical_id, name in self.names.items():
            role = self._translated["Resources"][role_logical_id(self._translated, logical_id)]
            properties = resolver.resolve(role["Properties"])
            for policy in properties.get("Policies", []):
                self._iam.put_role_policy(
                    RoleName=name,
                    PolicyName=policy["PolicyName"],
                    PolicyDocument=json.dumps(versioned(policy["PolicyDocument"])),
                )
            for managed_arn in properties.get("ManagedPolicyArns", []):
                self._iam.put_role_policy(
                    RoleName=name,
                    PolicyName=MANAGED_POLICY_PREFIX + managed_arn.rsplit("/", 1)[-1],
                    PolicyDocument=json.dumps(managed_policy_document(managed_arn)),
                )
