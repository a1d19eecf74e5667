"""Editing one model's entry of a models.config and nothing else (tfsb/wire/config_text.py)."""

from __future__ import annotations

import pytest
from google.protobuf import text_format

from tfsb.wire.config_text import ModelConfig, ModelServerConfig, add_model, entries, update_model

TRICKY = """# head comment with a brace { and config { name: "x" }
model_config_list {
  config {   # trailing comment }
    name: "a"
    base_path: "/models/{a}"  # braces in a string
    model_platform: "tensorflow"
  }
  config: < name: 'b' base_path: "/m/b" model_platform: "tensorflow" >
	config { name: "c" base_path: "/m/c" model_platform: "tensorflow" version_labels { key: "s" value: 1 } }
}
# tail comment
"""


def test_entries_are_found_past_comments_strings_and_both_delimiters():
    assert [e.model.name for e in entries(TRICKY)] == ["a", "b", "c"]


@pytest.mark.parametrize("name", ["a", "b", "c"])
def test_update_changes_one_entry_and_keeps_every_other_line(name):
    def change(m):
        m.version_labels["stable"] = 7

    out = update_model(TRICKY, name, change)
    cfg = text_format.Parse(out, ModelServerConfig())
    assert {m.name: dict(m.version_labels).get("stable") for m in cfg.model_config_list.config} == \
        {n: (7 if n == name else None) for n in "abc"}
    start = next(e for e in entries(TRICKY) if e.model.name == name)
    assert out.startswith(TRICKY[:start.start]) and out.endswith(TRICKY[start.end:])


def test_add_appends_an_entry_indented_like_its_siblings_and_unknown_models_are_refused():
    out = add_model(TRICKY, ModelConfig(name="d", base_path="/m/d", model_platform="tensorflow"))
    assert out.startswith(TRICKY[:TRICKY.rindex("}\n# tail")].rstrip(" \t"))
    assert '\tconfig {\n\t  name: "d"' in out and out.endswith("}\n# tail comment\n")
    assert [m.name for m in text_format.Parse(out, ModelServerConfig()).model_config_list.config] == list("abcd")
    with pytest.raises(KeyError):
        update_model(TRICKY, "nope", lambda m: None)
