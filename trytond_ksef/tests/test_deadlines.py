# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
import datetime
import unittest
from unittest import mock

import holidays

from trytond_ksef import deadlines
from trytond_ksef.deadlines import DeadlineError

add_business_days = deadlines.add_business_days
is_business_day = deadlines.is_business_day
send_deadline = deadlines.send_deadline


def d(text):
    return datetime.date.fromisoformat(text)


class CalendarTest(unittest.TestCase):

    def test_holidays_library_knows_christmas_eve(self):
        "Guard: 24 December is a public holiday in Poland from 2025."
        for year in (2025, 2026, 2030):
            with self.subTest(year=year):
                self.assertIn(
                    datetime.date(year, 12, 24),
                    holidays.country_holidays('PL', years=year))
        self.assertNotIn(
            datetime.date(2024, 12, 24),
            holidays.country_holidays('PL', years=2024))

    def test_business_days(self):
        table = [
            ('2025-07-11', True),    # Friday
            ('2025-07-12', False),   # Saturday
            ('2025-07-13', False),   # Sunday
            ('2025-01-01', False),   # New Year
            ('2025-01-06', False),   # Epiphany
            ('2025-04-18', True),    # Good Friday is a working day
            ('2025-04-21', False),   # Easter Monday
            ('2026-04-06', False),   # Easter Monday
            ('2025-05-01', False),
            ('2025-05-02', True),
            ('2026-05-01', False),
            ('2025-06-19', False),   # Corpus Christi
            ('2026-06-04', False),   # Corpus Christi
            ('2025-08-15', False),
            ('2025-11-11', False),
            ('2024-12-24', True),    # before the 2025 law
            ('2025-12-23', True),
            ('2025-12-24', False),
            ('2025-12-25', False),
            ('2025-12-26', False),
            ('2026-12-24', False),
            ('2025-12-31', True),
            ]
        for day, expected in table:
            with self.subTest(day=day):
                self.assertIs(is_business_day(d(day)), expected)

    def test_add_business_days(self):
        table = [
            ('2025-07-11', 0, '2025-07-11'),
            ('2025-07-11', 1, '2025-07-14'),
            ('2025-07-12', 7, '2025-07-22'),  # doc example
            ('2025-04-17', 2, '2025-04-22'),  # over Easter
            ('2025-12-22', 7, '2026-01-07'),  # Christmas, NY, Epiphany
            ]
        for day, count, expected in table:
            with self.subTest(day=day, count=count):
                self.assertEqual(add_business_days(d(day), count),
                    d(expected))
        with self.assertRaises(ValueError):
            add_business_days(d('2025-07-11'), -1)

    def test_datetime_refused(self):
        with self.assertRaises(TypeError):
            is_business_day(datetime.datetime(2025, 7, 11, 12))
        with self.assertRaises(TypeError):
            send_deadline('offline24', datetime.datetime(2025, 7, 11, 12))

    def test_outdated_library_is_refused(self):
        original = holidays.country_holidays

        def without_christmas_eve(country, years):
            return {day: name
                for day, name in original(country, years=years).items()
                if (day.month, day.day) != (12, 24)}
        deadlines._public_holidays.cache_clear()
        try:
            with mock.patch.object(deadlines.holidays, 'country_holidays',
                    without_christmas_eve):
                self.assertTrue(is_business_day(d('2024-12-23')))
                with self.assertRaises(DeadlineError) as context:
                    is_business_day(d('2025-12-23'))
                self.assertEqual(context.exception.code, 'holidays_outdated')
        finally:
            deadlines._public_holidays.cache_clear()

    def test_polish_date(self):
        "Timestamps become Polish calendar days"
        utc = datetime.timezone.utc
        naive = datetime.datetime.fromisoformat  # naive UTC, as stored
        for moment, expected in [
                (naive('2025-07-07T21:59:59'), '2025-07-07'),  # CEST
                (naive('2025-07-07T22:00:00'), '2025-07-08'),
                (naive('2025-01-07T22:59:59'), '2025-01-07'),  # CET
                (naive('2025-01-07T23:00:00'), '2025-01-08'),
                (datetime.datetime(2025, 7, 7, 22, 30, tzinfo=utc),
                    '2025-07-08'),
                ]:
            with self.subTest(moment=moment):
                self.assertEqual(deadlines.polish_date(moment),
                    datetime.date.fromisoformat(expected))
        self.assertIsNone(deadlines.polish_date(None))
        self.assertEqual(deadlines.polish_today(), deadlines.polish_date(
                datetime.datetime.now(utc)))


