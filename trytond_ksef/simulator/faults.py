# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Fault injection: what KSeF (or the network to it) does on a bad day.

A :class:`Fault` matches requests by HTTP method and a regular expression
searched in the path (``/v2/...``, ``/latarnia/...``, ``/storage/...``);
without a path it matches every request except the ``/_sim``
administration (so a path-less outage also takes the status service down:
use ``path='^/v2/'`` for "KSeF down, Latarnia up").  It fires `times`
times (one-shot by default) or for ever (``times=None`` or
``persistent=True``).

A refused connection proper needs the listening socket closed: stop the
server (``RunningServer.stop()``) or the process.  ``mode='drop'`` closes
each matching connection without an answer instead, which clients see as a
reset connection (httpx.RemoteProtocolError).

Kinds:

``outage``
    KSeF is down: answer ``status`` (default 503, a Problem Details body)
    before doing anything, or with ``mode='drop'`` close the connection
    without a response (what a client sees as a refused or reset
    connection).
``delay``
    Wait ``delay`` seconds before handling the request (beyond the client's
    timeout, this is a timeout); then answer normally, or with
    ``mode='drop'`` drop the connection.
``drop_after_accept``
    Handle the request completely (an invoice is accepted and stored), then
    lose the answer: ``mode='drop'`` (default) closes the connection,
    ``mode='status'`` answers ``status`` (default 502) instead.
``expired_token``
    Requests carrying a Bearer token get 401 as if the token had expired.
``session_closed``
    KSeF closes the session named in the path (as after its 12 h) just
    before handling the request, which then meets a closed session.
``reject_invoice``
    The next invoice sent online (the send request matching ``path``) is
    taken for processing and then refused with invoice status ``status``
    (default 430, file verification error): a technical refusal on
    demand, e.g. to exercise a technical correction.  The same document
    sent again is processed normally.
``hostile_xml``
    A successful answer (a UPO, a status...) is replaced by a hostile XML
    body: ``mode`` is the variant of :mod:`.hostile` (external entities
    reading ``target``, a file or a URL; entity expansion; deep nesting; a
    ``huge`` body of ``size`` bytes streamed without length).
"""
import itertools
import re
import threading
from dataclasses import asdict, dataclass, field

KINDS = ('outage', 'delay', 'drop_after_accept', 'expired_token',
    'session_closed', 'reject_invoice', 'hostile_xml')
MODES = ('status', 'drop')
# hostile_xml takes a variant of .hostile as its mode
HOSTILE_MODES = ('xxe_file', 'xxe_http', 'xxe_parameter', 'external_dtd',
    'billion_laughs', 'quadratic', 'deep', 'huge')
_ids = itertools.count(1)


class FaultError(ValueError):
    "An invalid fault definition (bad kind, mode or pattern)."

    def __init__(self, message, code='simulator_invalid_fault', params=None):
        super().__init__(message)
        self.code = code
        self.params = params or {}


@dataclass
class Fault:
    kind: str
    path: str = None
    method: str = None
    times: int = 1
    status: int = None
    delay: float = 0.0
    mode: str = None
    id: int = field(default_factory=lambda: next(_ids))
    hits: int = 0
    target: str = None
    size: int = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise FaultError("unknown fault kind %r" % self.kind,
                params={'kind': self.kind})
        if self.mode is None:
            self.mode = 'drop' if self.kind == 'drop_after_accept' else (
                'status' if self.kind == 'outage' else None)
        modes = HOSTILE_MODES if self.kind == 'hostile_xml' else MODES
        if self.kind == 'hostile_xml' and self.mode is None:
            raise FaultError("a hostile_xml fault needs a mode (%s)"
                % ', '.join(HOSTILE_MODES))
        if (self.kind == 'hostile_xml' and not self.target
                and self.mode in ('xxe_http', 'xxe_parameter',
                    'external_dtd')):
            raise FaultError("the %s variant needs a target URL"
                % self.mode)
        if self.mode is not None and self.mode not in modes:
            raise FaultError("unknown fault mode %r" % self.mode,
                params={'mode': self.mode})
        if self.status is None:
            self.status = {'outage': 503, 'drop_after_accept': 502,
                'expired_token': 401, 'reject_invoice': 430}.get(self.kind)
        if self.method:
            self.method = self.method.upper()
        if self.times is not None and self.times < 1:
            raise FaultError("times must be at least 1 or None")
        try:
            self._regex = re.compile(self.path) if self.path else None
        except re.error as exc:
            raise FaultError("bad path pattern: %s" % exc,
                params={'path': self.path}) from None

    def matches(self, method, path):
        if self.method and self.method != method.upper():
            return False
        if self._regex is not None and not self._regex.search(path):
            return False
        return True

    @property
    def exhausted(self):
        return self.times is not None and self.hits >= self.times

    def as_json(self):
        value = asdict(self)
        value.pop('_regex', None)
        value['persistent'] = self.times is None
        return value


class Faults:
    "The active fault rules of one simulator (thread-safe)."

    def __init__(self):
        self._rules = []
        self._lock = threading.Lock()

    def add(self, kind, path=None, method=None, times=1, status=None,
            delay=0.0, mode=None, persistent=False, target=None,
            size=None):
        """Add a rule and return it.  `persistent=True` is ``times=None``.
        Example: ``faults.add('outage', path=r'/sessions/online$',
        method='POST', mode='drop')``."""
        fault = Fault(kind, path=path, method=method,
            times=None if persistent else times, status=status,
            delay=float(delay or 0), mode=mode, target=target,
            size=int(size) if size else None)
        with self._lock:
            self._rules.append(fault)
        return fault

    def add_json(self, data):
        "Add a rule from the admin endpoint's JSON object."
        if not isinstance(data, dict):
            raise FaultError("a fault is a JSON object")
        allowed = {'kind', 'path', 'method', 'times', 'status', 'delay',
            'mode', 'persistent', 'target', 'size'}
        unknown = set(data) - allowed
        if unknown:
            raise FaultError("unknown fault fields: %s"
                % ', '.join(sorted(unknown)))
        if 'kind' not in data:
            raise FaultError("a fault needs a kind")
        return self.add(**data)

    def remove(self, fault_id):
        with self._lock:
            before = len(self._rules)
            self._rules = [f for f in self._rules if f.id != fault_id]
            return len(self._rules) != before

    def clear(self):
        with self._lock:
            self._rules = []

    def list(self):
        with self._lock:
            return list(self._rules)

    def take(self, kind, method, path):
        """Return the first live rule of `kind` matching the request and
        count the hit (one-shot rules are then spent)."""
        with self._lock:
            for fault in self._rules:
                if fault.kind == kind and not fault.exhausted \
                        and fault.matches(method, path):
                    fault.hits += 1
                    if fault.exhausted:
                        self._rules.remove(fault)
                    return fault
        return None
