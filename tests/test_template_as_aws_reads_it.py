"""template.yaml as AWS reads it: SAM's own translator (offline) against what the embedded AWS created."""

from __future__ import annotations

import json
import re
from pathlib import Path

from devtools.embedded_aws.roles import MANAGED_POLICY_PREFIX, managed_policy_document, translate, versioned
from devtools.embedded_aws.template import Template

ROOT = Path(__file__).resolve().parents[1]
# What SAM adds besides the resources the template names, by type; each is checked below in its own way.
# (The event source mappings are the template's own resources: SAM's SQS events would attach a managed
# policy with sqs actions on "*".)
GENERATED_TYPES = {"AWS::IAM::Role"}
# SAM's resource types and what they become in CloudFormation.
TRANSLATED_TYPE = {
    "AWS::Serverless::Function": "AWS::Lambda::Function",
    "AWS::Serverless::StateMachine": "AWS::StepFunctions::StateMachine",
}


def test_the_embedded_aws_created_what_sams_translation_of_template_yaml_creates(deploy_stack):
    template = Template.load(ROOT / "template.yaml")
    translated = translate(template, "us-east-1")["Resources"]
    stack = deploy_stack(batching_window_override=None, start_pollers=False)

    # The same resources (those whose condition holds with these parameters), of the same types.
    named = {
        logical_id: resource["Type"]
        for logical_id, resource in translated.items()
        if resource["Type"] not in GENERATED_TYPES
        and (resource.get("Condition") is None or logical_id in stack.resources)
    }
    created = {
        logical_id: TRANSLATED_TYPE.get(resource.type, resource.type)
        for logical_id, resource in stack.resources.items()
    }
    assert created == named

    # The same event source mappings, with the same settings.
    mappings = {
        k: r["Properties"] for k, r in translated.items() if r["Type"] == "AWS::Lambda::EventSourceMapping"
    }
    sources = {
        name if name in translated else f"{function.logical_id}{name}": source
        for function in stack.functions.values()
        for name, source in function.events.items()
    }
    assert set(sources) == set(mappings) and mappings
    for logical_id, mapping in mappings.items():
        source = sources[logical_id]
        assert stack.attribute(mapping["EventSourceArn"]["Fn::GetAtt"][0], "Arn") == source.queue_arn
        assert mapping["FunctionName"] == {"Ref": source.function_logical_id}
        assert mapping["BatchSize"] == source.batch_size
        assert mapping["MaximumBatchingWindowInSeconds"] == source.maximum_batching_window_seconds
        assert ("ReportBatchItemFailures" in mapping.get("FunctionResponseTypes", [])) == (
            source.report_batch_item_failures
        )
        concurrency = mapping["ScalingConfig"]["MaximumConcurrency"]
        assert concurrency == {"Ref": "MaximumConcurrency"}
        assert source.maximum_concurrency == int(template.parameters["MaximumConcurrency"]["Default"])

    # The same roles, with the same policies: each function's and state machine's role in IAM holds exactly
    # the translator's policies (resolved against the stack) and SAM's managed policies.
    iam = stack.client("iam")
    owners = [k for k, r in stack.resources.items() if r.type in TRANSLATED_TYPE]
    assert {f"{owner}Role" for owner in owners} == {
        k for k, r in translated.items() if r["Type"] == "AWS::IAM::Role"
    }
    for owner in owners:
        role_name = stack.roles.names[owner]
        role = iam.get_role(RoleName=role_name)["Role"]
        properties = translated[f"{owner}Role"]["Properties"]
        assert role["AssumeRolePolicyDocument"] == properties["AssumeRolePolicyDocument"]
        assert stack.functions.get(owner) is None or stack.functions[owner].role_arn == role["Arn"]
        expected = {
            policy["PolicyName"]: versioned(policy["PolicyDocument"])
            for policy in stack_resolved(stack, properties.get("Policies", []))
        }
        expected |= {
            MANAGED_POLICY_PREFIX + arn.rsplit("/", 1)[-1]: managed_policy_document(arn)
            for arn in properties["ManagedPolicyArns"]
        }
        actual = {
            name: iam.get_role_policy(RoleName=role_name, PolicyName=name)["PolicyDocument"]
            for name in iam.list_role_policies(RoleName=role_name)["PolicyNames"]
        }
        assert json.loads(json.dumps(actual)) == expected, owner


def stack_resolved(stack, policies):
    """The translator's policies with their intrinsics resolved as the stack resolved its own."""
    resolved = []
    for policy in policies:
        if "Fn::If" in policy:  # the optional SSM statement: absent with the default parameters
            continue
        resolved.append(_resolve(stack, policy))
    return resolved


def _resolve(stack, value):
    if isinstance(value, list):
        return [_resolve(stack, item) for item in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"Ref"}:
        name = value["Ref"]
        pseudo = {
            "AWS::Partition": "aws",
            "AWS::Region": stack.region,
            "AWS::AccountId": stack.account_id,
            "AWS::StackName": stack.stack_name,
        }
        if name in pseudo:
            return pseudo[name]
        if name in stack.resources:
            return stack.physical_id(name)
        return stack.template.parameter_values({})[name]
    if set(value) == {"Fn::GetAtt"}:
        return stack.attribute(*value["Fn::GetAtt"])
    if set(value) == {"Fn::If"}:
        condition, if_true, if_false = value["Fn::If"]
        taken = if_true if condition == "CreateTokenSecret" else if_false  # the defaults' conditions
        return _resolve(stack, taken)
    if set(value) == {"Fn::Sub"}:
        text, variables = value["Fn::Sub"] if isinstance(value["Fn::Sub"], list) else (value["Fn::Sub"], {})
        names = {k: _resolve(stack, v) for k, v in variables.items()}
        names |= {
            "AWS::Partition": "aws",
            "AWS::Region": stack.region,
            "AWS::AccountId": stack.account_id,
            "AWS::StackName": stack.stack_name,  # the reprocess state machine's role names its own ARN
        }
        for name, replacement in names.items():
            text = text.replace("${" + name + "}", str(replacement))
        # The template's own names: ${Resource} (its Ref), ${Resource.Attribute}, ${Parameter}.
        for name in re.findall(r"\$\{([A-Za-z0-9.]+)\}", text):
            target = {"Fn::GetAtt": name.split(".", 1)} if "." in name else {"Ref": name}
            text = text.replace("${" + name + "}", str(_resolve(stack, target)))
        return text
    return {key: _resolve(stack, item) for key, item in value.items()}