class SendDeadlineTest(unittest.TestCase):

    def test_table(self):
        # (mode, issued on, failures, expected deadline or None)
        doc_failure = [(d('2025-07-09'), d('2025-07-12'))]
        table = [
            # offline24: next business day after the issue date
            ('offline24', '2025-07-09', [], '2025-07-10'),
            ('offline24', '2025-07-11', [], '2025-07-14'),   # weekend
            ('offline24', '2025-07-12', [], '2025-07-14'),   # on Saturday
            ('offline24', '2025-04-18', [], '2025-04-22'),   # Easter Mon
            ('offline24', '2026-04-03', [], '2026-04-07'),   # Easter Mon
            ('offline24', '2025-04-30', [], '2025-05-02'),   # 1 May
            ('offline24', '2025-05-02', [], '2025-05-05'),   # 3 May Sat
            ('offline24', '2026-04-30', [], '2026-05-04'),   # 1 May Fri
            ('offline24', '2025-06-18', [], '2025-06-20'),   # Corpus C.
            ('offline24', '2026-06-03', [], '2026-06-05'),   # Corpus C.
            ('offline24', '2025-12-23', [], '2025-12-29'),   # 24-26 Dec
            ('offline24', '2026-12-23', [], '2026-12-28'),   # 24-26 Dec
            ('offline24', '2024-12-23', [], '2024-12-24'),   # before law
            ('offline24', '2025-12-31', [], '2026-01-02'),   # New Year
            ('offline24', '2026-01-05', [], '2026-01-07'),   # Epiphany
            # tryby-offline.md example: issued 2025-07-08, due 07-09, a
            # failure announced on 07-09 ends Saturday 07-12 -> due Tuesday
            # 2025-07-22.  (The document calls 07-08 a Wednesday and 07-09
            # a Thursday; they are Tuesday and Wednesday, which does not
            # change the result.)
            ('offline24', '2025-07-08', doc_failure, '2025-07-22'),
            # a failure that ended before the issue date is irrelevant
            ('offline24', '2025-07-15', doc_failure, '2025-07-16'),
            # one that ended on the issue date is ignored (safe side)
            ('offline24', '2025-07-12', doc_failure, '2025-07-14'),
            # (the example itself shows that a failure starting on the
            # deadline day still moves it); one starting the day after
            # the deadline does not
            ('offline24', '2025-07-07', doc_failure, '2025-07-08'),
            ('offline24', '2025-07-04', doc_failure, '2025-07-07'),
            # a failure ongoing at the issue date
            ('offline24', '2025-07-10', doc_failure, '2025-07-22'),
            # failure mode: 7 business days after the failure ends
            ('failure', '2025-07-10', doc_failure, '2025-07-22'),
            ('failure', '2025-07-12', doc_failure, '2025-07-22'),
            ('failure', '2025-04-16',
                [(d('2025-04-15'), d('2025-04-17'))], '2025-04-29'),
            ('failure', '2025-12-22',
                [(d('2025-12-22'), d('2025-12-22'))], '2026-01-07'),
            # a second announcement within the 7 days restarts the count
            ('failure', '2025-07-10',
                doc_failure + [(d('2025-07-18'), d('2025-07-21'))],
                '2025-07-30'),
            # ... also on the last day
            ('failure', '2025-07-10',
                doc_failure + [(d('2025-07-22'), d('2025-07-22'))],
                '2025-07-31'),
            # ... but not after the deadline
            ('failure', '2025-07-10',
                doc_failure + [(d('2025-07-23'), d('2025-07-24'))],
                '2025-07-22'),
            # chained: each announcement falls within the previous count
            ('offline24', '2025-07-08',
                [(d('2025-07-22'), d('2025-07-23')),
                    (d('2025-07-09'), d('2025-07-12')),
                    (d('2025-08-01'), d('2025-08-01'))],
                '2025-08-12'),
            # overlapping announcements: the latest end counts
            ('failure', '2025-07-10',
                doc_failure + [(d('2025-07-10'), d('2025-07-11'))],
                '2025-07-22'),
            # ongoing failures: no date yet
            ('offline24', '2025-07-08', [(d('2025-07-09'), None)], None),
            ('failure', '2025-07-10', [(d('2025-07-09'), None)], None),
            ('failure', '2025-07-10',
                doc_failure + [(d('2025-07-15'), None)], None),
            # total failure: no obligation to send
            ('total_failure', '2025-07-10', [], None),
            ('total_failure', '2025-07-10', doc_failure, None),
            ]
        for mode, issued_on, failures, expected in table:
            with self.subTest(mode=mode, issued_on=issued_on,
                    failures=failures):
                self.assertEqual(
                    send_deadline(mode, d(issued_on), failures),
                    d(expected) if expected else None)

    def test_offline_unavailability(self):
        # unavailability Monday-Tuesday: next business day after its end
        unavailable = (d('2026-03-02'), d('2026-03-03'))
        self.assertEqual(
            send_deadline('offline', d('2026-03-02'), [unavailable]),
            d('2026-03-04'))
        self.assertEqual(
            send_deadline('offline', d('2026-03-02'),
                unavailability=unavailable),
            d('2026-03-04'))
        # ending on a Friday, or before a holiday
        self.assertEqual(
            send_deadline('offline', d('2026-03-05'),
                [(d('2026-03-05'), d('2026-03-06'))]),
            d('2026-03-09'))
        self.assertEqual(
            send_deadline('offline', d('2025-12-23'),
                [(d('2025-12-23'), d('2025-12-23'))]),
            d('2025-12-29'))
        # still unavailable: no date yet
        self.assertIsNone(send_deadline(
            'offline', d('2026-03-02'), [(d('2026-03-02'), None)]))
        # a failure announced while waiting moves the deadline
        failure = (d('2026-03-04'), d('2026-03-05'))
        self.assertEqual(
            send_deadline('offline', d('2026-03-02'), [unavailable, failure]),
            d('2026-03-16'))
        self.assertEqual(
            send_deadline('offline', d('2026-03-02'), [failure],
                unavailability=unavailable),
            d('2026-03-16'))

    def test_errors(self):
        cases = [
            (('offline48', d('2025-07-10')), {}, 'deadline_unknown_mode'),
            (('failure', d('2025-07-10')), {}, 'deadline_no_failure'),
            (('failure', d('2025-07-13'),
                [(d('2025-07-09'), d('2025-07-12'))]), {},
                'deadline_no_failure'),
            (('offline', d('2025-07-10')), {}, 'deadline_no_unavailability'),
            (('offline', d('2025-07-10')),
                {'unavailability': (d('2025-07-11'), d('2025-07-11'))},
                'deadline_no_unavailability'),
            (('offline24', d('2025-07-10'),
                [(d('2025-07-12'), d('2025-07-11'))]), {},
                'deadline_invalid_period'),
            ]
        for args, kwargs, code in cases:
            with self.subTest(args=args, kwargs=kwargs):
                with self.assertRaises(DeadlineError) as context:
                    send_deadline(*args, **kwargs)
                self.assertEqual(context.exception.code, code)
                self.assertIsInstance(context.exception.params, dict)
        with self.assertRaises(TypeError):
            send_deadline('offline24', d('2025-07-10'), [d('2025-07-10')])


if __name__ == '__main__':
    unittest.main()
