"""Edit one model's entry of a text-format ModelServerConfig and keep the rest of the file as it was.

Operators keep comments and their own layout in `models.config`; a tool that re-serialises the whole message
(text_format.MessageToString) drops every comment and reformats every entry. Here the file is scanned once
for the spans of the `config { ... }` entries of `model_config_list` (comments and quoted strings skipped),
and only the entry that changes is re-rendered, at its own indentation. The result is parsed again and
compared with the intended config before it is returned, so an edit never writes something else."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from google.protobuf import text_format
from tfsb.protos import ModelConfig, ModelServerConfig, coerce
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")

# The first lines of a config `python -m tfsb.export.serve_config` wrote: they name its source of truth, which the
# tools that change labels, policies or models edit too (a re-render starts from it).
RENDERED_FROM = "# Rendered from {source} by python -m tfsb.export.serve_config: edit that file, not this one (labels\n" \
                "# and version policies included; `python -m tfsb.client label` edits both). This file is rewritten.\n"
GENERATED_FROM = "# Generated from the model directories under {base} by python -m tfsb.export.serve_config (the\n" \
                 "# template names models that are not there). This file is rewritten: to keep labels or policies,\n" \
                 "# serve a config of your own (make serve MODEL_CONFIG=FILE).\n"
_RENDERED = re.compile(r"^# Rendered from (.+?) by python -m tfsb.export\.serve_config")
_GENERATED = re.compile(r"^# Generated from the model directories under (.+?) by python -m tfsb.export\.serve_config")


def source_of(text: str) -> tuple[str, str] | None:
    """("rendered", template path) or ("generated", models directory) for a config `tfsb.export.serve_config`
    wrote, else None (the file is its own source of truth)."""
    first = text.split("\n", 1)[0]
    if m := _RENDERED.match(first):
        return "rendered", m.group(1)
    if m := _GENERATED.match(first):
        return "generated", m.group(1)
    return None


@dataclass(frozen=True)
class Entry:
    """One `config { ... }` of `model_config_list`: [start, end) in the text, and where its line starts."""

    start: int
    end: int
    line_start: int
    model: ModelConfig


def _blocks(text: str) -> tuple[list[tuple[int, int, int]], int | None]:
    """Spans of the `config` blocks directly inside `model_config_list`, and the offset of that list's
    closing brace (None without a list)."""
    stack: list[str] = []
    entries: list[tuple[int, int, int]] = []
    close: int | None = None
    last_ident, last_ident_at, open_at = "", 0, 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            continue
        m = _IDENT.match(text, i)
        if m and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            last_ident, last_ident_at = m.group(), i
            i = m.end()
            continue
        if c in "{<":
            stack.append(last_ident)
            if stack == ["model_config_list", "config"]:
                open_at = last_ident_at
            last_ident = ""
        elif c in "}>":
            if stack == ["model_config_list", "config"]:
                entries.append((open_at, i + 1, text.rfind("\n", 0, open_at) + 1))
            elif stack == ["model_config_list"]:
                close = i
            if stack:
                stack.pop()
        elif c not in " \t\r\n:":
            last_ident = ""
        i += 1
    return entries, close


def entries(text: str) -> list[Entry]:
    """Every model entry of the file, in order."""
    out = []
    for start, end, line_start in _blocks(text)[0]:
        body = text[start:end]
        body = body[body.index(next(ch for ch in body if ch in "{<")) + 1:-1]
        out.append(Entry(start, end, line_start, text_format.Parse(body, ModelConfig())))
    return out


def _render(model: ModelConfig, indent: str) -> str:
    """One line per field, a message field on one line (`model_version_policy { latest { ... } }`), the
    layout of the checked-in configs."""
    fields: list[list[str]] = []
    for line in text_format.MessageToString(model).splitlines():
        if line and not line[0].isspace() and line != "}":
            fields.append([])
        fields[-1].append(line.strip())
    inner = "".join(f"{indent}  {' '.join(f)}\n" for f in fields)
    return f"config {{\n{inner}{indent}}}"


def update_model(text: str, name: str, change: Callable[[ModelConfig], None]) -> str:
    """`text` with the entry of model `name` changed by `change` (which mutates a copy); every other line
    stays byte for byte. KeyError when the file has no entry for `name`."""
    want = text_format.Parse(text, ModelServerConfig())
    for entry in entries(text):
        if entry.model.name != name:
            continue
        model = ModelConfig()
        model.CopyFrom(entry.model)
        change(model)
        for m in want.model_config_list.config:
            if m.name == name:
                change(m)
        indent = _indent(text, entry.line_start, entry.start)
        out = text[:entry.start] + _render(model, indent) + text[entry.end:]
        return _checked(out, want)
    raise KeyError(f"model {name!r} is not in the config")


def add_model(text: str, model: ModelConfig) -> str:
    """`text` with an entry for `model` appended to `model_config_list` (or a new list when the file has
    none), indented like the entries before it."""
    model = coerce(model, ModelConfig)
    want = text_format.Parse(text, ModelServerConfig())
    want.model_config_list.config.add().CopyFrom(model)
    found, close = _blocks(text)
    if close is None:
        out = text.rstrip("\n") + ("\n" if text.strip() else "")
        out += "model_config_list {\n  " + _render(model, "  ") + "\n}\n"
        return _checked(out, want)
    indent = _indent(text, found[-1][2], found[-1][0]) if found else "  "
    before = text[:close].rstrip(" \t")
    if not before.endswith("\n"):
        before += "\n"
    close_line = text.rfind("\n", 0, close) + 1
    close_indent = re.match(r"[ \t]*", text[close_line:]).group() if text[close_line:close].strip() == "" else ""
    out = before + indent + _render(model, indent) + "\n" + close_indent + text[close:]
    return _checked(out, want)


def _indent(text: str, line_start: int, start: int) -> str:
    """The entry's own indentation, or two spaces when it does not begin its line."""
    lead = text[line_start:start]
    return lead if lead.strip() == "" else "  "


def _checked(out: str, want: ModelServerConfig) -> str:
    got = text_format.Parse(out, ModelServerConfig())
    if got != want:
        raise ValueError("editing the config text would change more than the one entry; not written")
    return out
