"""Plain data schemas: one definition of a JSON shape that both checks a request and writes its
JSON Schema (2020-12, the dialect of OpenAPI 3.1).

Why our own and not a library: every function imports its schemas on a cold start, and the
shapes here are small (objects of scalars, arrays, enums). pydantic 2.14 takes about 150 ms to
import and build two models on these machines (a fifth of a function's cold-start floor of about
0.8 s), and a JSON Schema validator (jsonschema) would give errors we would have to translate
back into our stable codes. These few classes give the exact `param` path and a message a person
can act on, and all of shared/schemas.py imports in about 3 ms.

A schema's `check(value, path)` returns the value (query strings parsed into their type) or
raises `Invalid(kind, path, message)`; `shared.http` turns `kind` into the API's error code
(`missing_field`, `unknown_field`, `invalid_value`, or `invalid_query` for the query string).
`json()` writes its JSON Schema; `Object(name=...)` schemas become `#/components/schemas/<name>`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

Kind = Literal["missing", "unknown", "invalid"]


class Invalid(Exception):
    """A value does not fit its schema: what is wrong (`kind`) and where (`path`, dotted)."""

    def __init__(self, kind: Kind, path: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.path = path
        self.message = message


def _name(path: str) -> str:
    return f"'{path}'" if path else "The body"


class Schema:
    """A JSON shape. Subclasses implement `_check` and `_json`; their options are class
    attributes with their defaults, set per instance by keyword (String(max_length=10))."""

    description: str | None = None
    example: Any = None
    nullable: bool = False

    def __init__(self, **options: Any) -> None:
        for name, value in options.items():
            if not hasattr(type(self), name):
                raise TypeError(f"{type(self).__name__} has no option {name!r}")
            setattr(self, name, value)

    def check(self, value: Any, path: str = "") -> Any:
        if value is None:
            if self.nullable:
                return None
            raise Invalid("invalid", path, f"{_name(path)} must not be null.")
        return self._check(value, path)

    def _check(self, value: Any, path: str) -> Any:
        raise NotImplementedError

    def nullable_copy(self) -> Schema:
        """The same schema, also taking null."""
        twin = copy.copy(self)
        twin.nullable = True
        return twin

    def parse(self, raw: str, path: str) -> Any:
        """A query-string value: parsed from text, then checked."""
        return self.check(raw, path)

    def json(self, components: dict[str, Any]) -> dict[str, Any]:
        out = self._json(components)
        if self.nullable:
            if "$ref" in out or "anyOf" in out or "const" in out:
                out = {"anyOf": [out, {"type": "null"}]}
            else:
                out["type"] = [out["type"], "null"]
                if "enum" in out:
                    out["enum"] = [*out["enum"], None]
        if self.description:
            out.setdefault("description", self.description)
        if self.example is not None:
            out.setdefault("examples", [self.example])
        return out

    def _json(self, components: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


class String(Schema):
    min_length: int | None = None
    max_length: int | None = None
    # a full match, as JSON Schema's pattern with ^...$
    pattern: str | None = None
    enum: Sequence[str] | None = None
    # documentation only ("date-time", "uri")
    format: str | None = None
    # JSON Schema's pattern cannot say "no lone surrogates" or "not blank": strip and refuse
    # blank when this is set.
    not_blank: bool = False

    def _check(self, value: Any, path: str) -> Any:
        if not isinstance(value, str):
            raise Invalid("invalid", path, f"{_name(path)} must be a string.")
        if self.enum is not None and value not in self.enum:
            raise Invalid("invalid", path, f"{_name(path)} must be one of: {', '.join(self.enum)}.")
        if self.not_blank and not value.strip():
            raise Invalid("invalid", path, f"{_name(path)} must not be blank.")
        if self.min_length is not None and len(value) < self.min_length:
            raise Invalid(
                "invalid", path, f"{_name(path)} must have at least {self.min_length} characters."
            )
        if self.max_length is not None and len(value) > self.max_length:
            raise Invalid(
                "invalid", path, f"{_name(path)} must have at most {self.max_length} characters."
            )
        if self.pattern is not None and re.fullmatch(self.pattern, value) is None:
            raise Invalid("invalid", path, f"{_name(path)} must match {self.pattern}.")
        return value

    def _json(self, components: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string"}
        if self.enum is not None:
            out["enum"] = list(self.enum)
        if self.min_length is not None:
            out["minLength"] = self.min_length
        if self.not_blank:
            out["minLength"] = max(1, self.min_length or 0)
            out.setdefault("pattern", r"\S")
        if self.max_length is not None:
            out["maxLength"] = self.max_length
        if self.pattern is not None:
            out["pattern"] = f"^(?:{self.pattern})$"
        if self.format is not None:
            out["format"] = self.format
        return out


class Integer(Schema):
    minimum: int | None = None
    maximum: int | None = None

    def _check(self, value: Any, path: str) -> Any:
        if isinstance(value, float) and value.is_integer():  # JSON Schema: 3.0 is an integer
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid("invalid", path, f"{_name(path)} must be a whole number{self._range()}.")
        if (self.minimum is not None and value < self.minimum) or (
            self.maximum is not None and value > self.maximum
        ):
            raise Invalid("invalid", path, f"{_name(path)} must be a whole number{self._range()}.")
        return value

    def parse(self, raw: str, path: str) -> Any:
        if re.fullmatch(r"-?[0-9]{1,18}", raw) is None:
            raise Invalid("invalid", path, f"{_name(path)} must be a whole number{self._range()}.")
        return self.check(int(raw), path)

    def _range(self) -> str:
        if self.minimum is not None and self.maximum is not None:
            return f" from {self.minimum} to {self.maximum}"
        if self.minimum is not None:
            return f" of at least {self.minimum}"
        if self.maximum is not None:
            return f" of at most {self.maximum}"
        return ""

    def _json(self, components: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "integer"}
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        return out


class Number(Schema):
    minimum: float | None = None
    maximum: float | None = None

    def _check(self, value: Any, path: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Invalid("invalid", path, f"{_name(path)} must be a number.")
        if value != value or value in (float("inf"), float("-inf")):
            raise Invalid("invalid", path, f"{_name(path)} must be a finite number.")
        if (self.minimum is not None and value < self.minimum) or (
            self.maximum is not None and value > self.maximum
        ):
            raise Invalid(
                "invalid",
                path,
                f"{_name(path)} must be a number from {self.minimum} to {self.maximum}.",
            )
        return value

    def _json(self, components: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "number"}
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        return out


class Boolean(Schema):
    def _check(self, value: Any, path: str) -> Any:
        if not isinstance(value, bool):
            raise Invalid("invalid", path, f"{_name(path)} must be true or false.")
        return value

    def parse(self, raw: str, path: str) -> Any:
        if raw.lower() in ("true", "1"):
            return True
        if raw.lower() in ("false", "0", ""):
            return False
        raise Invalid("invalid", path, f"{_name(path)} must be true or false.")

    def _json(self, components: dict[str, Any]) -> dict[str, Any]:
        return {"type": "boolean"}


class Array(Schema):
    min_items: int | None = None
    max_items: int | None = None

    def __init__(self, items: Schema, **options: Any) -> None:
        self.items = items
        super().__init__(**options)

    def _check(self, value: Any, path: str) -> Any:
        if not isinstance(value, list):
            raise Invalid("invalid", path, f"{_name(path)} must be a list.")
        if self.min_items is not None and len(value) < self.min_items:
            raise Invalid(
                "invalid", path, f"{_name(path)} must have at least {self.min_items} item(s)."
            )
        if self.max_items is not None and len(value) > self.max_items:
            raise Invalid(
                "invalid", path, f"{_name(path)} must have at most {self.max_items} items."
            )
        return [self.items.check(v, f"{path}[{i}]") for i, v in enumerate(value)]

    def _json(self, components: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "array", "items": self.items.json(components)}
        if self.min_items is not None:
            out["minItems"] = self.min_items
        if self.max_items is not None:
            out["maxItems"] = self.max_items
        return out


class Const(Schema):
    def __init__(self, value: str | bool, **options: Any) -> None:
        self.value = value
        super().__init__(**options)

    def _check(self, value: Any, path: str) -> Any:
        if value != self.value:
            raise Invalid("invalid", path, f"{_name(path)} must be {self.value!r}.")
        return value

    def _json(self, components: dict[str, Any]) -> dict[str, Any]:
        return {"const": self.value}


class AnyOf(Schema):
    """The first option a value fits; the message names what each option wants."""

    message: str = "does not have an accepted shape"

    def __init__(self, options: tuple[Schema, ...], **settings: Any) -> None:
        self.options = options
        super().__init__(**settings)

    def _check(self, value: Any, path: str) -> Any:
        for option in self.options:
            try:
                return option.check(value, path)
            except Invalid:
                continue
        raise Invalid("invalid", path, f"{_name(path)} {self.message}.")

    def _json(self, components: dict[str, Any]) -> dict[str, Any]:
        return {"anyOf": [o.json(components) for o in self.options]}


class Map(Schema):
    """An object whose keys are data (drawn from `keys` when set), each value one schema."""

    keys: Sequence[str] | None = None
    min_properties: int | None = None

    def __init__(self, values: Schema, **options: Any) -> None:
        self.values = values
        super().__init__(**options)

    def _check(self, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise Invalid("invalid", path, f"{_name(path)} must be an object.")
        if self.min_properties is not None and len(value) < self.min_properties:
            raise Invalid("invalid", path, f"{_name(path)} must not be empty.")
        out = {}
        for key, item in value.items():
            sub = f"{path}.{key}" if path else key
            if self.keys is not None and key not in self.keys:
                raise Invalid(
                    "unknown", sub, f"Unknown key '{key}'; known ones: {', '.join(self.keys)}."
                )
            out[key] = self.values.check(item, sub)
        return out

    def _json(self, components: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "object",
            "additionalProperties": self.values.json(components),
        }
        if self.keys is not None:
            out["propertyNames"] = {"enum": list(self.keys)}
        if self.min_properties is not None:
            out["minProperties"] = self.min_properties
        return out


class Field:
    """One property of an Object: its schema, whether it must be sent, and what to say when
    it is missing (the `hint`, e.g. where to get the value)."""

    def __init__(
        self,
        schema: Schema,
        *,
        required: bool = False,
        hint: str | None = None,
    ) -> None:
        self.schema = schema
        self.required = required
        self.hint = hint


def req(schema: Schema, hint: str | None = None) -> Field:
    return Field(schema, required=True, hint=hint)


def opt(schema: Schema) -> Field:
    return Field(schema)


class Object(Schema):
    """A JSON object with known properties; unknown ones are refused (`unknown_field`), so a
    typo never passes silently. Response objects are described with the same class: every
    property they carry is listed, and listed as required (we always send it, maybe null)."""

    # a component name: referenced as #/components/schemas/<name>
    name: str | None = None
    min_properties: int | None = None
    empty_message: str = "must not be empty"
    # Requests are strict in the spec too (additionalProperties: false); responses are checked
    # strictly by our tests but documented open, so that adding a field breaks no client.
    strict: bool = True

    def __init__(self, fields: Mapping[str, Field], **options: Any) -> None:
        self.fields = fields
        super().__init__(**options)

    def _check(self, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise Invalid("invalid", path, f"{_name(path)} must be a JSON object ({{...}}).")
        for key in value:
            if key not in self.fields:
                sub = f"{path}.{key}" if path else key
                raise Invalid(
                    "unknown",
                    sub,
                    f"Unknown field '{sub}'; the fields are: {', '.join(self.fields)}.",
                )
        if self.min_properties is not None and len(value) < self.min_properties:
            first = next(iter(self.fields))
            raise Invalid(
                "missing",
                f"{path}.{first}" if path else first,
                f"{_name(path)} {self.empty_message}.",
            )
        out = {}
        for key, f in self.fields.items():
            sub = f"{path}.{key}" if path else key
            if key not in value:
                if f.required:
                    raise Invalid(
                        "missing", sub, f"Send '{sub}'" + (f": {f.hint}." if f.hint else ".")
                    )
                continue
            out[key] = f.schema.check(value[key], sub)
        return out

    def _json(self, components: dict[str, Any]) -> dict[str, Any]:
        if self.name is not None and self.name in components:
            return {"$ref": f"#/components/schemas/{self.name}"}
        if self.name is not None:
            components[self.name] = {}  # reserve the name first: an object may contain itself
        out: dict[str, Any] = {
            "type": "object",
            "properties": {k: f.schema.json(components) for k, f in self.fields.items()},
        }
        if self.strict:
            out["additionalProperties"] = False
        required = [k for k, f in self.fields.items() if f.required]
        if required:
            out["required"] = required
        if self.min_properties is not None:
            out["minProperties"] = self.min_properties
        if self.name is None:
            return out
        if self.description:
            out["description"] = self.description
        if self.example is not None:
            out["examples"] = [self.example]
        components[self.name] = out
        return {"$ref": f"#/components/schemas/{self.name}"}

    def json(self, components: dict[str, Any]) -> dict[str, Any]:
        if self.name is None:
            return super().json(components)
        ref = self._json(components)
        return {"anyOf": [ref, {"type": "null"}]} if self.nullable else ref


def response(fields: Mapping[str, Schema], name: str, description: str | None = None) -> Object:
    """A response object: every property always sent (maybe null), so all are required."""
    return Object(
        {k: req(s) for k, s in fields.items()}, name=name, description=description, strict=False
    )


class Free(Schema):
    """Any JSON object (documents we pass through, such as this API's own spec)."""

    def _check(self, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise Invalid("invalid", path, f"{_name(path)} must be a JSON object.")
        return value

    def _json(self, components: dict[str, Any]) -> dict[str, Any]:
        return {"type": "object"}


class Query:
    """The query string of an operation: each parameter optional, parsed from its text; unknown
    parameters are ignored (a client may send more than we read)."""

    def __init__(self, params: Mapping[str, Schema] | None = None) -> None:
        self.params: Mapping[str, Schema] = params or {}

    def check(self, args: Mapping[str, str]) -> dict[str, Any]:
        out = {}
        for name, schema in self.params.items():
            raw = args.get(name)
            if raw is not None:
                out[name] = schema.parse(raw, name)
        return out
