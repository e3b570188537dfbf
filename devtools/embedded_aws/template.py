"""Reads a SAM template and resolves its parameters, conditions and intrinsic functions like CloudFormation."""

from __future__ import annotations

import base64
import pickle
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class TemplateError(Exception):
    """The template cannot be deployed as written (CloudFormation would reject it too)."""


class _NoValue:
    """`AWS::NoValue`: the property or list item it stands for is removed."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE = _NoValue()

# SAM Globals section -> the resource type it applies to.
GLOBALS_SECTIONS = {"Function": "AWS::Serverless::Function"}


# --- YAML with CloudFormation's short-form tags --------------------------------------------------------------


class _CfnLoader(yaml.CSafeLoader):
    """SafeLoader that turns `!Ref X` into `{"Ref": "X"}` and `!Sub ...` into `{"Fn::Sub": ...}`.

    libyaml's (PyYAML's C parser, in its wheels): every deploy reads the template, and the pure-Python parser
    took a tenth of a deploy's CPU."""


def _construct_node(loader: yaml.CSafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_mapping(node, deep=True)


def _add_short_form(tag: str, long_form: str) -> None:
    def construct(loader: yaml.CSafeLoader, node: yaml.Node) -> dict[str, Any]:
        value = _construct_node(loader, node)
        if tag == "!GetAtt" and isinstance(value, str):
            # "Resource.Attribute"; attribute names may themselves contain dots (Endpoint.Address).
            value = value.split(".", 1)
        return {long_form: value}

    _CfnLoader.add_constructor(tag, construct)


for _name in (
    "Base64",
    "Cidr",
    "FindInMap",
    "GetAtt",
    "GetAZs",
    "ImportValue",
    "Join",
    "Select",
    "Split",
    "Sub",
    "Transform",
    "If",
    "Equals",
    "Not",
    "And",
    "Or",
):
    _add_short_form(f"!{_name}", f"Fn::{_name}")
_add_short_form("!Ref", "Ref")
_add_short_form("!Condition", "Condition")


class Copies:
    """Values made once per key and kept pickled, each caller given a copy of its own (it may change it): a
    copy from a pickle takes 0.2 ms, parsing template.yaml 13 and translating it 20, and every test deploys
    it. Two threads may both make a value still missing: they make the same."""

    def __init__(self) -> None:
        self._pickled: dict[Any, bytes] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        with self._lock:
            pickled = self._pickled.get(key)
        if pickled is None:
            pickled = pickle.dumps(make())
            with self._lock:
                self._pickled[key] = pickled
        return pickle.loads(pickled)


_parsed = Copies()  # by (path, modification time, size)


def load_document(path: Path) -> dict[str, Any]:
    """The template's document, a copy of its own for each caller."""
    status = path.stat()
    return _parsed.get((path, status.st_mtime_ns, status.st_size), lambda: _parse(path))


def _parse(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as stream:
        document = yaml.load(stream, Loader=_CfnLoader)  # a CSafeLoader subclass: no arbitrary objects
    if not isinstance(document, dict) or not isinstance(document.get("Resources"), dict):
        raise TemplateError(f"{path}: not a CloudFormation template (no Resources mapping)")
    return document


# --- Template --------------------------------------------------------------------------------------------------


def _is_intrinsic(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("Ref", *_INTRINSIC_NAMES)


def merge_globals(global_value: Any, resource_value: Any) -> Any:
    """SAM's rules: the resource's scalars win, maps merge (resource wins), lists are global items first."""
    if _is_intrinsic(global_value) or _is_intrinsic(resource_value):
        return resource_value
    if isinstance(global_value, dict) and isinstance(resource_value, dict):
        merged = dict(global_value)
        for key, value in resource_value.items():
            merged[key] = merge_globals(global_value[key], value) if key in global_value else value
        return merged
    if isinstance(global_value, list) and isinstance(resource_value, list):
        return [*global_value, *resource_value]
    return resource_value


@dataclass(frozen=True)
class Template:
    path: Path
    document: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> Template:
        path = Path(path).resolve()
        template = cls(path, load_document(path))
        unknown_globals = set(template.document.get("Globals", {})) - set(GLOBALS_SECTIONS)
        if unknown_globals:
            raise TemplateError(
                f"Globals sections not supported by the embedded AWS: {sorted(unknown_globals)}"
            )
        return template

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def parameters(self) -> dict[str, dict[str, Any]]:
        return self.document.get("Parameters") or {}

    @property
    def conditions(self) -> dict[str, Any]:
        return self.document.get("Conditions") or {}

    @property
    def mappings(self) -> dict[str, Any]:
        return self.document.get("Mappings") or {}

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return self.document["Resources"]

    @property
    def outputs(self) -> dict[str, dict[str, Any]]:
        return self.document.get("Outputs") or {}

    def resource_type(self, logical_id: str) -> str:
        return self.resources[logical_id]["Type"]

    def resource_properties(self, logical_id: str) -> dict[str, Any]:
        """The resource's Properties, with the SAM Globals of its type merged in."""
        resource = self.resources[logical_id]
        properties = resource.get("Properties") or {}
        for section, resource_type in GLOBALS_SECTIONS.items():
            if resource["Type"] == resource_type:
                properties = merge_globals(self.document.get("Globals", {}).get(section, {}), properties)
        return properties

    def depends_on(self, logical_id: str) -> list[str]:
        depends_on = self.resources[logical_id].get("DependsOn", [])
        return [depends_on] if isinstance(depends_on, str) else list(depends_on)

    def parameter_values(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults plus given values, validated like CloudFormation validates them at deploy."""
        unknown = set(given) - set(self.parameters)
        if unknown:
            raise TemplateError(f"parameters not declared by {self.path.name}: {sorted(unknown)}")
        values: dict[str, Any] = {}
        for name, declaration in self.parameters.items():
            if name in given:
                raw = given[name]
            elif "Default" in declaration:
                raw = declaration["Default"]
            else:
                raise TemplateError(f"parameter {name} has no default and no value was given")
            text = to_cfn_string(raw)
            _validate_parameter(name, declaration, text)
            parameter_type = declaration.get("Type", "String")
            if parameter_type == "CommaDelimitedList" or parameter_type.startswith("List<"):
                values[name] = [item.strip() for item in text.split(",")] if text else []
            else:
                # Even Number parameters are strings once referenced (CloudFormation documents this).
                values[name] = text
        return values


def _validate_parameter(name: str, declaration: Mapping[str, Any], text: str) -> None:
    problems = []
    allowed_values = declaration.get("AllowedValues")
    if allowed_values is not None and text not in [to_cfn_string(value) for value in allowed_values]:
        problems.append(f"must be one of {allowed_values}")
    pattern = declaration.get("AllowedPattern")
    if pattern is not None and re.fullmatch(pattern, text) is None:
        problems.append(f"must match {pattern}")
    if "MinLength" in declaration and len(text) < int(declaration["MinLength"]):
        problems.append(f"must be at least {declaration['MinLength']} characters")
    if "MaxLength" in declaration and len(text) > int(declaration["MaxLength"]):
        problems.append(f"must be at most {declaration['MaxLength']} characters")
    if declaration.get("Type") == "Number":
        try:
            number = float(text)
        except ValueError:
            problems.append("must be a number")
        else:
            if "MinValue" in declaration and number < float(declaration["MinValue"]):
                problems.append(f"must be >= {declaration['MinValue']}")
            if "MaxValue" in declaration and number > float(declaration["MaxValue"]):
                problems.append(f"must be <= {declaration['MaxValue']}")
    if problems:
        raise TemplateError(f"parameter {name}={text!r}: {'; '.join(problems)}")


def to_cfn_string(value: Any) -> str:
    """How CloudFormation renders a scalar where a string is expected (booleans are lower case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise TemplateError(f"expected a scalar, got {value!r}")


# --- Intrinsic functions ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PseudoParameters:
    stack_name: str
    account_id: str
    region: str
    partition: str = "aws"
    url_suffix: str = "amazonaws.com"

    def as_refs(self) -> dict[str, Any]:
        return {
            "AWS::StackName": self.stack_name,
            "AWS::AccountId": self.account_id,
            "AWS::Region": self.region,
            "AWS::Partition": self.partition,
            "AWS::URLSuffix": self.url_suffix,
            "AWS::StackId": (
                f"arn:{self.partition}:cloudformation:{self.region}:{self.account_id}:stack/{self.stack_name}/local"
            ),
            "AWS::NotificationARNs": [],
            "AWS::NoValue": NO_VALUE,
        }


ResourceRef = Callable[[str], Any]
ResourceAttribute = Callable[[str, str], Any]

_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")

_INTRINSIC_NAMES = (
    "Fn::Base64",
    "Fn::Cidr",
    "Fn::FindInMap",
    "Fn::GetAtt",
    "Fn::GetAZs",
    "Fn::ImportValue",
    "Fn::Join",
    "Fn::Select",
    "Fn::Split",
    "Fn::Sub",
    "Fn::Transform",
    "Fn::If",
    "Fn::Equals",
    "Fn::Not",
    "Fn::And",
    "Fn::Or",
)


class Resolver:
    """Evaluates intrinsic functions against parameter values, conditions and the resources created so far."""

    def __init__(
        self,
        template: Template,
        parameter_values: Mapping[str, Any],
        pseudo: PseudoParameters,
        resource_ref: ResourceRef,
        resource_attribute: ResourceAttribute,
    ) -> None:
        self.template = template
        self._refs = {**pseudo.as_refs(), **parameter_values}
        self._resource_ref = resource_ref
        self._resource_attribute = resource_attribute
        self._conditions: dict[str, bool] = {}
        for name in template.conditions:
            self.condition(name)

    # Conditions

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            if name not in self.template.conditions:
                raise TemplateError(f"unknown condition {name}")
            self._conditions[name] = self._evaluate_condition(self.template.conditions[name])
        return self._conditions[name]

    def _evaluate_condition(self, expression: Any) -> bool:
        if isinstance(expression, dict) and set(expression) == {"Condition"}:
            return self.condition(expression["Condition"])
        value = self.resolve(expression)
        if not isinstance(value, bool):
            raise TemplateError(f"a condition must evaluate to true or false, got {value!r}")
        return value

    def is_included(self, logical_id: str) -> bool:
        condition = self.template.resources[logical_id].get("Condition")
        return condition is None or self.condition(condition)

    def is_output_included(self, name: str) -> bool:
        condition = self.template.outputs[name].get("Condition")
        return condition is None or self.condition(condition)

    # Values

    def resolve(self, value: Any) -> Any:
        """The value with every intrinsic function evaluated and `AWS::NoValue` removed."""
        if isinstance(value, list):
            items = [self.resolve(item) for item in value]
            return [item for item in items if item is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if _is_intrinsic(value):
            name, argument = next(iter(value.items()))
            return self._evaluate(name, argument)
        resolved = {key: self.resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not NO_VALUE}

    def _evaluate(self, name: str, argument: Any) -> Any:
        match name:
            case "Ref":
                return self.ref(self.resolve(argument))
            case "Fn::GetAtt":
                logical_id, attribute = self._get_att_target(argument)
                return self._resource_attribute(logical_id, attribute)
            case "Fn::Sub":
                return self._sub(argument)
            case "Fn::If":
                condition_name, if_true, if_false = self._arguments(name, argument, 3)
                return self.resolve(if_true if self.condition(condition_name) else if_false)
            case "Fn::Equals":
                left, right = (self._comparable(item) for item in self._arguments(name, argument, 2))
                return left == right
            case "Fn::Not":
                (expression,) = self._arguments(name, argument, 1)
                return not self._evaluate_condition(expression)
            case "Fn::And":
                return all(self._evaluate_condition(item) for item in self._arguments(name, argument))
            case "Fn::Or":
                return any(self._evaluate_condition(item) for item in self._arguments(name, argument))
            case "Fn::Join":
                delimiter, items = self._arguments(name, argument, 2)
                return self.resolve(delimiter).join(to_cfn_string(item) for item in self._list(items))
            case "Fn::Select":
                index, items = self._arguments(name, argument, 2)
                items = self._list(items)
                position = int(self.resolve(index))
                if not 0 <= position < len(items):
                    raise TemplateError(f"Fn::Select index {position} is outside a list of {len(items)}")
                return items[position]
            case "Fn::Split":
                delimiter, source = self._arguments(name, argument, 2)
                return to_cfn_string(self.resolve(source)).split(self.resolve(delimiter))
            case "Fn::FindInMap":
                map_name, top_key, second_key = (
                    self.resolve(item) for item in self._arguments(name, argument, 3)
                )
                try:
                    return self.template.mappings[map_name][top_key][second_key]
                except KeyError as missing:
                    raise TemplateError(
                        f"Fn::FindInMap {map_name}/{top_key}/{second_key}: no {missing}"
                    ) from None
            case "Fn::Base64":
                return base64.b64encode(to_cfn_string(self.resolve(argument)).encode()).decode()
            case "Fn::GetAZs":
                region = self.resolve(argument) or self._refs["AWS::Region"]
                return [f"{region}{zone}" for zone in "abc"]
            case _:
                raise TemplateError(f"{name} is not supported by the embedded AWS")

    def ref(self, name: str) -> Any:
        if name in self._refs:
            return self._refs[name]
        if name in self.template.resources:
            if not self.is_included(name):
                raise TemplateError(f"Ref {name}: the resource's condition is false, so it does not exist")
            return self._resource_ref(name)
        raise TemplateError(f"Ref {name}: no such parameter, pseudo parameter or resource")

    def _get_att_target(self, argument: Any) -> tuple[str, str]:
        parts = argument.split(".", 1) if isinstance(argument, str) else argument
        if len(parts) != 2:
            raise TemplateError(f"Fn::GetAtt needs [resource, attribute], got {argument!r}")
        logical_id, attribute = parts[0], self.resolve(parts[1])
        if (owner := generated_role_owner(self.template, logical_id)) is not None:
            if not self.is_included(owner):
                raise TemplateError(f"Fn::GetAtt {logical_id}: {owner}'s condition is false")
            return logical_id, attribute
        if logical_id not in self.template.resources:
            raise TemplateError(f"Fn::GetAtt {logical_id}.{attribute}: no such resource")
        if not self.is_included(logical_id):
            raise TemplateError(f"Fn::GetAtt {logical_id}: the resource's condition is false")
        return logical_id, attribute

    def _sub(self, argument: Any) -> str:
        if isinstance(argument, list):
            text, variables = self._arguments("Fn::Sub", argument, 2)
            variables = {key: self.resolve(value) for key, value in variables.items()}
        else:
            text, variables = argument, {}

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"  # ${!Literal} escapes the substitution
            if name in variables:
                return to_cfn_string(variables[name])
            if "." in name and name not in self._refs:
                logical_id, attribute = self._get_att_target(name)
                return to_cfn_string(self._resource_attribute(logical_id, attribute))
            return to_cfn_string(self.ref(name))

        return _SUB_VARIABLE.sub(substitute, text)

    def _arguments(self, name: str, argument: Any, count: int | None = None) -> list[Any]:
        if not isinstance(argument, list) or (count is not None and len(argument) != count):
            expected = f"a list of {count}" if count is not None else "a list"
            raise TemplateError(f"{name} expects {expected}, got {argument!r}")
        return argument

    def _list(self, value: Any) -> list[Any]:
        resolved = self.resolve(value)
        if not isinstance(resolved, list):
            raise TemplateError(f"expected a list, got {resolved!r}")
        return resolved

    def _comparable(self, value: Any) -> Any:
        resolved = self.resolve(value)
        return to_cfn_string(resolved) if isinstance(resolved, (str, int, float, bool)) else resolved

    # Dependencies

    def dependencies(self, value: Any) -> set[str]:
        """Logical ids of the resources a value refers to (only the branch a Fn::If takes counts)."""
        found: set[str] = set()
        self._collect_dependencies(value, found)
        return found

    def _collect_dependencies(self, value: Any, found: set[str]) -> None:
        if isinstance(value, list):
            for item in value:
                self._collect_dependencies(item, found)
            return
        if not isinstance(value, dict):
            return
        if not _is_intrinsic(value):
            for item in value.values():
                self._collect_dependencies(item, found)
            return
        name, argument = next(iter(value.items()))
        match name:
            case "Ref" if isinstance(argument, str):
                self._add_resource(argument, found)
            case "Fn::GetAtt":
                self._add_resource(self._get_att_target(argument)[0], found)
            case "Fn::Sub":
                text, variables = argument if isinstance(argument, list) else (argument, {})
                self._collect_dependencies(variables, found)
                for variable in _SUB_VARIABLE.findall(text):
                    if not variable.startswith("!") and variable not in variables:
                        self._add_resource(variable.split(".", 1)[0], found)
            case "Fn::If":
                condition_name, if_true, if_false = self._arguments(name, argument, 3)
                self._collect_dependencies(if_true if self.condition(condition_name) else if_false, found)
            case _:
                self._collect_dependencies(argument, found)

    def _add_resource(self, name: str, found: set[str]) -> None:
        if name in self.template.resources:
            found.add(name)
        # A role SAM generates (`<Function>Role`) is no dependency: it is made, trust policy only, on first
        # reference, and its policies are put once every resource exists (devtools.embedded_aws.roles). As in
        # CloudFormation, where the role does not wait for its function: a queue policy may name the role of a
        # function that itself needs the bucket the policy must come before.


# SAM's resource types whose generated `<LogicalId>Role` a template may refer to.
ROLE_OWNER_TYPES = frozenset({"AWS::Serverless::Function", "AWS::Serverless::StateMachine"})


def generated_role_owner(template: Template, name: str) -> str | None:
    """The function or state machine whose SAM-generated role is `name` (`<LogicalId>Role`), if any."""
    owner = name.removesuffix("Role")
    if owner != name and template.resources.get(owner, {}).get("Type") in ROLE_OWNER_TYPES:
        return owner
    return None


def creation_order(dependencies: Mapping[str, Iterable[str]]) -> list[str]:
    """Resources after everything they depend on; template order otherwise. Raises on a cycle."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(logical_id: str, path: list[str]) -> None:
        if state.get(logical_id) == "done":
            return
        if state.get(logical_id) == "visiting":
            cycle = [*path[path.index(logical_id) :], logical_id]
            raise TemplateError(f"circular dependency: {' -> '.join(cycle)}")
        state[logical_id] = "visiting"
        for dependency in dependencies[logical_id]:
            if dependency not in dependencies:
                raise TemplateError(f"{logical_id} depends on {dependency}, which is not created")
            visit(dependency, [*path, logical_id])
        state[logical_id] = "done"
        order.append(logical_id)

    for logical_id in dependencies:
        visit(logical_id, [])
    return order
