"""Safe YAML reading for user documents, with line numbers for errors.

YAML is parsed with the safe loader, but aliases are refused outright: a
"billion laughs" document expands exponentially through anchors, and no spec
needs them.  Size and nesting depth are capped before any object is built.
The loader also records which line each mapping key sits on, so a spec error
can say ``line 7: spec.resources.memory: ...``.
"""

from __future__ import annotations

from typing import Any

import yaml

from kubetrain.core.errors import SpecError

MAX_DOCUMENT_BYTES = 1 << 20
MAX_DEPTH = 32


class _NoAliasLoader(yaml.SafeLoader):
    def compose_node(self, parent, index):  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise SpecError(
                f"line {event.start_mark.line + 1}: YAML aliases (*{event.anchor}) are not allowed "
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
            raise SpecError(
                f"{getattr(self, 'source', '<input>')}: line {node.start_mark.line + 1}: "
                f"cannot read {shown!r} as {kind}: {exc}"
            ) from None


def _walk(node: yaml.Node, path: tuple, lines: dict[tuple, int], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise SpecError(f"line {node.start_mark.line + 1}: document nests deeper than {MAX_DEPTH} levels")
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            lines[path + (key,)] = key_node.start_mark.line + 1
            _walk(value_node, path + (key,), lines, depth + 1)
            lines[path + (key,)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, path + (index,), lines, depth + 1)


def load_yaml_documents(text: str, *, source: str = "<input>") -> list[tuple[Any, dict[tuple, int]]]:
    """Parse every document in ``text``: a list of (data, {field path: line})."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_DOCUMENT_BYTES:
        raise SpecError(f"{source}: larger than {MAX_DOCUMENT_BYTES // 1024} KiB; a spec should be small")
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
                _walk(node, (), lines, 0)
                data = loader.construct_document(node)
                if data is None:
                    continue  # an empty document (a stray or trailing ---): skipped, as kubectl does
                results.append((data, lines))
        finally:
            loader.dispose()
    except SpecError:
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{source}: {where}malformed YAML: {problem}") from None
    except RecursionError:
        raise SpecError(f"{source}: document nests too deeply") from None
    if not results:
        raise SpecError(f"{source}: the document is empty")
    return results
