"""Pure parts of the simulator: the where-grammar, DB column names, local.db and tokens."""

import pytest

from agent.lab.xapi import db, expr, localdb, schema
from agent.lab.xapi.errors import XapiError


def test_expression_precedence_matches_ocamlyacc():
    """not binds looser than and/or; and/or share one left-associative level."""
    f = ("field", "x")
    assert expr.parse('not field "x"="1" and true') == (
        "not", ("and", ("eq", f, ("literal", "1")), ("true",)))
    assert expr.parse('true or false and false') == ("and", ("or", ("true",), ("false",)),
                                                     ("false",))
    assert expr.parse('true and not false or true') == (
        "and", ("true",), ("not", ("or", ("false",), ("true",))))
    assert expr.parse(' ( "a" = "a" ) ') == ("eq", ("literal", "a"), ("literal", "a"))


@pytest.mark.parametrize("text", ['field "x"', '"a"="b" and', 'x="y"', '("a"="a"', 'truex'])
def test_bad_expressions_are_rejected(text):
    """Lexing and parse errors raise ExprError, which the API turns into INVALID_VALUE."""
    with pytest.raises(expr.ExprError):
        expr.parse(text)


def test_db_columns_and_strings():
    """Namespaced fields map to "__" columns; values compare in xapi's DB string form."""
    assert schema.db_column("name_label") == "name__label"
    assert schema.db_column("API_version_major") == "API_version__major"
    assert schema.db_column("memory_overhead") == "memory_overhead"
    assert schema.db_column("power_state") == "power_state"
    assert schema.api_field("VM", "VCPUs__max") == "VCPUs_max"
    assert schema.db_string(True) == "true" and schema.db_string("7") == "7"
    assert schema.db_string(["a", "b'c"]) == "('a' 'b\\'c')"
    assert schema.db_string({"k": "v"}) == "(('k' 'v'))"


def test_local_db_round_trip(tmp_path):
    """local.db is xapi's <config><row key value/></config> and escapes attribute text."""
    path = str(tmp_path / "local.db")
    localdb.write(path, {"host_auto_enable": "false", "odd": '<&">'})
    assert localdb.read(path) == {"host_auto_enable": "false", "odd": '<&">'}
    assert localdb.render({"a": "b"}) == ('<?xml version="1.0" encoding="UTF-8"?>\n'
                                          '<config><row key="a" value="b"/></config>')
    assert localdb.read(str(tmp_path / "missing")) == {}


def test_tokens():
    """Tokens are "" or two decimal generations; anything else is a parse failure."""
    assert db.parse_token("") == (0, 0)
    assert db.parse_token("00000000000000000012,00000000000000000003") == (12, 3)
    for bad in ("12", "a,b", "1,2,3"):
        with pytest.raises(XapiError) as error:
            db.parse_token(bad)
        assert error.value.details == ["EVENT_FROM_TOKEN_PARSE_FAILURE", bad]
