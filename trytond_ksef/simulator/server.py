# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""A real, threaded HTTP server for the simulator (werkzeug)."""
import logging
import socket
import threading

from werkzeug.serving import WSGIRequestHandler, make_server

from .app import DropConnection, Simulator

logger = logging.getLogger('trytond_ksef.simulator')


class _Handler(WSGIRequestHandler):
    "Closes the socket, without an answer, on DropConnection."

    def connection_dropped(self, error, environ=None):
        if isinstance(error, DropConnection):
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def log_request(self, code='-', size='-'):
        # The exchange log records every request; keep stderr quiet.
        pass


class RunningServer:
    """A simulator served on loopback in a background thread.

    ``base_url`` is the KSeF API root (``http://127.0.0.1:PORT/v2``),
    ``root_url`` the server root (``/latarnia``, ``/_sim`` live there).
    """

    def __init__(self, simulator, host='127.0.0.1', port=0):
        self.simulator = simulator
        self._server = make_server(host, port, simulator, threaded=True,
            request_handler=_Handler)
        self._server.daemon_threads = True
        self.host = host
        self.port = self._server.socket.getsockname()[1]
        self.root_url = 'http://%s:%d' % (host, self.port)
        self.base_url = self.root_url + '/v2'
        self.latarnia_url = self.root_url + '/latarnia'
        self.admin_url = self.root_url + '/_sim'
        self._thread = None

    def start(self):
        self._thread = threading.Thread(target=self._server.serve_forever,
            name='ksef-simulator-%d' % self.port, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self):
        self._server.serve_forever()

    def stop(self):
        "Stop accepting requests and close the listening socket."
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def serve_in_thread(port=0, host='127.0.0.1', simulator=None, **kwargs):
    """Start a simulator on `host`:`port` (0: a free port) in a thread and
    return the :class:`RunningServer` (``.base_url``, ``.simulator``,
    ``.stop()``; usable as a context manager).  `kwargs` go to
    :class:`Simulator` when no `simulator` is given."""
    if simulator is None:
        simulator = Simulator(**kwargs)
    return RunningServer(simulator, host, port).start()
