"""xapi's Localdb file (/var/lib/xcp/local.db): host-local key/value pairs, in xapi's format.

Format established from xen-api ``ocaml/xapi/localdb.ml`` (``flush`` writes
``Hashtbl_xml.to_xml db`` to ``Xapi_globs.local_database``) and ``ocaml/xapi/hashtbl_xml.ml``
(``Xmlm.output (`Dtd None)`` then the tree ``<config>`` of ``<row key=".." value=".."/>``), with
Xmlm's defaults (``decl = true``, no indent, no trailing newline; empty elements as ``/>``;
attribute values escape ``< > & "``)::

    <?xml version="1.0" encoding="UTF-8"?>
    <config><row key="host_auto_enable" value="false"/></config>

Keys of interest (``ocaml/xapi-consts/constants.ml``): ``host_auto_enable`` (written "false" by
``host.disable(host, false)``, "true" by ``host.enable``) and ``host_disabled_until_reboot``.
"""

import os
import xml.etree.ElementTree as ElementTree

HOST_AUTO_ENABLE = "host_auto_enable"
HOST_DISABLED_UNTIL_REBOOT = "host_disabled_until_reboot"


def _attr(text):
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def render(values):
    """The file content for a {key: value} dict (keys sorted; xapi's order is a hash order)."""
    rows = "".join('<row key="%s" value="%s"/>' % (_attr(k), _attr(v))
                   for k, v in sorted(values.items()))
    return '<?xml version="1.0" encoding="UTF-8"?>\n<config>%s</config>' % rows


def write(path, values):
    """Atomically replace the local.db at ``path`` with ``values``."""
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        handle.write(render(values))
    os.rename(tmp, path)


def read(path):
    """Parse a local.db file into a {key: value} dict; {} when the file does not exist."""
    try:
        tree = ElementTree.parse(path)
    except (IOError, OSError):
        return {}
    root = tree.getroot()
    if root.tag != "config":
        raise ValueError("%s: root element is <%s>, expected <config>" % (path, root.tag))
    return dict((row.get("key"), row.get("value")) for row in root.iter("row"))
