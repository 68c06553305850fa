# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Deadlines to send offline invoices to KSeF (PROTOCOL.md §12).

All values are calendar dates in Poland (Europe/Warsaw): the caller turns
timestamps (e.g. of status-service announcements, PROTOCOL.md §21) into
Polish dates first.  A deadline is the last day on which the invoice may
still be sent; the whole of that day, Polish time, counts.

Business days are Monday to Friday except Polish public holidays (ustawa
o dniach wolnych od pracy), taken from the `holidays` library, which knows
the movable feasts and 24 December (a public holiday since 2025).
Saturdays are not business days, as in the tax ordinance (art. 12 § 5
Ordynacji podatkowej).  The KSeF documentation does not define the
calendar [DOCS SILENT]; this is the reading of Polish tax law.
"""
import datetime
import functools
from zoneinfo import ZoneInfo

import holidays

TIMEZONE = 'Europe/Warsaw'
OFFLINE24 = 'offline24'
OFFLINE = 'offline'
FAILURE = 'failure'
TOTAL_FAILURE = 'total_failure'
MODES = (OFFLINE24, OFFLINE, FAILURE, TOTAL_FAILURE)
FAILURE_BUSINESS_DAYS = 7
# 24 December is a public holiday from 2025 (Dz.U. 2024 poz. 1965);
# `holidays` knows it since version 0.64.
CHRISTMAS_EVE_FROM = 2025


def polish_date(moment):
    """The calendar day in Poland (Europe/Warsaw) of `moment`, a naive UTC
    datetime (as databases store them) or an aware one; None stays None."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(ZoneInfo(TIMEZONE)).date()


def polish_today():
    "Today's calendar day in Poland."
    return polish_date(datetime.datetime.now(datetime.timezone.utc))


class DeadlineError(ValueError):
    "Inconsistent data for a deadline (mode, periods, calendar)."

    def __init__(self, code, message, **params):
        super().__init__(message)
        self.code = code
        self.params = params


def _check_date(value, name):
    if (not isinstance(value, datetime.date)
            or isinstance(value, datetime.datetime)):
        raise TypeError(
            "%s must be a date (the Polish calendar day), not %r"
            % (name, type(value).__name__))
    return value


@functools.lru_cache(maxsize=64)
def _public_holidays(year):
    days = frozenset(holidays.country_holidays('PL', years=year))
    if (year >= CHRISTMAS_EVE_FROM
            and datetime.date(year, 12, 24) not in days):
        # An outdated library would silently give wrong deadlines.
        raise DeadlineError(
            'holidays_outdated',
            "the installed 'holidays' library does not know that "
            "24 December is a public holiday in Poland from 2025; "
            "upgrade it (0.64 or later)", year=year)
    return days


def is_business_day(day):
    "Tell whether `day` is a Polish business day (Mon-Fri, no holiday)."
    _check_date(day, 'day')
    return day.weekday() < 5 and day not in _public_holidays(day.year)


def add_business_days(day, count):
    """Return the `count`-th business day after `day`; `day` itself never
    counts, as a time limit runs from the day after the event (art. 12
    § 1 Ordynacji podatkowej).  `count` 0 returns `day`."""
    _check_date(day, 'day')
    if count < 0:
        raise ValueError("count must not be negative")
    while count:
        day += datetime.timedelta(days=1)
        if is_business_day(day):
            count -= 1
    return day


def _period(value):
    try:
        start, end = value
    except (TypeError, ValueError):
        raise TypeError("a period is a (start, end) pair") from None
    _check_date(start, 'start')
    if end is not None:
        _check_date(end, 'end')
        if end < start:
            raise DeadlineError(
                'deadline_invalid_period',
                "a period cannot end (%s) before it starts (%s)"
                % (end, start), start=start.isoformat(),
                end=end.isoformat())
    return start, end


def _covers(period, day):
    start, end = period
    return start <= day and (end is None or day <= end)


