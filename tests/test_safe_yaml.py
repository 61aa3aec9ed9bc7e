"""load_yaml_mapping: configuration files cannot exhaust memory (alias bombs, huge files,
deep nesting), and every refusal names the file, the place and the fix."""

from __future__ import annotations

import os
import stat

import pytest
import yaml

from medrobust.safety.safe_yaml import MAX_NESTING, ConfigFileError, load_yaml_mapping

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def _write(tmp_path, text: str, name: str = "config.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_normal_config_loads(tmp_path):
    path = _write(tmp_path, "name: tiny\ndata:\n  source: phantom\n  size: 32\nattacks:\n  - pgd\n  - sia\n")
    assert load_yaml_mapping(path) == {"name": "tiny", "data": {"source": "phantom", "size": 32},
                                       "attacks": ["pgd", "sia"]}


def test_an_empty_file_is_an_empty_mapping(tmp_path):
    assert load_yaml_mapping(_write(tmp_path, "# nothing yet\n")) == {}


def test_billion_laughs_is_refused_without_expanding(tmp_path, monkeypatch):
    path = _write(tmp_path, BILLION_LAUGHS)

    def no_composing(*args, **kwargs):
        raise AssertionError("the document was composed: aliases would have been expanded")

    # Composing (what safe_load does) is what expands aliases; the refusal must come before it.
    monkeypatch.setattr(yaml, "safe_load", no_composing)
    monkeypatch.setattr(yaml.SafeLoader, "compose_node", no_composing)
    with pytest.raises(ConfigFileError) as info:
        load_yaml_mapping(path)
    message = str(info.value)
    assert str(path) in message and "line 1" in message and "anchor &a" in message
    assert "may not use YAML anchors or aliases" in message


def test_a_plain_anchor_and_an_alias_are_refused_with_their_lines(tmp_path):
    path = _write(tmp_path, "name: tiny\ndefaults: &d {size: 32}\n")
    with pytest.raises(ConfigFileError, match=r"line 2 uses an anchor &d; write the values out"):
        load_yaml_mapping(path)
    # An alias to an undefined anchor is still an alias: the parser reports it before any composing.
    path = _write(tmp_path, "name: tiny\n\nother: *undefined\n", "alias.yaml")
    with pytest.raises(ConfigFileError, match=r"alias\.yaml: line 3 uses an alias \*undefined"):
        load_yaml_mapping(path)


def test_a_file_over_the_limit_is_refused_before_parsing(tmp_path):
    path = _write(tmp_path, "a: " + "x" * 1_100_000 + "\n")
    with pytest.raises(ConfigFileError) as info:
        load_yaml_mapping(path)
    assert str(path) in str(info.value) and "1,100,004 bytes" in str(info.value)
    assert "1,000,000-byte limit" in str(info.value)
    assert load_yaml_mapping(path, max_bytes=2_000_000)["a"].startswith("xxx")


def test_the_read_is_bounded_even_if_the_size_lies(tmp_path, monkeypatch):
    path = _write(tmp_path, "a: " + "x" * 200 + "\n")
    small = os.stat_result((stat.S_IFREG | 0o644, 0, 0, 1, 0, 0, 10, 0, 0, 0))  # st_size 10
    # stat says small (a pipe, or a file that grew since), the read still stops at max_bytes + 1
    monkeypatch.setattr(type(path), "stat", lambda self, **kwargs: small)
    with pytest.raises(ConfigFileError, match="more than 100 bytes"):
        load_yaml_mapping(path, max_bytes=100)


def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path):
    depth = 100_000
    path = _write(tmp_path, "[" * depth + "]" * depth)
    with pytest.raises(ConfigFileError, match=f"more than {MAX_NESTING} levels deep"):
        load_yaml_mapping(path)


@pytest.mark.parametrize(("text", "expected"), [
    ("- a\n- b\n", "holds a YAML list, not a mapping"),
    ("just words\n", "holds a YAML str, not a mapping"),
    ("a: [1, 2\n", "not valid YAML"),
])
def test_bad_documents_are_one_clear_error(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigFileError) as info:
        load_yaml_mapping(path)
    assert str(info.value).startswith(f"{path}: ") and expected in str(info.value)
    assert "\n" not in str(info.value)


def test_a_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.yaml: configuration file not found"):
        load_yaml_mapping(tmp_path / "missing.yaml")


def test_non_utf8_text_is_refused(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigFileError, match="is not UTF-8 text"):
        load_yaml_mapping(path)
