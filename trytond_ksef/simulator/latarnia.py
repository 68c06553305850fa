# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The KSeF status service ("Latarnia", PROTOCOL.md §21), scripted.

Served at ``/latarnia/status`` and ``/latarnia/messages``.  Tests (or the
admin endpoint) announce failures, total failures and maintenance windows
and end them; the status follows the simulator's clock.  The service has
no published OpenAPI document: its responses are checked against
:data:`STATUS_SCHEMA` / :data:`MESSAGES_SCHEMA`, written from §21.
"""
import itertools
import threading
import uuid

import jsonschema

from .state import _aware, iso

CATEGORIES = ('FAILURE', 'TOTAL_FAILURE', 'MAINTENANCE')
STATUSES = ('AVAILABLE', 'MAINTENANCE', 'FAILURE', 'TOTAL_FAILURE')
_TIMESTAMP = {'type': 'string', 'format': 'date-time'}
MESSAGE_SCHEMA = {
    'type': 'object',
    'required': ['id', 'eventId', 'category', 'type', 'title', 'text',
        'start', 'end', 'version', 'published'],
    'properties': {
        'id': {'type': 'string'},
        'eventId': {'type': 'integer'},
        'category': {'enum': list(CATEGORIES)},
        'type': {'enum': ['FAILURE_START', 'FAILURE_END',
                'MAINTENANCE_ANNOUNCEMENT']},
        'title': {'type': 'string'},
        'text': {'type': 'string'},
        'start': _TIMESTAMP,
        'end': {'anyOf': [_TIMESTAMP, {'type': 'null'}]},
        'version': {'type': 'integer'},
        'published': _TIMESTAMP,
        },
    }
MESSAGES_SCHEMA = {'type': 'array', 'items': MESSAGE_SCHEMA}
STATUS_SCHEMA = {
    'type': 'object',
    'required': ['status'],
    'properties': {
        'status': {'enum': list(STATUSES)},
        'messages': MESSAGES_SCHEMA,
        },
    }


class LatarniaError(ValueError):
    def __init__(self, message, code='simulator_latarnia', params=None):
        super().__init__(message)
        self.code = code
        self.params = params or {}


class Latarnia:

    def __init__(self, clock):
        self.clock = clock
        self._events = {}       # eventId -> dict(category, start, end)
        self._messages = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def announce(self, category='FAILURE', start=None, end=None,
            title=None, text=None):
        """Announce an event starting at `start` (default now); `end` may be
        known already (maintenance) or set later with :meth:`end`.
        Returns the eventId."""
        if category not in CATEGORIES:
            raise LatarniaError("unknown category %r" % category,
                params={'category': category})
        now = self.clock.now()
        start = _aware(start) if start is not None else now
        end = _aware(end) if end is not None else None
        with self._lock:
            event_id = next(self._ids)
            self._events[event_id] = {
                'category': category, 'start': start, 'end': end,
                'version': 1}
            kind = ('MAINTENANCE_ANNOUNCEMENT' if category == 'MAINTENANCE'
                else 'FAILURE_START')
            default_title = {
                'FAILURE': "Awaria KSeF",
                'TOTAL_FAILURE': "Awaria całkowita KSeF",
                'MAINTENANCE': "Prace serwisowe KSeF",
                }[category]
            self._publish(event_id, kind, title or default_title,
                text or default_title, now)
        return event_id

    def end(self, event_id, end=None):
        "Publish the end of an event (FAILURE_END)."
        now = self.clock.now()
        with self._lock:
            event = self._events.get(event_id)
            if event is None:
                raise LatarniaError("unknown event %s" % event_id,
                    params={'event': event_id})
            event['end'] = _aware(end) if end is not None else now
            event['version'] += 1
            title = next((m['title'] for m in reversed(self._messages)
                    if m['eventId'] == event_id), "")
            self._publish(event_id, 'FAILURE_END', "Koniec: " + title,
                "Zdarzenie zakończone.", now)

    def clear(self):
        with self._lock:
            self._events.clear()
            self._messages = []

    def _publish(self, event_id, kind, title, text, now):
        event = self._events[event_id]
        self._messages.append({
            'id': str(uuid.uuid4()),
            'eventId': event_id,
            'category': event['category'],
            'type': kind,
            'title': title,
            'text': text,
            'start': iso(event['start']),
            'end': iso(event['end']),
            'version': event['version'],
            'published': iso(now),
            })

    def _active(self, now):
        active = []
        for event_id, event in self._events.items():
            if event['start'] <= now and (
                    event['end'] is None or now < event['end']):
                active.append((event_id, event))
        return active

    def status(self):
        now = self.clock.now()
        with self._lock:
            active = self._active(now)
            categories = {e['category'] for _, e in active}
            for name in ('TOTAL_FAILURE', 'FAILURE', 'MAINTENANCE'):
                if name in categories:
                    value = name
                    break
            else:
                value = 'AVAILABLE'
            ids = {event_id for event_id, _ in active}
            messages = [m for m in self._messages if m['eventId'] in ids]
        body = {'status': value, 'messages': messages}
        jsonschema.validate(body, STATUS_SCHEMA)
        return body

    def messages(self):
        with self._lock:
            body = list(self._messages)
        jsonschema.validate(body, MESSAGES_SCHEMA)
        return body
