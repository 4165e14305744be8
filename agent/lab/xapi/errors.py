"""The API error the simulator raises, carrying xapi's ErrorDescription list."""


class XapiError(Exception):
    """An XAPI failure: ``details`` is ``[CODE, param, ...]`` exactly as sent on the wire."""

    def __init__(self, code, *params):
        Exception.__init__(self, code, *params)
        self.details = [str(code)] + [str(p) for p in params]

    def __str__(self):
        return str(self.details)


class Disconnect(Exception):
    """The simulated xapi went away mid-call: the connection is dropped without a reply."""
