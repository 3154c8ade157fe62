"""Load the canonical schemas in ``schemas/*.schema.json`` into Arrow schemas.

The JSON files at the repository root are the single source of truth: the code validates against
them, and docs point to them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pyarrow as pa

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"

_TYPES = {
    "string": pa.string(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "map<string,string>": pa.map_(pa.string(), pa.string()),
    "timestamp[us, UTC]": pa.timestamp("us", tz="UTC"),
}


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: pa.DataType
    nullable: bool
    required: bool
    unique: bool
    description: str


@dataclass(frozen=True)
class SchemaSpec:
    name: str
    version: int
    fields: tuple[FieldSpec, ...]

    @property
    def arrow(self) -> pa.Schema:
        return pa.schema([pa.field(f.name, f.type, nullable=f.nullable) for f in self.fields])

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def field(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)


@lru_cache(maxsize=None)
def load_schema(name: str) -> SchemaSpec:
    """Load ``schemas/<name>.schema.json``. Raises FileNotFoundError / KeyError on a broken schema file."""
    doc = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))
    fields = tuple(
        FieldSpec(
            name=f["name"],
            type=_TYPES[f["type"]],
            nullable=bool(f.get("nullable", True)),
            required=bool(f.get("required", not f.get("nullable", True))),
            unique=bool(f.get("unique", False)),
            description=f.get("description", ""),
        )
        for f in doc["fields"]
    )
    return SchemaSpec(name=doc["name"], version=int(doc["version"]), fields=fields)
