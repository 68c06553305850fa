# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""KSeF simulator: a strict stand-in for KSeF 2.0 on loopback.

In-process (fast tests)::

    sim = Simulator(processing_delay=0.02)
    client = httpx.Client(transport=sim.transport(),
        base_url='http://ksef.test/v2')
    # or httpx.WSGITransport(app=sim): same, but injected drops/timeouts
    # surface as DropConnection / ClientTimedOut instead of httpx errors

Over real HTTP::

    server = serve_in_thread(port=0)      # .base_url .root_url .stop()

Command line: ``trytond-ksef simulator --port 8765 [--host 127.0.0.1]
[--log FILE] [--processing-delay S] [--time-scale X] [--no-rate-limits]``.

Served paths: the KSeF API under ``/v2`` (same paths as TEST), the status
service at ``/latarnia/status`` and ``/latarnia/messages``, pre-signed
storage URLs under ``/storage`` and the test administration under ``/_sim``
(``health``, ``log``, ``faults``, ``clock``, ``keys/rotate``,
``ksef-tokens``, ``tokens/expire``, ``sessions/<ref>/close``,
``latarnia``, ``contract-violations``, ``auth`` and
``auth/<ref>/document``: the signed AuthTokenRequest as received).

Test controls on a :class:`Simulator`: ``faults`` (:mod:`.faults`),
``clock`` (:class:`Clock`), ``latarnia`` (:mod:`.latarnia`), ``log``
(:mod:`.log`), ``rotate_key()``, ``create_ksef_token()``,
``expire_access_tokens()``, ``close_session()``, ``contract_violations``
and ``check()``.  :mod:`.testing` has step-by-step client helpers.
"""
import logging
import signal
import sys
import threading

from .app import ContractViolation, DropConnection, Simulator
from .faults import Fault, FaultError, Faults
from .server import RunningServer, serve_in_thread
from .state import Clock

__all__ = ['Simulator', 'Clock', 'Fault', 'Faults', 'FaultError',
    'ContractViolation', 'DropConnection', 'RunningServer',
    'serve_in_thread', 'configure_parser', 'run']


def configure_parser(parser):
    parser.add_argument('--port', type=int, default=8765,
        help="TCP port (0: any free port; default 8765)")
    parser.add_argument('--host', default='127.0.0.1',
        help="address to listen on (default 127.0.0.1)")
    parser.add_argument('--log', metavar='FILE',
        help="append the exchange log to FILE as JSON lines")
    parser.add_argument('--processing-delay', type=float, default=0.5,
        metavar='SECONDS',
        help="how long invoices and sessions stay in progress (0.5)")
    parser.add_argument('--time-scale', type=float, default=1.0,
        help="scale of rate-limit windows (0.001: an hour lasts 3.6 s)")
    parser.add_argument('--no-rate-limits', action='store_true',
        help="do not enforce KSeF's request rate limits")
    parser.add_argument('--verbose', action='store_true',
        help="log every request on stderr")


def run(args):
    logging.basicConfig(level=logging.INFO if args.verbose
        else logging.WARNING, format='%(asctime)s %(levelname)s %(message)s')
    simulator = Simulator(log_path=args.log,
        processing_delay=args.processing_delay,
        time_scale=args.time_scale,
        rate_limits=not args.no_rate_limits)
    try:
        server = RunningServer(simulator, args.host, args.port)
    except OSError as exc:
        print("cannot listen on %s:%s: %s" % (args.host, args.port,
                exc.strerror or exc), file=sys.stderr)
        return 1
    stop = threading.Event()

    def _stop(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server.start()
    print("KSeF simulator listening on %s" % server.base_url, flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    print("KSeF simulator stopped", flush=True)
    return 0
