"""Read manifest files for `dockyard apply -f` / `dockyard delete -f` (client side, no server).

Accepts YAML or JSON, several documents per file (``---``), a directory (its ``*.yaml``,
``*.yml`` and ``*.json`` files, sorted by name, not recursive) and ``-`` for stdin.

Everything that can be checked without the server is checked here, so a typo never reaches
the API: YAML/JSON syntax errors carry file, line and column; a document that is not a
mapping, a repeated key and a value JSON cannot carry are errors naming the file and the
document. What the documents *mean* (kinds, fields) is the server's business: documents are
passed on as parsed.

Pure apart from reading the files; imports only the standard library and PyYAML.
"""
from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

import yaml

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
STDIN_NAME = "<stdin>"
# Caps checked before a document is built: a file the API would refuse anyway (its body limit), and a
# YAML alias bomb (PyYAML shares an aliased node, so nine nested aliases of nine make a document of
# 9**9 values that only blows up later, in the JSON check or the request) or a self-referring alias.
MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_VALUES = 100_000  # values in one document, every alias expanded
MAX_DEPTH = 100  # nesting of mappings and lists


@dataclass
class ManifestDocument:
    """One parsed document: what the client sends as {"source", "document"}."""

    path: str  # as the user named it ("<stdin>" for -)
    index: int  # 1-based position of the document in its file
    line: int  # 1-based line where the document starts
    document: dict[str, Any]

    @property
    def source(self) -> str:
        return f"{self.path}#{self.index}"

    def payload(self) -> dict[str, Any]:
        return {"source": self.source, "document": self.document}


@dataclass
class ManifestError(Exception):
    """A problem with a manifest file found on the client. ``str()`` is one line."""

    path: str
    message: str
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based
    doc: int | None = None  # 1-based document index
    hint: str | None = None
    extra: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        where = self.path
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        if self.doc is not None:
            where += f" (doc {self.doc})"
        text = f"{where}: {self.message}"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text


# ---- YAML loader --------------------------------------------------------------------------
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """SafeLoader (C accelerated when available) that

    * rejects repeated mapping keys (PyYAML silently keeps the last one; kubectl rejects), and
    * keeps unquoted dates as strings (JSON has no date type; ``2024-01-01`` stays text).
    """

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            # Only the mapping's own keys: a key may override one merged in with <<.
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    hash(key)
                except TypeError:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark, "found an unhashable key", key_node.start_mark
                    ) from None
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {key!r} (first defined on line {seen[key].line + 1})",
                        key_node.start_mark,
                    )
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}
_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_yaml_map)


# ---- public API ---------------------------------------------------------------------------
def expand_paths(paths: Iterable[str]) -> list[str]:
    """Files to read, in order: each -f argument; a directory becomes its manifest files
    sorted by name (not recursive); ``-`` stays ``-`` (stdin)."""
    out: list[str] = []
    for p in paths:
        if p == "-":
            out.append(p)
        elif os.path.isdir(p):
            names = sorted(
                n for n in os.listdir(p) if n.lower().endswith(MANIFEST_SUFFIXES) and os.path.isfile(os.path.join(p, n))
            )
            if not names:
                raise ManifestError(p, "directory has no manifest files", hint="dockyard reads *.yaml, *.yml and *.json files; subdirectories are not read")
            out += [os.path.join(p, n) for n in names]
        elif os.path.exists(p):
            out.append(p)
        else:
            raise ManifestError(p, "no such file or directory")
    return out


