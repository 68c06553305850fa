# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The exchange log: one entry per HTTP request, readable in-process and
written as JSON lines to a file when one is given.

An entry holds the method, path (no query string: pre-signed URLs carry
signatures there), status, operation, validation result, injected fault,
timestamps, duration, client address and the reference and KSeF numbers
involved.  Never a token, a key, a header value or a body.
"""
import copy
import json
import logging
import os
import threading
import time

from .state import iso

logger = logging.getLogger('trytond_ksef.simulator')


class ExchangeLog:

    def __init__(self, path=None):
        self.path = path
        if path:
            folder = os.path.dirname(os.path.abspath(path))
            os.makedirs(folder, exist_ok=True)
        self._entries = []
        self._lock = threading.Lock()

    def start(self, method, path, client, now):
        return {
            'time': iso(now),
            'method': method,
            'path': path,
            'client': client,
            }

    def finish(self, entry, started):
        entry['durationMs'] = round((time.monotonic() - started) * 1000, 1)
        logger.info("%s %s -> %s%s", entry['method'], entry['path'],
            entry.get('status'),
            ' (fault: %s)' % entry['fault'] if entry.get('fault') else '')
        with self._lock:
            self._entries.append(entry)
            if self.path:
                with open(self.path, 'a', encoding='utf-8') as f:
                    f.write(json.dumps(entry, ensure_ascii=False) + '\n')

    def entries(self):
        "A copy of all entries so far (oldest first)."
        with self._lock:
            return copy.deepcopy(self._entries)

    def clear(self):
        with self._lock:
            self._entries = []
