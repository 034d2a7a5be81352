"""Reading plan and model files safely: text in, plain JSON values out.

Every file orchkit reads (plans, agent models) goes through ``read_text`` and ``parse``,
and every dict a user hands over goes through ``json_value``. What comes out is plain JSON
data: dicts with string keys, lists, strings, bools, None, ints and finite floats — or a
``PlanValidationError`` that quotes at most a short prefix of the offending input. The
limits (documented in docs/guides/plans.md, "Strict input"):

- a file must be UTF-8 (a leading byte-order mark is allowed and ignored);
- duplicate keys in a JSON object or YAML mapping are errors, not "last one wins";
- YAML anchors/aliases may expand a document to at most ``MAX_VALUES`` values, checked
  on the parsed node graph before anything is built, so a 1 kB "billion laughs" file is
  rejected in milliseconds;
- nesting is at most ``MAX_DEPTH`` levels; an integer has at most ``MAX_INT_DIGITS``
  digits; strings are valid Unicode (no lone surrogates); NaN and infinities are refused
  by JSON's parser here, and in YAML and dicts by the typed checks of plans and models;
- YAML values that are not JSON (dates, sets, binary) are errors that say "quote it".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from .._base.errors import PlanValidationError

MAX_DEPTH = 100  # nested lists/mappings
MAX_VALUES = 1_000_000  # values in one document, YAML aliases expanded
MAX_INT_DIGITS = 300  # decimal digits of an integer (a float's range is ~1.8e308)
_INT_LIMIT = 10**MAX_INT_DIGITS  # the smallest int with more digits


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: error messages never echo a whole input."""
    try:
        text = repr(value)
    except Exception:  # a user object whose __repr__ raises
        text = f"<{type(value).__name__}>"
    if isinstance(value, (dict, list, tuple, set)) and len(text) > limit:
        return text[:limit] + f"… ({type(value).__name__} of {len(value):,} items)"
    return text if len(text) <= limit else text[:limit] + f"… ({len(text):,} characters)"


def clip(text: str, limit: int = 300) -> str:
    """``text`` cut to ``limit`` characters (for messages that quote a parser's report)."""
    return text if len(text) <= limit else text[:limit] + "…"


def read_text(path: str | Path, what: str) -> str:
    """The UTF-8 text of ``path`` (a leading BOM dropped); ``what`` names it in errors."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PlanValidationError(
            f"cannot read {what} {path}: {exc.strerror or exc.__class__.__name__}"
        ) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad = raw[exc.start : exc.start + 1]
        raise PlanValidationError(
            f"{path}: not a UTF-8 text file (byte 0x{bad.hex()} at offset {exc.start}); a "
            f"{what} is JSON or YAML text — save it as UTF-8"
        ) from None


def file_format(path: str | Path) -> str:
    """``"yaml"`` for a ``.yaml``/``.yml`` path, else ``"json"``."""
    return "yaml" if Path(path).suffix.lower() in (".yaml", ".yml") else "json"


def read_file(path: str | Path, what: str) -> Any:
    """The plain JSON values of a YAML or JSON file (by its suffix), through the safe
    reader; ``what`` names the file in errors (``"plan file"``)."""
    return parse(read_text(path, what), file_format(path), str(path))


def write_file(path: str | Path, data: Any) -> None:
    """Write plain JSON values as YAML (``.yaml``/``.yml``) or JSON (anything else), UTF-8."""
    path = Path(path)
    if file_format(path) == "yaml":
        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
    else:
        text = json.dumps(data, indent=2) + "\n"
    path.write_text(text, encoding="utf-8")


def parse(text: str, fmt: str, source: str) -> Any:
    """Parse JSON (``fmt="json"``) or YAML text into plain JSON values (see module doc)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    kind = fmt.upper()
    try:
        if fmt == "json":
            data = json.loads(
                text,
                object_pairs_hook=_json_object,
                parse_constant=_json_constant,
                parse_int=_json_int,
            )
        else:
            loader = _Loader(text)
            try:
                data = loader.get_single_data()
            finally:
                loader.dispose()
    except PlanValidationError as exc:
        raise PlanValidationError(f"{source}: not valid {kind}: {exc}") from None
    except RecursionError:
        raise PlanValidationError(
            f"{source}: not valid {kind}: nested too deeply (at most {MAX_DEPTH} levels)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - the parsers' own errors (JSONDecodeError,
        # YAMLError) and what YAML's constructors let escape (ValueError, KeyError, ...)
        msg = " ".join(str(exc).split())
        if isinstance(exc, KeyError):
            msg = f"{type(exc).__name__}: {msg}"
        raise PlanValidationError(
            f"{source}: not valid {kind}: {clip(msg)}. Fix it and load it again."
        ) from None
    return json_value(data, source, finite=False)  # typed checks name the field


def json_value(value: Any, where: str, keep: tuple[type, ...] = (), finite: bool = True) -> Any:
    """A checked copy of ``value`` as plain JSON data: tuples become lists, numpy scalars
    Python numbers; instances of ``keep`` pass through. Raises ``PlanValidationError``
    naming the path of the first bad value (``where``, then e.g. ``steps[2].input.x``).
    ``finite=False`` leaves NaN and infinities to the caller's typed checks (which name
    the field and its valid range)."""
    walk = _Walk(keep, finite)
    try:
        return walk.copy(value, 0)
    except _Bad as bad:
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in reversed(bad.path))
        raise PlanValidationError(
            ": ".join(x for x in (where, path.lstrip("."), bad.what) if x)
        ) from None


