"""The get_all_records_where expression language of xapi's DB, parsed and evaluated.

Grammar and lexer follow xen-api ``ocaml/database/db_filter_lex.mll`` and ``db_filter_parse.mly``
(ocaml/database/db_filter.ml)::

    value := "literal" | field "name"
    expr  := value = value | expr and expr | expr or expr | not expr
           | true | false | ( expr )

Precedence is the parser's: ``%right LNOT`` is declared before ``%left LAND LOR``, so in
ocamlyacc ``not`` binds *looser* than and/or (``not a and b`` is ``not (a and b)``), and ``and``/``or``
share one level, left-associative (``a or b and c`` is ``(a or b) and c``). Literals are any
characters except ``"`` between double quotes (no escapes). Comparison is string equality on the
DB string form of the field (see ``schema.db_string``).
"""

import re

_TOKEN = re.compile(r'[ \t\n]*(?:(=)|(true)|(false)|(\()|(\))|(field)|(and)|(or)|(not)|"([^"]*)")')
_KINDS = ("EQ", "TRUE", "FALSE", "LPAREN", "RPAREN", "FIELD", "AND", "OR", "NOT")


class ExprError(Exception):
    """A where-expression that does not lex or parse; xapi answers INVALID_VALUE [expr, why]."""


def tokenize(text):
    """Split an expression into (kind, text) tokens, ending with ("EOF", "")."""
    tokens, pos = [], 0
    while True:
        rest = text[pos:].lstrip(" \t\n")
        if not rest:
            tokens.append(("EOF", ""))
            return tokens
        match = _TOKEN.match(text, pos)
        if not match:
            # ocamllex raises Failure "lexing: empty token" on an unexpected character.
            raise ExprError("Failure(\"lexing: empty token\")")
        pos = match.end()
        if match.group(10) is not None:
            tokens.append(("IDENT", match.group(10)))
        else:
            index = next(i for i in range(9) if match.group(i + 1) is not None)
            tokens.append((_KINDS[index], match.group(index + 1)))


class _Parser(object):
    """Recursive descent equivalent of the ocamlyacc grammar and its precedences."""

    def __init__(self, tokens):
        self.tokens = tokens
        self.pos = 0

    def peek(self):
        """The kind of the next token."""
        return self.tokens[self.pos][0]

    def take(self, kind=None):
        """Consume the next token, which must be of ``kind`` if given."""
        token = self.tokens[self.pos]
        if kind is not None and token[0] != kind:
            raise ExprError("Parsing.Parse_error")
        self.pos += 1
        return token

    def expr(self):
        """expr := not expr | primary ((and|or) primary)* ; a trailing not swallows the rest."""
        if self.peek() == "NOT":
            self.take()
            return ("not", self.expr())
        left = self.primary()
        while self.peek() in ("AND", "OR"):
            op = self.take()[0].lower()
            if self.peek() == "NOT":
                # "a and not b or c": LNOT has the lowest precedence, so it takes "b or c".
                self.take()
                return (op, left, ("not", self.expr()))
            left = (op, left, self.primary())
        return left

    def primary(self):
        """true | false | ( expr ) | value = value."""
        kind = self.peek()
        if kind == "TRUE":
            self.take()
            return ("true",)
        if kind == "FALSE":
            self.take()
            return ("false",)
        if kind == "LPAREN":
            self.take()
            inner = self.expr()
            self.take("RPAREN")
            return inner
        left = self.value()
        self.take("EQ")
        return ("eq", left, self.value())

    def value(self):
        """field "name" | "literal"."""
        if self.peek() == "FIELD":
            self.take()
            return ("field", self.take("IDENT")[1])
        return ("literal", self.take("IDENT")[1])


def parse(text):
    """Parse an expression into a nested tuple tree; raises ExprError like xapi's parser."""
    parser = _Parser(tokenize(text))
    tree = parser.expr()
    parser.take("EOF")
    return tree


def evaluate(tree, lookup):
    """Evaluate a parsed expression; ``lookup(column)`` gives a row's DB string for a field."""
    op = tree[0]
    if op == "true":
        return True
    if op == "false":
        return False
    if op == "not":
        return not evaluate(tree[1], lookup)
    if op == "and":
        return evaluate(tree[1], lookup) and evaluate(tree[2], lookup)
    if op == "or":
        return evaluate(tree[1], lookup) or evaluate(tree[2], lookup)

    def side(value):
        return value[1] if value[0] == "literal" else lookup(value[1])
    return side(tree[1]) == side(tree[2])
