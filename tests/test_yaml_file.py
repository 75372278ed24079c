"""The one YAML option-file reader: messages name the file, the line and the option."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, Field

from socmap.yaml_file import load_model, read_mapping


class Opts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epochs: int = Field(10, ge=1)
    name: str = "x"


class MyError(Exception):
    pass


def test_overrides_lie_over_the_file_and_none_keeps_it(tmp_path):
    f = tmp_path / "o.yaml"
    f.write_text("epochs: 3\nname: file\n")
    m = load_model(Opts, f, {"epochs": None, "name": "flag"})
    assert (m.epochs, m.name) == (3, "flag")
    assert load_model(Opts, None, {"epochs": 7}).epochs == 7


@pytest.mark.parametrize("text, needles", [
    ("epochs: [1,\n", ("o.yaml", "not valid YAML at line")),
    ("- 1\n- 2\n", ("o.yaml", "mapping of options", "list")),
    ("epochs: 0\n", ("o.yaml", "epochs", "greater than or equal to 1", "given: 0")),
    ("epoch: 5\n", ("o.yaml", "epoch: unknown option", "see --help")),
])
def test_bad_files_raise_the_callers_error_naming_file_and_option(tmp_path, text, needles):
    f = tmp_path / "o.yaml"
    f.write_text(text)
    with pytest.raises(MyError) as err:
        load_model(Opts, f, {}, error=MyError, what="option file", help_hint="--help")
    for n in needles:
        assert n in str(err.value)


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(MyError, match="nope.yaml: option file not found"):
        read_mapping(tmp_path / "nope.yaml", MyError, "option file")
    b = tmp_path / "b.yaml"
    b.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(MyError, match="not a text"):
        read_mapping(b, MyError, "option file")
    e = tmp_path / "e.yaml"
    e.write_text("")
    assert read_mapping(e, MyError) == {}