class _Bad(Exception):
    """A bad value; containers add their key to ``path`` on the way out (no path is
    built while the walk succeeds: it is on the hot path of every plan validation)."""

    def __init__(self, what: str):
        self.what = what
        self.path: list[str | int] = []


class _Walk:
    def __init__(self, keep: tuple[type, ...], finite: bool):
        self.keep, self.finite, self.count = keep, finite, 0

    def copy(self, v: Any, depth: int) -> Any:
        t = type(v)
        if t is str:
            return v if v.isascii() else _text(v)
        if t is float:
            if self.finite and v - v != 0.0:  # inf - inf and nan - nan are nan
                raise _Bad(f"{v!r} is not a JSON number; use a finite number")
            return v
        if t is int:
            if v >= _INT_LIMIT or -v >= _INT_LIMIT:  # (not str(v): it refuses > 4300 digits)
                raise _Bad(
                    f"an integer with more than {MAX_INT_DIGITS} digits is not a usable number"
                )
            return v
        if v is None or t is bool:
            return v
        if t is dict or t is list or t is tuple:
            if depth >= MAX_DEPTH:
                raise _Bad(f"nested deeper than {MAX_DEPTH} levels (or a value contains itself)")
            self.count += len(v)
            if self.count > MAX_VALUES:
                raise _Bad(
                    f"more than {MAX_VALUES:,} values; a plan or model this large is "
                    "refused (see the limits under Strict input in docs/guides/plans.md)"
                )
            depth += 1
            if t is dict:
                out = {}
                for k, item in v.items():
                    if type(k) is not str:
                        raise _Bad(
                            f"key {short(k)} ({type(k).__name__}): keys must be strings (quote it)"
                        )
                    try:
                        out[k if k.isascii() else _text(k)] = self.copy(item, depth)
                    except _Bad as bad:
                        bad.path.append(k)
                        raise
                return out
            out_list = []
            for i, item in enumerate(v):
                try:
                    out_list.append(self.copy(item, depth))
                except _Bad as bad:
                    bad.path.append(i)
                    raise
            return out_list
        return self.other(v, depth)

    def other(self, v: Any, depth: int) -> Any:
        """Subclasses of the JSON types, numpy scalars, ``keep`` instances; else an error."""
        if self.keep and isinstance(v, self.keep):
            return v
        for scalar in (bool, int, float, str):
            if isinstance(v, scalar):
                return self.copy(scalar(v), depth)
        if isinstance(v, dict):
            return self.copy(dict(v), depth)
        if isinstance(v, (list, tuple)):
            return self.copy(list(v), depth)
        item = getattr(v, "item", None)  # numpy scalars
        if item is not None and type(v).__module__ == "numpy" and getattr(v, "ndim", 1) == 0:
            return self.copy(item(), depth)
        kind = {
            "datetime": "a date/time",
            "date": "a date",
            "set": "a set",
            "frozenset": "a set",
            "bytes": "binary data",
        }.get(type(v).__name__, f"an object of type {type(v).__name__}")
        raise _Bad(
            f"{kind} ({short(v)}) is not a JSON value; use a string, number, bool, "
            "null, list or mapping (quote dates in YAML)"
        )