def send_deadline(mode, issued_on, failures=(), unavailability=None):
    """Return the last day (Polish time, whole day) to send an invoice
    issued in `mode` on `issued_on`, or None when no date applies.

    `failures` are the announced KSeF failures (awaria; status-service
    category FAILURE) as (start, end) pairs of dates, `end` None while a
    failure is ongoing.  `mode` is one of:

    'offline24', PROTOCOL.md §12: "by the next business day after the
    issue date" (tryby-offline.md: "do następnego dnia roboczego po dacie
    wystawienia").

    'offline', KSeF unavailability (niedostępność): "by the next business
    day after the unavailability ends" ("do następnego dnia roboczego po
    zakończeniu niedostępności").  The unavailability is the
    `unavailability` period, or else the first period of `failures`
    covering the issue date, which then counts as the unavailability only.
    While it is ongoing the deadline is unknown: None.

    'failure', announced failure (tryb awaryjny): "within 7 business days
    after the failure ends" ("do 7 dni rob. od zakończenia awarii"); the
    failure is the period of `failures` covering the issue date.  While it
    is ongoing: None.

    'total_failure', PROTOCOL.md §12: "no obligation to send"; always
    None.  "Announcing a total failure during any mode removes the
    obligation to send": the caller then passes this mode.

    In every mode a further failure moves the deadline, PROTOCOL.md §12:
    "If a failure is announced while an offline24/offline invoice is
    waiting, its deadline moves to 7 business days from the end of the
    last announced failure.  In awaryjny mode a new failure announcement
    restarts the 7-day count from the end of that new failure."  A
    failure counts when it starts on or before the deadline so far (the
    deadline day is included) and ends after the issue date; one still
    ongoing gives None.  With dates only, a failure that ended on the
    issue date cannot be told to have ended before or after the invoice
    was issued; it is ignored, which keeps the earlier, safe deadline.
    Overlapping announcements count as one failure lasting until the
    latest end.
    """
    if mode not in MODES:
        raise DeadlineError(
            'deadline_unknown_mode',
            "unknown offline mode %r (expected %s)"
            % (mode, ', '.join(MODES)), mode=str(mode))
    _check_date(issued_on, 'issued_on')
    periods = sorted(
        (_period(p) for p in failures),
        key=lambda p: (p[0], p[1] is None, p[1]))
    if mode == TOTAL_FAILURE:
        return None
    if mode == OFFLINE24:
        deadline = add_business_days(issued_on, 1)
    elif mode == OFFLINE:
        if unavailability is not None:
            unavailability = _period(unavailability)
        else:
            unavailability = next(
                (p for p in periods if _covers(p, issued_on)), None)
            if unavailability is not None:
                periods.remove(unavailability)
        if unavailability is None or not _covers(unavailability, issued_on):
            raise DeadlineError(
                'deadline_no_unavailability',
                "no KSeF unavailability covers the issue date %s"
                % issued_on, issued_on=issued_on.isoformat())
        if unavailability[1] is None:
            return None
        deadline = add_business_days(unavailability[1], 1)
    else:
        failure = next(
            (p for p in periods if _covers(p, issued_on)), None)
        if failure is None:
            raise DeadlineError(
                'deadline_no_failure',
                "no announced KSeF failure covers the issue date %s"
                % issued_on, issued_on=issued_on.isoformat())
        if failure[1] is None:
            return None
        deadline = add_business_days(failure[1], FAILURE_BUSINESS_DAYS)
    return _moved_by_failures(deadline, issued_on, periods)


def _moved_by_failures(deadline, issued_on, periods):
    # `periods` is sorted by start and the deadline only grows, so once a
    # failure starts after the deadline, every later one does too.
    for start, end in periods:
        if start > deadline:
            break
        if end is None:
            return None
        if end <= issued_on:
            continue
        deadline = max(
            deadline, add_business_days(end, FAILURE_BUSINESS_DAYS))
    return deadline
