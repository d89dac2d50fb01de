"""The compatibility gate: what in a new OpenAPI document would break a client of the released
one. Inside /v1 changes are additive only (README, "API versions").

Breaking, for a client written against `old`:
- an operation removed;
- a request: a new required field or parameter, a field or parameter removed (the client still
  sends it and would get unknown_field), an enum value removed, a type or bound narrowed;
- a response: a field removed, a type widened (a value the client never saw, e.g. a new null),
  a success status changed.
Adding operations, optional request fields, response fields and error statuses is not.
"""

from __future__ import annotations

from typing import Any

_METHODS = ("get", "put", "post", "delete", "patch")


def breaking_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Every breaking change from `old` to `new`, each a sentence naming where it is."""
    found: list[str] = []
    for path, old_item in old.get("paths", {}).items():
        for method in _METHODS:
            if method not in old_item:
                continue
            where = f"{method.upper()} {path}"
            new_op = new.get("paths", {}).get(path, {}).get(method)
            if new_op is None:
                found.append(f"{where}: the operation was removed")
                continue
            _operation(old, new, old_item[method], new_op, where, found)
    return found


def _operation(
    old: dict[str, Any],
    new: dict[str, Any],
    old_op: dict[str, Any],
    new_op: dict[str, Any],
    where: str,
    found: list[str],
) -> None:
    old_params = {(p["in"], p["name"]): p for p in old_op.get("parameters", [])}
    new_params = {(p["in"], p["name"]): p for p in new_op.get("parameters", [])}
    for key, p in new_params.items():
        if p.get("required") and not old_params.get(key, {}).get("required"):
            found.append(f"{where}: the {key[0]} parameter '{key[1]}' is now required")
    for key, p in old_params.items():
        if key not in new_params:
            found.append(f"{where}: the {key[0]} parameter '{key[1]}' was removed")
        else:
            _schema(
                old,
                new,
                p.get("schema", {}),
                new_params[key].get("schema", {}),
                f"{where}: parameter '{key[1]}'",
                "request",
                found,
            )
    old_body = _body_schema(old_op.get("requestBody"))
    new_body = _body_schema(new_op.get("requestBody"))
    if old_body is None and new_body is not None and new_op["requestBody"].get("required"):
        found.append(f"{where}: a request body is now required")
    if old_body is not None and new_body is not None:
        _schema(old, new, old_body, new_body, f"{where}: request", "request", found)
    for status, old_resp in old_op.get("responses", {}).items():
        if not status.startswith("2"):
            continue
        new_resp = new_op.get("responses", {}).get(status)
        if new_resp is None:
            found.append(f"{where}: the success status {status} is gone")
            continue
        old_s, new_s = _body_schema(old_resp), _body_schema(new_resp)
        if old_s is not None and new_s is None:
            found.append(f"{where}: the {status} response lost its body")
        elif old_s is not None and new_s is not None:
            _schema(old, new, old_s, new_s, f"{where}: response {status}", "response", found)


def _body_schema(holder: dict[str, Any] | None) -> dict[str, Any] | None:
    if not holder:
        return None
    media = holder.get("content", {}).get("application/json")
    return None if media is None else media.get("schema", {})


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    seen = 0
    while "$ref" in schema and seen < 50:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = spec.get("components", {}).get("schemas", {}).get(name, {})
        seen += 1
    return schema


def _types(schema: dict[str, Any]) -> set[str]:
    """The JSON types a schema admits ("any" when it does not say)."""
    if "const" in schema:
        value = schema["const"]
        return {"null" if value is None else type(value).__name__}
    if "anyOf" in schema:
        out: set[str] = set()
        for option in schema["anyOf"]:
            out |= _types(option) if "$ref" not in option else {"object"}
        return out
    t = schema.get("type")
    if t is None:
        return {"any"}
    return {t} if isinstance(t, str) else set(t)


def _options(spec: dict[str, Any], schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The non-null shapes of a schema, resolved (a nullable $ref is an anyOf with null)."""
    schema = _resolve(spec, schema)
    if "anyOf" in schema:
        return [_resolve(spec, o) for o in schema["anyOf"] if o.get("type") != "null"]
    return [schema]


def _schema(
    old: dict[str, Any],
    new: dict[str, Any],
    old_s: dict[str, Any],
    new_s: dict[str, Any],
    where: str,
    direction: str,
    found: list[str],
    depth: int = 0,
) -> None:
    if depth > 12:
        return
    old_s, new_s = _resolve(old, old_s), _resolve(new, new_s)
    old_t, new_t = _types(old_s), _types(new_s)
    if direction == "request" and "any" not in new_t and not old_t <= new_t:
        found.append(f"{where}: the type narrowed from {sorted(old_t)} to {sorted(new_t)}")
        return
    if direction == "response" and "any" not in old_t and not new_t <= old_t:
        found.append(f"{where}: the type widened from {sorted(old_t)} to {sorted(new_t)}")
        return
    old_opts, new_opts = _options(old, old_s), _options(new, new_s)
    if len(old_opts) == 1 and len(new_opts) == 1:
        old_s, new_s = old_opts[0], new_opts[0]
    elif len(old_opts) == len(new_opts):
        for i, (o, n) in enumerate(zip(old_opts, new_opts, strict=True)):
            _schema(old, new, o, n, f"{where} (option {i + 1})", direction, found, depth + 1)
        return
    if direction == "request":
        _request_bounds(old_s, new_s, where, found)
    old_props, new_props = old_s.get("properties", {}), new_s.get("properties", {})
    for name, sub in old_props.items():
        if name not in new_props:
            what = "request field" if direction == "request" else "response field"
            found.append(f"{where}: the {what} '{name}' was removed")
            continue
        _schema(old, new, sub, new_props[name], f"{where}.{name}", direction, found, depth + 1)
    if direction == "request":
        for name in set(new_s.get("required", [])) - set(old_s.get("required", [])):
            found.append(f"{where}: the field '{name}' is now required")
    if "items" in old_s and "items" in new_s:
        _schema(old, new, old_s["items"], new_s["items"], f"{where}[]", direction, found, depth + 1)
    ap_old, ap_new = old_s.get("additionalProperties"), new_s.get("additionalProperties")
    if isinstance(ap_old, dict) and isinstance(ap_new, dict):
        _schema(old, new, ap_old, ap_new, f"{where}.*", direction, found, depth + 1)


def _request_bounds(
    old_s: dict[str, Any], new_s: dict[str, Any], where: str, found: list[str]
) -> None:
    removed = set(old_s.get("enum") or ()) - set(new_s.get("enum") or old_s.get("enum") or ())
    for value in sorted(map(str, removed)):
        found.append(f"{where}: the enum value '{value}' was removed")
    for key, tighter in (
        ("minimum", lambda o, n: n > o),
        ("minLength", lambda o, n: n > o),
        ("minItems", lambda o, n: n > o),
        ("maximum", lambda o, n: n < o),
        ("maxLength", lambda o, n: n < o),
        ("maxItems", lambda o, n: n < o),
    ):
        o, n = old_s.get(key), new_s.get(key)
        if n is not None and (o is None or tighter(o, n)):
            found.append(f"{where}: '{key}' narrowed from {o} to {n}")
    if new_s.get("pattern") not in (None, old_s.get("pattern")):
        found.append(f"{where}: the pattern changed to {new_s['pattern']}")
