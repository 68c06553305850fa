# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""An httpx transport that calls the simulator in-process and turns the
injected network faults into the exceptions a real connection raises:
a dropped connection into ``httpx.RemoteProtocolError`` and a delay longer
than the client's read timeout into ``httpx.ReadTimeout``."""
import httpx

from . import app as app_module


class SimulatorTransport(httpx.BaseTransport):

    def __init__(self, simulator):
        self.simulator = simulator
        self._inner = httpx.WSGITransport(app=simulator,
            remote_addr='127.0.0.1')

    def handle_request(self, request):
        timeout = (request.extensions.get('timeout') or {}).get('read')
        local = app_module._client_timeout
        local.value = timeout
        local.expired = False
        try:
            return self._inner.handle_request(request)
        except app_module.DropConnection:
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.",
                request=request) from None
        except app_module.ClientTimedOut:
            raise httpx.ReadTimeout("timed out", request=request) from None
        finally:
            local.value = None
            local.expired = False