def read_manifests(paths: Iterable[str], stdin: IO[str] | None = None) -> list[ManifestDocument]:
    """Parse every document of every file named by ``paths`` (see :func:`expand_paths`).

    Raises :class:`ManifestError` on the first problem. Empty documents (a stray ``---``, a
    file of comments) are skipped; a file with no document at all is an error.
    """
    docs: list[ManifestDocument] = []
    stdin_used = False
    for p in expand_paths(paths):
        if p == "-":
            if stdin_used:
                raise ManifestError(STDIN_NAME, "'-' (stdin) given more than once")
            stdin_used = True
            text = (stdin or sys.stdin).read(MAX_FILE_BYTES + 1)
            docs += parse_text(text, STDIN_NAME)
            continue
        try:
            with open(p, encoding="utf-8") as fh:
                text = fh.read(MAX_FILE_BYTES + 1)
        except UnicodeDecodeError as e:
            raise ManifestError(p, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
        except OSError as e:
            raise ManifestError(p, e.strerror or str(e)) from None
        docs += parse_text(text, p, json_only=p.lower().endswith(".json"))
    return docs


def parse_text(text: str, path: str, json_only: bool = False) -> list[ManifestDocument]:
    """Documents of one file. ``json_only`` parses with the json module (exact JSON errors)."""
    if len(text) > MAX_FILE_BYTES:
        raise ManifestError(path, f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MB", hint="split it into several files")
    if json_only:
        raw = _parse_json(text, path)
    else:
        raw = _parse_yaml(text, path)
    docs: list[ManifestDocument] = []
    for index, line, data in raw:
        if data is None:
            continue
        if not isinstance(data, dict):
            raise ManifestError(
                path,
                f"document is {_type_name(data)}, expected a mapping",
                line=line,
                doc=index,
                hint="each document must be an object: a manifest with apiVersion/kind/metadata/spec, "
                "an ECS task definition or an ECS CreateService body; separate documents with ---",
            )
        problem = _non_json_value(data, "")
        if problem:
            fpath, what = problem
            raise ManifestError(path, f"{fpath}: {what} cannot be sent as JSON", line=line, doc=index, hint="quote the value")
        docs.append(ManifestDocument(path=path, index=index, line=line, document=data))
    if not docs:
        raise ManifestError(path, "no documents found (the file is empty or only comments)")
    return docs


# ---- helpers ------------------------------------------------------------------------------
def _parse_yaml(text: str, path: str) -> list[tuple[int, int, Any]]:
    out: list[tuple[int, int, Any]] = []
    loader = _Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            problem = _node_problem(node) if node is not None else None
            if problem:
                raise ManifestError(path, problem, line=node.start_mark.line + 1, doc=len(out) + 1,
                                    hint="YAML anchors (&) and aliases (*) may repeat a value, not multiply it"
                                    if "alias" in problem else None)
            data = loader.construct_document(node) if node is not None else None
            line = node.start_mark.line + 1 if node is not None else 1
            out.append((len(out) + 1, line, data))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        msg = e.problem or e.context or "syntax error"
        if e.problem and e.context and "duplicate key" not in e.problem:
            msg = f"{e.problem} ({e.context})"
        hint = None
        if mark is not None:
            lines = text.splitlines()
            if mark.line < len(lines) and "\t" in lines[mark.line][: mark.column + 1]:
                hint = "YAML does not allow tabs for indentation; use spaces"
        raise ManifestError(
            path,
            f"invalid YAML: {msg}",
            line=mark.line + 1 if mark else None,
            column=mark.column + 1 if mark else None,
            doc=len(out) + 1,
            hint=hint,
        ) from None
    except yaml.YAMLError as e:  # reader errors (control characters) have no mark
        raise ManifestError(path, f"invalid YAML: {' '.join(str(e).split())}") from None
    except ValueError as e:  # an integer of over 4300 digits (Python's limit on converting one)
        raise ManifestError(path, f"invalid YAML: {_int_limit(e)}", doc=len(out) + 1, hint="quote the value") from None
    finally:
        loader.dispose()
    return out


def _parse_json(text: str, path: str) -> list[tuple[int, int, Any]]:
    if not text.strip():
        return []
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
        depth = _depth(data)
    except _DuplicateKey as e:
        raise ManifestError(path, f"invalid JSON: duplicate key {e.args[0]!r}") from None
    except RecursionError:
        depth = MAX_DEPTH + 1
    except json.JSONDecodeError as e:
        hint = None
        if text.lstrip().startswith(("apiVersion", "kind", "---")):
            hint = "this looks like YAML; name the file .yaml"
        raise ManifestError(path, f"invalid JSON: {e.msg}", line=e.lineno, column=e.colno, hint=hint) from None
    except ValueError as e:
        raise ManifestError(path, f"invalid JSON: {_int_limit(e)}", hint="quote the value") from None
    if depth > MAX_DEPTH:
        raise ManifestError(path, f"invalid JSON: nested deeper than {MAX_DEPTH} levels")
    line = text[: len(text) - len(text.lstrip())].count("\n") + 1
    return [(1, line, data)]


def _int_limit(e: ValueError) -> str:
    """Python's message for an integer too long to convert, without its advice to the programmer."""
    return str(e).split(";")[0].replace("Exceeds the limit", "a number exceeds the limit")


def _children(node: Any) -> list[Any]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _node_problem(root: Any) -> str | None:
    """Why a composed YAML document must not be built: it refers to itself, nests deeper than MAX_DEPTH or
    holds over MAX_VALUES values with its aliases expanded. Counted on the node graph, where an alias is a
    shared node, in time linear in the nodes (each is sized once); iterative, so depth cannot overflow."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_.discard(key)
            kids = _children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            if size[key] > MAX_VALUES:
                return f"the document holds over {MAX_VALUES} values once its aliases are expanded"
            if depth[key] > MAX_DEPTH:
                return f"the document nests deeper than {MAX_DEPTH} levels"
            continue
        if key in size:
            continue
        open_.add(key)
        stack.append((node, True))
        for kid in _children(node):
            if id(kid) in open_:
                return f"an alias refers to a value that contains it (line {kid.start_mark.line + 1})"
            if id(kid) not in size:
                stack.append((kid, False))
    return None


def _depth(v: Any) -> int:
    """Nesting of a parsed JSON value (recursive: json.loads has already bounded it by the interpreter's limit)."""
    if isinstance(v, dict):
        return 1 + max((_depth(x) for x in v.values()), default=0)
    if isinstance(v, list):
        return 1 + max((_depth(x) for x in v), default=0)
    return 0


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


def _type_name(v: Any) -> str:
    if isinstance(v, list):
        return "a list"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    return f"a {type(v).__name__}"


def _non_json_value(v: Any, path: str) -> tuple[str, str] | None:
    """First value JSON cannot carry (NaN, infinity, binary, sets...), as (field.path, description)."""
    if v is None or isinstance(v, (str, bool, int)):
        return None
    if isinstance(v, float):
        return None if math.isfinite(v) else (path or "(document)", f"the number {v}")
    if isinstance(v, dict):
        for k, item in v.items():
            if not isinstance(k, (str, int, float, bool)) or k is None:
                return (path or "(document)", f"the key {k!r}")
            sub = f"{path}.{k}" if path else str(k)
            found = _non_json_value(item, sub)
            if found:
                return found
        return None
    if isinstance(v, list):
        for i, item in enumerate(v):
            found = _non_json_value(item, f"{path}[{i}]")
            if found:
                return found
        return None
    return (path or "(document)", f"a {type(v).__name__} value")
