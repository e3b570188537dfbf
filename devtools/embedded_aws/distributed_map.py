"""Where moto 5.2.5's Distributed Map differs from AWS's; patched while a stack is deployed (see moto_fixes).

- Its S3 `listObjectsV2` ItemReader makes one ListObjectsV2 call: a prefix with more than 1,000 objects gives
  only the first 1,000, and an empty prefix fails with KeyError ('Contents'). AWS lists every page, and gives
  each object as `{"Etag", "Key", "LastModified" (epoch seconds), "Size", "StorageClass"}`.
- Its ASL parser does not know `ItemBatcher` (the definition is refused). AWS then gives each child
  `{"Items": [...], "BatchInput": {...}}`, at most `MaxItemsPerBatch` items and `MaxInputBytesPerBatch` bytes.
  The fix takes ItemBatcher out of the definition before moto parses it and batches the items the ItemReader
  gave before moto starts the children. Supported as the stack uses it: on a top-level Map state, with
  `MaxItemsPerBatch` and/or `MaxInputBytesPerBatch` as numbers, a `BatchInput` of constants and `$.` paths into
  the Map state's input, and no ItemSelector; anything else is refused by name rather than run differently.
- A child that fails leaves `null` among moto's results and the Map succeeds. AWS fails the Map run
  (`States.ExceedToleratedFailureThreshold`) once the failures pass ToleratedFailureCount and
  ToleratedFailurePercentage (both 0 unless set: any failure). With both set, AWS fails on passing either;
  here it takes passing both (moto cannot tell a threshold left unset from one set to 0).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from unittest import mock

from moto.stepfunctions.parser.api import HistoryEventType, MapRunFailedEventDetails
from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
    FailureEvent,
    FailureEventException,
)
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
    StatesErrorNameType,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_map.item_reader.eval.resource_eval_s3 import (
    ResourceEvalS3,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.distributed_iteration_component import (
    DistributedIterationComponent,
)
from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails
from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

# AWS's own limit on one batch's input (the whole child input).
MAX_BATCH_INPUT_BYTES = 262_144
LIST_PAGE_SIZE = 1000


class UnsupportedItemBatcherError(ValueError):
    pass


@dataclass(frozen=True)
class ItemBatcher:
    max_items: int | None
    max_bytes: int
    batch_input: dict[str, Any]

    @classmethod
    def from_definition(cls, state_name: str, spec: dict[str, Any]) -> ItemBatcher:
        known = {"MaxItemsPerBatch", "MaxInputBytesPerBatch", "BatchInput"}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise UnsupportedItemBatcherError(
                f"Map state {state_name}: ItemBatcher fields {unknown} are not supported by the embedded AWS"
            )
        max_items = spec.get("MaxItemsPerBatch")
        max_bytes = spec.get("MaxInputBytesPerBatch", MAX_BATCH_INPUT_BYTES)
        if (max_items is not None and not isinstance(max_items, int)) or not isinstance(max_bytes, int):
            raise UnsupportedItemBatcherError(
                f"Map state {state_name}: ItemBatcher needs MaxItemsPerBatch / MaxInputBytesPerBatch as numbers"
            )
        return cls(max_items, min(max_bytes, MAX_BATCH_INPUT_BYTES), spec.get("BatchInput") or {})

    def batch_input_for(self, state_input: Any) -> dict[str, Any]:
        return _evaluate(self.batch_input, state_input)

    def batches(self, items: list[Any], state_input: Any) -> list[dict[str, Any]]:
        batch_input = self.batch_input_for(state_input)
        overhead = len(json.dumps({"Items": [], "BatchInput": batch_input}))
        batches: list[dict[str, Any]] = []
        current: list[Any] = []
        size = overhead
        for item in items:
            item_size = len(json.dumps(item)) + 1
            full = self.max_items is not None and len(current) >= self.max_items
            if current and (full or size + item_size > self.max_bytes):
                batches.append({"Items": current, "BatchInput": batch_input})
                current, size = [], overhead
            current.append(item)
            size += item_size
        if current:
            batches.append({"Items": current, "BatchInput": batch_input})
        return batches


def _evaluate(template: Any, state_input: Any) -> Any:
    """A payload template as Parameters reads one: `"name.$": "$.path"` from the input, the rest constants."""
    if isinstance(template, list):
        return [_evaluate(value, state_input) for value in template]
    if not isinstance(template, dict):
        return template
    result = {}
    for name, value in template.items():
        if name.endswith(".$"):
            result[name[:-2]] = _path(value, state_input)
        else:
            result[name] = _evaluate(value, state_input)
    return result


def _path(path: Any, state_input: Any) -> Any:
    if not isinstance(path, str) or not (path == "$" or path.startswith("$.")):
        raise UnsupportedItemBatcherError(
            f"BatchInput path {path!r}: only $ and $.field paths are supported by the embedded AWS"
        )
    value = state_input
    for part in [p for p in path[2:].split(".") if p]:
        if not isinstance(value, dict) or part not in value:
            raise UnsupportedItemBatcherError(f"BatchInput path {path}: the Map state's input has no {part}")
        value = value[part]
    return value


# --- ItemBatcher: out of the definition before moto parses it, applied to the ItemReader's items ---------------

_original_parse = AmazonStateLanguageParser.parse
_original_map_run = DistributedIterationComponent._map_run


def _take_item_batchers(document: dict[str, Any]) -> dict[str, ItemBatcher]:
    batchers = {}
    for name, state in (document.get("States") or {}).items():
        if not isinstance(state, dict) or state.get("Type") != "Map":
            continue
        processor = state.get("ItemProcessor") or state.get("Iterator") or {}
        if _has_item_batcher(processor):
            raise UnsupportedItemBatcherError(
                f"Map state {name}: an ItemBatcher inside a Map's processor is not supported by the embedded AWS"
            )
        if "ItemBatcher" in state:
            if "ItemSelector" in state:
                raise UnsupportedItemBatcherError(
                    f"Map state {name}: ItemSelector with ItemBatcher is not supported by the embedded AWS"
                )
            batchers[name] = ItemBatcher.from_definition(name, state.pop("ItemBatcher"))
    return batchers


def _has_item_batcher(value: Any) -> bool:
    if isinstance(value, dict):
        return "ItemBatcher" in value or any(_has_item_batcher(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_item_batcher(v) for v in value)
    return False


def _parse_with_item_batchers(definition: str) -> Any:
    try:
        document = json.loads(definition)
    except ValueError:
        return _original_parse(definition)  # moto's own error for a definition that is not JSON
    if not isinstance(document, dict):
        return _original_parse(definition)
    batchers = _take_item_batchers(document)
    if not batchers:
        return _original_parse(definition)
    program, context = _original_parse(json.dumps(document))
    for name, batcher in batchers.items():
        program.states.states[name].iteration_component.item_batcher = batcher
    return program, context


def _map_run_in_batches(component: DistributedIterationComponent, env: Any, eval_input: Any) -> None:
    batcher: ItemBatcher | None = getattr(component, "item_batcher", None)
    if batcher is not None:
        items = env.stack.pop()
        env.stack.append(batcher.batches(items, env.states.get_input()))
    _original_map_run(component, env, eval_input)
    _fail_past_tolerated_failures(env, eval_input)


def _fail_past_tolerated_failures(env: Any, eval_input: Any) -> None:
    items = eval_input.map_run_record.item_counter
    failed = items.failed.get() + items.timed_out.get() + items.aborted.get()
    total = max(items.total.get(), 1)
    if (
        failed <= eval_input.tolerated_failure_count
        or failed * 100 <= eval_input.tolerated_failure_percentage * total
    ):
        return
    error = StatesErrorName(typ=StatesErrorNameType.StatesExceedToleratedFailureThreshold)
    cause = f"The specified tolerated failure threshold was exceeded: {failed} of {items.total.get()} items failed"
    raise FailureEventException(
        failure_event=FailureEvent(
            env=env,
            error_name=error,
            event_type=HistoryEventType.MapRunFailed,
            event_details=EventDetails(
                mapRunFailedEventDetails=MapRunFailedEventDetails(error=error.error_name, cause=cause)
            ),
        )
    )


# --- listObjectsV2: every page, in AWS's item shape ----------------------------------------------------------


def listed_item(entry: dict[str, Any]) -> dict[str, Any]:
    """One object as Step Functions' ItemReader gives it (not as ListObjectsV2 names its fields)."""
    return {
        "Etag": entry["ETag"],
        "Key": entry["Key"],
        "LastModified": int(entry["LastModified"].timestamp()),
        "Size": entry["Size"],
        "StorageClass": entry.get("StorageClass", "STANDARD"),
    }


def _list_every_object(env: Any, resource_runtime_part: Any, state_credentials: Any) -> None:
    s3 = ResourceEvalS3._get_s3_client(
        resource_runtime_part=resource_runtime_part, state_credentials=state_credentials
    )
    parameters = dict(env.stack.pop())
    items: list[dict[str, Any]] = []
    while True:
        page = s3.list_objects_v2(**parameters, MaxKeys=LIST_PAGE_SIZE)
        items.extend(listed_item(entry) for entry in page.get("Contents", []))
        if not page.get("IsTruncated"):
            break
        parameters["ContinuationToken"] = page["NextContinuationToken"]
    env.stack.append(items)


def distributed_map_fixes() -> list[Any]:
    """Patchers (not started)."""
    return [
        mock.patch.object(AmazonStateLanguageParser, "parse", staticmethod(_parse_with_item_batchers)),
        mock.patch.object(DistributedIterationComponent, "_map_run", _map_run_in_batches),
        mock.patch.object(ResourceEvalS3, "_handle_list_objects_v2", staticmethod(_list_every_object)),
    ]
