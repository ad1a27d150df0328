"""CloudFormation templates as data: load our YAML, and cut it down for a target that lacks services.

`load_template` reads the short intrinsic forms (``!Ref``, ``!Sub``, ...)
into their long JSON forms, so a template is a plain dict that we can send
as JSON and inspect in tests.

`specialise` and `without_types` exist for moto, whose CloudFormation
models only some resource types: unknown types are skipped with a warning,
and a reference to one fails the whole stack. So for such a target the
deploy resolves the template's conditions with the parameters it will pass,
removes the resource types the target cannot create, drops the outputs
that needed them, and reports both. Nothing is replaced by an imitation.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

INFRA_DIR = Path(__file__).resolve().parent.parent / "infra"

_NO_VALUE = object()


class _CfnLoader(yaml.SafeLoader):  # type: ignore[misc]
    """SafeLoader that knows CloudFormation's short intrinsic function tags."""


def _intrinsic(name: str) -> Any:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        value: Any
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
            if name == "Fn::GetAtt":
                value = str(value).split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {name: value}

    return construct


for _tag in (
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
    "And",
    "Equals",
    "If",
    "Not",
    "Or",
):
    _CfnLoader.add_constructor(f"!{_tag}", _intrinsic(f"Fn::{_tag}"))
_CfnLoader.add_constructor("!Ref", _intrinsic("Ref"))
_CfnLoader.add_constructor("!Condition", _intrinsic("Condition"))


def load_template(path: Path) -> dict[str, Any]:
    """The template at `path` as a dict with long-form intrinsic functions."""
    loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=_CfnLoader)
    if not isinstance(loaded, dict) or "Resources" not in loaded:
        raise ValueError(f"{path} is not a CloudFormation template")
    return loaded


def specialise(template: Mapping[str, Any], parameters: Mapping[str, str]) -> dict[str, Any]:
    """The template with its conditions resolved for `parameters` (and defaults).

    Resources and outputs whose condition is false are removed, and every
    ``Fn::If`` is replaced by the branch taken. Handles the condition
    functions our templates use: Equals (of Refs to parameters and
    literals), Not, And, Or, Condition.
    """
    values = {
        name: str(parameters.get(name, spec.get("Default", "")))
        for name, spec in template.get("Parameters", {}).items()
    }
    raw_conditions: Mapping[str, Any] = template.get("Conditions", {})
    resolved: dict[str, bool] = {}

    def condition(name: str) -> bool:
        if name not in resolved:
            resolved[name] = evaluate(raw_conditions[name])
        return resolved[name]

    def evaluate(expression: Any) -> bool:
        if isinstance(expression, dict) and len(expression) == 1:
            (function, argument), *_ = expression.items()
            if function == "Fn::Equals":
                left, right = (operand(item) for item in argument)
                return left == right
            if function == "Fn::Not":
                return not evaluate(argument[0])
            if function == "Fn::And":
                return all(evaluate(item) for item in argument)
            if function == "Fn::Or":
                return any(evaluate(item) for item in argument)
            if function == "Condition":
                return condition(argument)
        raise ValueError(f"cannot evaluate condition {expression!r}")

    def operand(value: Any) -> str:
        if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in values:
            return values[value["Ref"]]
        if isinstance(value, str | int | float | bool):
            return str(value).lower() if isinstance(value, bool) else str(value)
        raise ValueError(f"cannot evaluate condition operand {value!r}")

    def resolve(value: Any) -> Any:
        if isinstance(value, dict):
            if set(value) == {"Fn::If"}:
                name, when_true, when_false = value["Fn::If"]
                return resolve(when_true if condition(name) else when_false)
            if value == {"Ref": "AWS::NoValue"}:
                return _NO_VALUE
            out = {key: resolve(item) for key, item in value.items()}
            return {key: item for key, item in out.items() if item is not _NO_VALUE}
        if isinstance(value, list):
            return [item for item in (resolve(element) for element in value) if item is not _NO_VALUE]
        return value

    result = copy.deepcopy(dict(template))
    for section in ("Resources", "Outputs"):
        kept = {}
        for logical_id, body in result.get(section, {}).items():
            if "Condition" in body and not condition(body["Condition"]):
                continue
            body = {key: item for key, item in body.items() if key != "Condition"}
            kept[logical_id] = resolve(body)
        result[section] = kept
    result.pop("Conditions", None)
    return result


