"""Writes schema/request-message.schema.json from the message model (`python -m devtools.schema`)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from shared.messages import RequestMessage

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schema" / "request-message.schema.json"


def render() -> str:
    schema = RequestMessage.model_json_schema(by_alias=True, mode="validation")
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "request-message", **schema}
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    SCHEMA_PATH.write_text(render())
    print(f"wrote {SCHEMA_PATH}")
