"""Routing rules: which request an upload becomes, chosen by key prefix, suffix or detected kind.

The rules are YAML bundled with the code (routing_rules.yaml), optionally replaced by an SSM parameter.
They are validated when loaded: a bad rule file fails loudly, naming the rule and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from shared.errors import InvalidRequestError
from shared.media import MediaKind
from shared.models import NonEmpty, RequestOptions, WireModel, build_models, error_location

BUNDLED_RULES = Path(__file__).with_name("routing_rules.yaml")


class RuleMatch(WireModel):
    prefix: str | None = None
    suffix: str | None = None
    kind: MediaKind | None = None

    def matches(self, key: str, kind: str) -> bool:
        return (
            (self.prefix is None or key.startswith(self.prefix))
            and (self.suffix is None or key.lower().endswith(self.suffix.lower()))
            and (self.kind is None or kind == self.kind)
        )


class RequestSettings(RequestOptions):
    prompt: NonEmpty | None = None


class Rule(RequestSettings):
    name: NonEmpty
    match: RuleMatch

    @model_validator(mode="after")
    def _matches_something(self) -> Rule:
        if self.match.prefix is None and self.match.suffix is None and self.match.kind is None:
            raise ValueError("match needs at least one of prefix, suffix, kind")
        return self


class DefaultRule(RequestSettings):
    prompts: dict[MediaKind, str] = Field(default_factory=dict)

    def prompt_for(self, kind: str) -> str:
        return self.prompts.get(kind) or self.prompt or "Describe this file."  # type: ignore[call-overload]


class RoutingRules(WireModel):
    default: DefaultRule
    rules: list[Rule] = Field(default_factory=list)

    def choose(self, key: str, kind: str) -> tuple[str, RequestSettings]:
        """The rule's name and settings (the first rule that matches, else the default)."""
        for rule in self.rules:
            if rule.match.matches(key, kind):
                return rule.name, rule
        return "default", self.default

    def prompt_for(self, settings: RequestSettings, kind: str) -> str:
        return settings.prompt or self.default.prompt_for(kind)


def parse_rules(text: str, origin: str) -> RoutingRules:
    import yaml  # only the upload function reads rules; the others need not load PyYAML

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise InvalidRequestError(origin, f"routing rules are not valid YAML: {error}") from None
    try:
        return RoutingRules.model_validate(data)
    except ValidationError as error:
        location, message = error_location(error)
        where = ".".join(str(p) for p in location) or "top level"
        if len(location) >= 2 and location[0] == "rules" and isinstance(location[1], int):
            rules = (data or {}).get("rules") or []
            index = location[1]
            name = rules[index].get("name") if index < len(rules) and isinstance(rules[index], dict) else None
            inside = ".".join(str(p) for p in location[2:])
            where = f"rule {name or index!r}" + (f": {inside}" if inside else "")
        raise InvalidRequestError(origin, f"{where}: {message}") from None


def load_rules(parameter_name: str = "", ssm_client: Any = None) -> RoutingRules:
    if parameter_name:
        value = ssm_client.get_parameter(Name=parameter_name)["Parameter"]["Value"]
        return parse_rules(value, f"SSM parameter {parameter_name}")
    return parse_rules(BUNDLED_RULES.read_text(), str(BUNDLED_RULES.name))


build_models(RoutingRules)