@dataclass(frozen=True)
class Reduced:
    """A template without some resource types, and what was taken out."""

    template: dict[str, Any]
    removed_resources: dict[str, str]  # logical id -> type
    removed_outputs: list[str]


def without_types(template: Mapping[str, Any], types: frozenset[str]) -> Reduced:
    """`template` (already specialised) minus every resource whose type is in `types`.

    Outputs that refer to a removed resource are removed too. A kept
    resource that refers to a removed one is an error: that resource could
    not be created faithfully. ``DependsOn`` on a removed resource is only
    ordering, so it is dropped.
    """
    result = copy.deepcopy(dict(template))
    resources: dict[str, Any] = result["Resources"]
    removed = {name: body["Type"] for name, body in resources.items() if body["Type"] in types}
    for name in removed:
        del resources[name]
    for name, body in resources.items():
        depends = body.get("DependsOn")
        if depends is not None:
            kept = [
                item for item in ([depends] if isinstance(depends, str) else depends) if item not in removed
            ]
            if kept:
                body["DependsOn"] = kept
            else:
                del body["DependsOn"]
        needed = references(body.get("Properties", {})) & set(removed)
        if needed:
            raise ValueError(f"{name} refers to {sorted(needed)}, which this target cannot create")
    outputs: dict[str, Any] = result.get("Outputs", {})
    dropped = [name for name, body in outputs.items() if references(body) & set(removed)]
    for name in dropped:
        del outputs[name]
    return Reduced(template=result, removed_resources=removed, removed_outputs=dropped)


def references(value: Any) -> set[str]:
    """Logical ids `value` refers to through Ref, Fn::GetAtt or Fn::Sub."""
    return set(_references(value))


def _references(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "Ref" and isinstance(item, str):
                yield item
            elif key == "Fn::GetAtt":
                yield item[0] if isinstance(item, list) else str(item).split(".", 1)[0]
            elif key == "Fn::Sub":
                text = item[0] if isinstance(item, list) else item
                for part in str(text).split("${")[1:]:
                    name = part.split("}", 1)[0].split(".", 1)[0]
                    if not name.startswith("AWS::") and not name.startswith("!"):
                        yield name
                if isinstance(item, list):
                    yield from _references(item[1])
            else:
                yield from _references(item)
    elif isinstance(value, list):
        for item in value:
            yield from _references(item)


def rename_resource(template: Mapping[str, Any], old: str, new: str) -> dict[str, Any]:
    """`template` with resource `old` under the logical id `new`, and every reference to it too.

    References are Ref, Fn::GetAtt, ``${old}``/``${old.Attr}`` in Fn::Sub, and
    DependsOn. A template without `old` (e.g. its condition was false) is
    returned unchanged.
    """
    result = copy.deepcopy(dict(template))
    resources: dict[str, Any] = result["Resources"]
    if old not in resources:
        return result
    if new in resources:
        raise ValueError(f"the template already has a resource {new}")
    result["Resources"] = {(new if name == old else name): body for name, body in resources.items()}

    def rename(value: Any, key: str | None = None) -> Any:
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for item_key, item in value.items():
                if item_key == "Ref" and item == old:
                    out[item_key] = new
                elif item_key == "Fn::GetAtt":
                    parts = item if isinstance(item, list) else str(item).split(".", 1)
                    out[item_key] = [new if parts[0] == old else parts[0], *parts[1:]]
                elif item_key == "Fn::Sub":
                    out[item_key] = _rename_in_sub(item, old, new, rename)
                else:
                    out[item_key] = rename(item, item_key)
            return out
        if isinstance(value, list):
            return [rename(item, key) for item in value]
        if key == "DependsOn" and value == old:
            return new
        return value

    for section in ("Resources", "Outputs"):
        result[section] = {name: rename(body) for name, body in result.get(section, {}).items()}
    return result


def _rename_in_sub(item: Any, old: str, new: str, rename: Any) -> Any:
    def text(value: str) -> str:
        return value.replace("${" + old + "}", "${" + new + "}").replace("${" + old + ".", "${" + new + ".")

    if isinstance(item, list):
        return [text(item[0]), rename(item[1])]
    return text(str(item))