def _text(v: str) -> str:
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise _Bad(f"the string {short(v)} holds a lone surrogate (invalid Unicode)") from None
    return v


# ---------------------------------------------------------------- JSON hooks


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise PlanValidationError(
                f"duplicate key {short(k)} in one object; keep one (JSON's last-wins rule "
                "would silently drop the other)"
            )
        out[k] = v
    return out


def _json_constant(name: str) -> Any:
    raise PlanValidationError(f"{name} is not a JSON number; use a finite number")


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise PlanValidationError(
            f"a {len(text):,}-digit integer ({short(text, 20)}); at most {MAX_INT_DIGITS} digits"
        )
    return int(text)


# ---------------------------------------------------------------- YAML loader


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML's safe loader (libyaml's parser when built, which caps nesting at 1,000 levels
    without recursion) with duplicate and non-string keys refused, alias expansion bounded
    before construction, and dates/sets/binary left to ``json_value`` to refuse."""

    def construct_yaml_int(self, node: yaml.Node) -> int:
        if len(str(node.value)) > MAX_INT_DIGITS + 10:  # room for signs, 0x and underscores
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"a {len(node.value):,}-character integer; at most {MAX_INT_DIGITS} digits",
                node.start_mark,
            )
        return super().construct_yaml_int(node)

    def construct_document(self, node: yaml.Node) -> Any:
        _expanded_size(node)
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                if not isinstance(key_node, yaml.ScalarNode):
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        "found a key that is a list or mapping; keys must be strings",
                        key_node.start_mark,
                    )
                key = self.construct_object(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {short(key)}; keep one (the last-wins rule "
                        "would silently drop the other)",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)

    def construct_yaml_timestamp(self, node: yaml.Node) -> Any:
        raise yaml.constructor.ConstructorError(
            None,
            None,
            f"{short(node.value)} reads as a YAML date/time, which is not a JSON "
            "value; quote it to keep it as a string",
            node.start_mark,
        )


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


def _expanded_size(root: yaml.Node) -> None:
    """Count the values of the document with every alias expanded, in time linear in the
    number of distinct nodes (sizes memoised per node); refuse more than MAX_VALUES."""
    size: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = (
            [c for kv in node.value for c in kv]
            if isinstance(node, yaml.MappingNode)
            else node.value
            if isinstance(node, yaml.SequenceNode)
            else ()
        )
        if done:
            open_.discard(key)
            size[key] = total = 1 + sum(size[id(c)] for c in children)
            if total > MAX_VALUES:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"anchors and aliases expand this document beyond "
                    f"{MAX_VALUES:,} values (an alias bomb?); write the repeated parts out",
                    node.start_mark,
                )
        elif key not in size:
            if key in open_:  # popped again inside its own subtree
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    "an alias refers to a node that contains it (a recursive "
                    "structure); JSON values cannot contain themselves",
                    node.start_mark,
                )
            open_.add(key)
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in size)
