"""XML-RPC encoding the way xapi writes it (mirage/ocaml-rpc ``Xmlrpc``).

Strings go out as bare ``<value>text</value>`` (no ``<string>`` tag); Python ints become
``<i4>`` (xapi uses Int32 only for event.from ``valid_ref_counts``; API ints are already decimal
strings in our records); floats ``<double>%.16g</double>``; ``DateTime`` as
``<dateTime.iso8601>``. API results are wrapped in the Status/Value or Status/ErrorDescription
struct; XML-RPC ``<fault>`` is never used for API errors.
"""

import xmlrpc.client

_HEAD = '<?xml version="1.0"?><methodResponse><params><param>'
_TAIL = "</param></params></methodResponse>"


def escape(text):
    """Escape text for an XML element body."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def encode_value(value, out):
    """Append the ``<value>`` encoding of a Python value to the list ``out``."""
    if isinstance(value, str):
        out.append("<value>%s</value>" % escape(value))
    elif isinstance(value, bool):
        out.append("<value><boolean>%d</boolean></value>" % int(value))
    elif isinstance(value, int):
        out.append("<value><i4>%d</i4></value>" % value)
    elif isinstance(value, float):
        out.append("<value><double>%.16g</double></value>" % value)
    elif isinstance(value, dict):
        out.append("<value><struct>")
        for key, item in value.items():
            out.append("<member><name>%s</name>" % escape(str(key)))
            encode_value(item, out)
            out.append("</member>")
        out.append("</struct></value>")
    elif isinstance(value, (list, tuple)):
        out.append("<value><array><data>")
        for item in value:
            encode_value(item, out)
        out.append("</data></array></value>")
    elif isinstance(value, xmlrpc.client.DateTime):
        out.append("<value><dateTime.iso8601>%s</dateTime.iso8601></value>" % value.value)
    elif value is None:
        out.append("<value><nil/></value>")
    else:
        raise TypeError("cannot encode %r as XML-RPC" % (value,))


def success(value):
    """The xapi success envelope around a result value."""
    return {"Status": "Success", "Value": value}


def failure(details):
    """The xapi failure envelope; every ErrorDescription item is a string."""
    return {"Status": "Failure", "ErrorDescription": [str(d) for d in details]}


def response(value):
    """A complete methodResponse document (bytes) carrying ``value``."""
    out = [_HEAD]
    encode_value(value, out)
    out.append(_TAIL)
    return "".join(out).encode("utf-8")


def parse_call(body):
    """Decode a methodCall body into (method name, params tuple); raises ValueError if malformed."""
    try:
        params, method = xmlrpc.client.loads(body)
    except Exception as exc:  # ExpatError, ResponseError, ... all mean "not a valid call"
        raise ValueError("malformed XML-RPC call: %s" % exc)
    if not method:
        raise ValueError("malformed XML-RPC call: no methodName")
    return method, params
