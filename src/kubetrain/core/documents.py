"""Safe YAML reading for user documents, with line numbers for errors.

YAML is parsed with the safe loader, but aliases are refused outright: a
"billion laughs" document expands exponentially through anchors, and no spec
needs them.  Size and nesting depth are capped before any object is built.
The loader also records which line each mapping key sits on, so a spec error
can say ``line 7: spec.resources.memory: ...``, and refuses a key given twice in
one mapping (YAML would keep the last one silently), naming both lines.
Called by the CLI (``submit -f``, ``sweep``); give it a file's bytes, so that a
byte that is not UTF-8 is named with its line.
"""

from __future__ import annotations

import codecs
from typing import Any

import yaml

from kubetrain.core.errors import SpecError
from kubetrain.core.strict import field_path

MAX_DOCUMENT_BYTES = 1 << 20
MAX_DEPTH = 32
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _NoAliasLoader(yaml.SafeLoader):
    source = "<input>"

    def compose_node(self, parent, index):  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise SpecError(
                f"{self.source}: line {event.start_mark.line + 1}: YAML aliases (*{event.anchor}) are not allowed "
                "in kubetrain documents; write the value out"
            )
        return super().compose_node(parent, index)

    def construct_object(self, node, deep=False):  # type: ignore[override]
        # PyYAML's constructors let Python's own errors through: an impossible date
        # (2001-02-30), an integer of more than 4300 digits, ``!!int`` on a word or on
        # nothing, ``!!timestamp`` on a non-date...: any of them is the document's fault.
        try:
            return super().construct_object(node, deep=deep)
        except (yaml.YAMLError, SpecError, RecursionError, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - see above
            kind = str(node.tag).rsplit(":", 1)[-1]
            shown = node.value if isinstance(node.value, str) else ""
            shown = shown if len(shown) <= 40 else shown[:40] + "..."
            # "invalid literal for int() with base 10" is Python talking; a date's "day is out of range" is not.
            reason = "" if str(exc).startswith("invalid literal") else f" ({exc})"
            raise SpecError(
                f"{self.source}: line {node.start_mark.line + 1}: cannot read {shown!r} as {kind}{reason}; "
                f"quote it to keep it as text, or remove the !!{kind} tag"
            ) from None


def _where(path: tuple) -> str:
    """A field path for a message, cut short: a deep one is the problem, not worth printing whole."""
    return field_path(path[:4]) + ("..." if len(path) > 4 else "")


def _walk(node: yaml.Node, path: tuple, lines: dict[tuple, int], depth: int, source: str) -> None:
    if depth > MAX_DEPTH:
        raise SpecError(
            f"{source}: line {node.start_mark.line + 1}: document nests deeper than {MAX_DEPTH} levels "
            f"(at {_where(path)}), the deepest kubetrain reads; flatten it, e.g. params as 'model.depth: 3' keys"
        )
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            line = key_node.start_mark.line + 1
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                ident = (key_node.tag, key_node.value)
                if ident in seen:
                    first = seen[ident]
                    lines_text = f"on line {line}" if first == line else f"on lines {first} and {line}"
                    raise SpecError(
                        f"{source}: line {line}: {field_path(path + (key,))} is given twice, {lines_text}; "
                        "keep one (YAML would silently use the last)"
                    )
                seen[ident] = line
            lines[path + (key,)] = line
            _walk(value_node, path + (key,), lines, depth + 1, source)
            lines[path + (key,)] = line
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, path + (index,), lines, depth + 1, source)

def _decode(data: bytes, source: str) -> str:
    """Bytes from a file: UTF-8 (a BOM allowed) or BOM-marked UTF-16; anything else names its first bad byte."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise SpecError(f"{source}: starts as UTF-16 but is not; save it as UTF-8") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        begin = data.rfind(b"\n", 0, exc.start) + 1
        end = data.find(b"\n", exc.start)
        near = data[begin: end if end >= 0 else len(data)][:60].decode("utf-8", "backslashreplace").strip()
        raise SpecError(
            f"{source}: line {line}: byte 0x{data[exc.start]:02x} is not UTF-8 (near: {near}); kubetrain reads "
            "documents as UTF-8: save the file as UTF-8, e.g. iconv -f latin1 -t utf-8 FILE > FILE.utf8"
        ) from None


#: What to do about PyYAML's commonest complaints (matched on the start of its ``problem``).
_SYNTAX_FIXES = (
    ("found character '\\t'", "indent with spaces: YAML does not allow tabs"),
    ("mapping values are not allowed", "check this line's indentation, or quote a value that holds ': '"),
    ("expected ',' or ']'", "close the list with ']'"),
    ("expected ',' or '}'", "close the mapping with '}'"),
    ("found unexpected end of stream", "close the quote"),
    ("could not find expected ':'", "write each entry as key: value, and close every quote"),
    ("expected <block end>", "line up the entries of one list or mapping at the same indentation"),
    ("found unknown escape character", "in double quotes write a backslash as \\\\, or use single quotes"),
    ("could not determine a constructor", "kubetrain reads plain YAML: remove the tag"),
)


def _syntax_error(exc: yaml.YAMLError, text: str, source: str) -> SpecError:
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        code = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "?")
        hint = " (a file saved as UTF-16 without a BOM? save it as UTF-8)" if code == 0 else ""
        return SpecError(f"{source}: line {line}: malformed YAML: character U+{code:04X} is a control "
                         f"character, which YAML does not allow{hint}; remove it")
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}: " if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None and (mark is None or context_mark.line != mark.line):
        problem += f" ({context} from line {context_mark.line + 1})"
    fix = next((fix for start, fix in _SYNTAX_FIXES if problem.startswith(start)), None)
    return SpecError(f"{source}: {where}malformed YAML: {problem}" + (f"; {fix}" if fix else ""))


def load_yaml_documents(text: str | bytes, *, source: str = "<input>") -> list[tuple[Any, dict[tuple, int]]]:
    """Parse every document in ``text``: a list of (data, {field path: line}).

    Give a file's bytes rather than decoding them first: a byte that is not UTF-8 is then named with its line.
    A key given twice in one mapping is refused with both lines; size and depth are capped (MAX_DOCUMENT_BYTES,
    MAX_DEPTH).
    """
    size = len(text) if isinstance(text, bytes) else len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_DOCUMENT_BYTES:
        raise SpecError(f"{source}: larger than {MAX_DOCUMENT_BYTES // 1024} KiB, the most a document may be; "
                        "a spec should be small: keep data in files the job reads")
    if isinstance(text, bytes):
        text = _decode(text, source)
    try:
        loader = _NoAliasLoader(text)
        loader.source = source
        try:
            results = []
            while loader.check_node():
                node = loader.get_node()
                if node is None:
                    continue
                lines: dict[tuple, int] = {}
                _walk(node, (), lines, 0, source)
                data = loader.construct_document(node)
                if data is None:
                    continue  # an empty document (a stray or trailing ---): skipped, as kubectl does
                results.append((data, lines))
        finally:
            loader.dispose()
    except SpecError:
        raise
    except yaml.YAMLError as exc:
        raise _syntax_error(exc, text, source) from None
    except RecursionError:
        raise SpecError(f"{source}: document nests too deeply; {MAX_DEPTH} levels is the deepest kubetrain reads, "
                        "so flatten it") from None
    if not results:
        raise SpecError(f"{source}: the document is empty")
    return results
