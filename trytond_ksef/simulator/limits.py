# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Request rate limits (PROTOCOL.md §16, open-api ``x-rate-limits``).

Counted per group of operations (``onlineSession``, ``invoiceSend``,
``other``... as the spec names them; an operation without a group on its
own) and per (context, client IP) pair — per client IP for unauthenticated
endpoints — in sliding windows of one second, one minute and one hour, all
thresholds at once.  The values are those of the spec (TEST = PRD since
2.5.0).  The caller builds the key (see the simulator's application).

`time_scale` shrinks the windows for tests: with ``time_scale=0.001`` a
second lasts 1 ms, a minute 60 ms and an hour 3.6 s.  ``Retry-After`` is
given in real seconds (rounded up, at least 1), i.e. what the client must
actually wait; KSeF's escalation on repeated excess is not simulated.
"""
import collections
import math
import threading
import time

WINDOWS = (('perSecond', 1), ('perMinute', 60), ('perHour', 3600))


class RateLimiter:

    def __init__(self, time_scale=1.0, enabled=True, monotonic=None):
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.time_scale = time_scale
        self.enabled = enabled
        self._monotonic = monotonic or time.monotonic
        self._hits = collections.defaultdict(collections.deque)
        self._lock = threading.Lock()

    def _now(self):
        "Current time in simulated seconds."
        return self._monotonic() / self.time_scale

    def hit(self, key, limits):
        """Count a request under `key` against `limits` (an x-rate-limits
        dict).  Return None when allowed, else the real seconds to wait."""
        if not self.enabled or not limits:
            return None
        windows = [(limits[name], length) for name, length in WINDOWS
            if limits.get(name)]
        if not windows:
            return None
        longest = max(length for _, length in windows)
        with self._lock:
            now = self._now()
            hits = self._hits[key]
            while hits and hits[0] <= now - longest:
                hits.popleft()
            wait = 0.0
            for limit, length in windows:
                inside = [t for t in hits if t > now - length]
                if len(inside) >= limit:
                    # the window frees a place when its oldest hit leaves
                    wait = max(wait, inside[-limit] + length - now)
            if wait > 0:
                return wait * self.time_scale
            hits.append(now)
            return None

    def reset(self):
        with self._lock:
            self._hits.clear()


def retry_after_header(seconds):
    return str(max(1, int(math.ceil(seconds))))
