# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
import datetime as dt
import socket
import unittest
from unittest import mock

import trytond.config as config
from trytond.modules.company.tests import create_company
from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction

from trytond_ksef.client import StatusMessage

UTC = dt.timezone.utc


def d(text):
    return dt.date.fromisoformat(text)


def utc(text):
    "A naive UTC datetime, as Tryton stores them."
    return dt.datetime.fromisoformat(text)


def warsaw(text):
    "Naive UTC datetime of a Polish wall-clock time."
    from zoneinfo import ZoneInfo
    moment = dt.datetime.fromisoformat(text).replace(
        tzinfo=ZoneInfo('Europe/Warsaw'))
    return moment.astimezone(UTC).replace(tzinfo=None)


def message(id, event_id, type='FAILURE_START', category='FAILURE',
        start='2025-07-09T08:00:00+00:00', end=None, version=1,
        published='2025-07-09T08:05:00+00:00', title="Awaria KSeF"):
    return StatusMessage.from_json({
            'id': id, 'eventId': event_id, 'category': category,
            'type': type, 'title': title, 'text': title, 'start': start,
            'end': end, 'version': version, 'published': published})


class AnnouncementTestCase(unittest.TestCase):
    "KSeF announcements and the deadlines they move"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        activate_module('ksef')

    def setUp(self):
        super().setUp()
        if not config.has_section('ksef'):
            config.add_section('ksef')
        self.addCleanup(self._clear_options)

    def _clear_options(self):
        for option in list(config.options('ksef')):
            config.set('ksef', option, '')

    def _announce(self, category, start, end=None, environment='prod'):
        Announcement = Pool().get('ksef.announcement')
        record, = Announcement.create([{
                    'environment': environment,
                    'category': category,
                    'start': start,
                    'end': end,
                    'title': category,
                    }])
        return record

    def test_service_events(self):
        "The messages of one event make one announcement, latest version"
        from trytond.modules.ksef.announcement import service_events
        start = message('a', 1)
        end = message('b', 1, type='FAILURE_END',
            end='2025-07-12T10:00:00.1234567+00:00', version=2,
            published='2025-07-12T10:01:00Z', title="Koniec: Awaria KSeF")
        maintenance = message('c', 2, type='MAINTENANCE_ANNOUNCEMENT',
            category='MAINTENANCE', start='2025-07-20T20:00:00Z',
            end='2025-07-20T22:00:00Z')
        events = service_events([end, start, maintenance])
        self.assertEqual(len(events), 2)
        failure, = [e for e in events if e['event_id'] == 1]
        self.assertEqual(failure, {
                'category': 'failure',
                'start': utc('2025-07-09T08:00:00'),
                'end': utc('2025-07-12T10:00:00'),
                'title': "Koniec: Awaria KSeF",
                'text': "Koniec: Awaria KSeF",
                'message_id': 'b',
                'event_id': 1,
                'version': 2,
                'published': utc('2025-07-12T10:01:00'),
                })
        other, = [e for e in events if e['event_id'] == 2]
        self.assertEqual(other['category'], 'maintenance')
        self.assertEqual(other['end'], utc('2025-07-20T22:00:00'))

        # Only the start known so far: ongoing.
        event, = service_events([start])
        self.assertIsNone(event['end'])
        # An end without a timestamp ends when it was published.
        event, = service_events([start, message('b', 1, type='FAILURE_END',
                    version=2, published='2025-07-10T12:00:00Z', start=None)])
        self.assertEqual(event['start'], utc('2025-07-09T08:00:00'))
        self.assertEqual(event['end'], utc('2025-07-10T12:00:00'))
        # Unknown categories and impossible periods are skipped.
        with self.assertLogs(
                'trytond.modules.ksef.announcement', 'WARNING') as logs:
            self.assertEqual(service_events([
                        message('x', 3, category='OTHER'),
                        message('y', 4, end='2025-07-01T00:00:00Z'),
                        ]), [])
        self.assertEqual(len(logs.output), 2)

    @with_transaction()
    def test_store_status_messages(self):
        "Messages are upserted per event, keeping the highest version"
        Announcement = Pool().get('ksef.announcement')
        start = message('a', 1)
        end = message('b', 1, type='FAILURE_END',
            end='2025-07-12T10:00:00Z', version=2)

        saved = Announcement._store_status_messages('prod', [start])
        self.assertEqual(len(saved), 1)
        # The same messages again change nothing.
        self.assertEqual(
            Announcement._store_status_messages('prod', [start]), [])
        Announcement._store_status_messages('prod', [start, end])
        record, = Announcement.search([])
        self.assertEqual(
            (record.environment, record.source, record.category,
                record.start, record.end, record.message_id,
                record.event_id, record.version),
            ('prod', 'status_service', 'failure', utc('2025-07-09T08:00:00'),
                utc('2025-07-12T10:00:00'), 'b', 1, 2))
        # A lower version does not undo the end.
        Announcement._store_status_messages('prod', [start])
        record, = Announcement.search([])
        self.assertEqual(record.end, utc('2025-07-12T10:00:00'))
        # Per environment: the same message for another one is another
        # announcement.
        Announcement._store_status_messages('demo', [start, end])
        self.assertEqual(Announcement.search_count([]), 2)
        # A copy is a manual announcement.
        copy, = Announcement.copy([record])
        self.assertEqual(
            (copy.source, copy.message_id, copy.event_id, copy.end),
            ('manual', None, None, utc('2025-07-12T10:00:00')))

    @with_transaction()
    def test_failures_in_polish_dates(self):
        "Failures, total failures and unavailability as Polish dates"
        Announcement = Pool().get('ksef.announcement')
        # Ends at 00:30 Polish time: the 8th, not the 7th.
        self._announce('failure', utc('2025-07-07T08:00:00'),
            utc('2025-07-07T22:30:00'))
        self._announce('failure', utc('2025-07-20T08:00:00'))
        self._announce('maintenance', utc('2025-07-01T20:00:00'),
            utc('2025-07-01T22:00:00'))
        self._announce('failure', utc('2025-07-01T08:00:00'),
            environment='test')
        self.assertEqual(Announcement.failures('prod'), [
                (d('2025-07-07'), d('2025-07-08')),
                (d('2025-07-20'), None),
                ])
        self.assertEqual(Announcement.failures('demo'), [])

        self._announce('total_failure', warsaw('2025-08-04T09:00:00'),
            warsaw('2025-08-05T18:00:00'))
        self.assertFalse(Announcement.total_failure('prod', d('2025-08-03')))
        self.assertTrue(Announcement.total_failure('prod', d('2025-08-05')))
        self.assertFalse(Announcement.total_failure('test', d('2025-08-05')))

        self._announce('unavailability', warsaw('2026-03-02T08:00:00'),
            warsaw('2026-03-03T12:00:00'))
        self._announce('unavailability', warsaw('2026-03-03T08:00:00'))
        self.assertEqual(
            Announcement.unavailability('prod', d('2026-03-02')),
            (d('2026-03-02'), d('2026-03-03')))
        self.assertEqual(
            Announcement.unavailability('prod', d('2026-03-03')),
            (d('2026-03-03'), None))
        self.assertIsNone(
            Announcement.unavailability('prod', d('2026-03-01')))

    @with_transaction()
    def test_deadline(self):
        "Recorded announcements move the deadlines (PROTOCOL.md §12)"
        Announcement = Pool().get('ksef.announcement')
        # tryby-offline.md example: failure announced on 07-09, ends on
        # Saturday 07-12.
        self._announce('failure', warsaw('2025-07-09T10:00:00'),
            warsaw('2025-07-12T14:00:00'))
        # Maintenance moves nothing.
        self._announce('maintenance', warsaw('2025-07-15T20:00:00'),
            warsaw('2025-07-16T02:00:00'))
        self._announce('unavailability', warsaw('2026-03-02T08:00:00'),
            warsaw('2026-03-03T12:00:00'))
        self._announce('total_failure', warsaw('2026-05-11T08:00:00'),
            warsaw('2026-05-12T12:00:00'))
        table = [
            ('offline24', '2025-07-08', '2025-07-22'),   # moved by failure
            ('offline24', '2025-07-14', '2025-07-15'),   # after it
            ('offline24', '2025-07-15', '2025-07-16'),   # maintenance
            ('failure', '2025-07-10', '2025-07-22'),
            ('offline', '2026-03-02', '2026-03-04'),
            ('offline24', '2026-05-08', None),   # total failure while waiting
            ('offline24', '2026-05-12', None),
            ('offline24', '2026-05-13', '2026-05-14'),
            ('total_failure', '2025-07-10', None),
            ]
        for mode, issued_on, expected in table:
            with self.subTest(mode=mode, issued_on=issued_on):
                self.assertEqual(
                    Announcement.deadline('prod', mode, d(issued_on)),
                    d(expected) if expected else None)
        # Announcements of another environment do not count.
        self.assertEqual(
            Announcement.deadline('test', 'offline24', d('2025-07-08')),
            d('2025-07-09'))
        # A second failure within the 7 days restarts the count.
        self._announce('failure', warsaw('2025-07-18T10:00:00'),
            warsaw('2025-07-21T10:00:00'))
        self.assertEqual(
            Announcement.deadline('prod', 'failure', d('2025-07-10')),
            d('2025-07-30'))
        # Still ongoing: no date yet.
        self._announce('failure', warsaw('2025-07-29T10:00:00'))
        self.assertIsNone(
            Announcement.deadline('prod', 'failure', d('2025-07-10')))

    @with_transaction()
    def test_deadline_errors(self):
        "A mode without its announcement is refused with a message"
        from trytond.modules.ksef.exceptions import KSeFDeadlineError
        Announcement = Pool().get('ksef.announcement')
        for mode, text in [
                ('failure', "No announced KSeF failure covers"),
                ('offline', "No announced KSeF unavailability covers"),
                ('online', "is not an offline mode"),
                ]:
            with self.subTest(mode=mode):
                with self.assertRaises(KSeFDeadlineError) as context:
                    Announcement.deadline('prod', mode, d('2025-07-10'))
                self.assertIn(text, context.exception.message)

    @with_transaction()
    def test_end_before_start(self):
        "An announcement cannot end before it starts"
        from trytond.modules.ksef.exceptions import (
            KSeFAnnouncementValidationError,
        )
        with self.assertRaises(KSeFAnnouncementValidationError):
            self._announce('failure', utc('2025-07-10T10:00:00'),
                utc('2025-07-10T09:00:00'))

    @with_transaction()
    def test_update_deadlines_hook(self):
        "Changes call ksef_update_deadlines of the invoices when it exists"
        pool = Pool()
        Announcement = pool.get('ksef.announcement')
        InvoiceKSeF = pool.get('account.invoice.ksef')
        with mock.patch.object(InvoiceKSeF, 'ksef_update_deadlines',
                create=True) as update:
            record = self._announce('failure', utc('2025-07-10T10:00:00'))
            update.assert_called_once_with(['prod'])
            update.reset_mock()
            Announcement.write([record], {'environment': 'demo'})
            update.assert_called_once_with(['demo'])
            update.reset_mock()
            Announcement.delete([record])
            update.assert_called_once_with(['demo'])
        if not hasattr(InvoiceKSeF, 'ksef_update_deadlines'):
            # Without the method, nothing is called and nothing breaks.
            self._announce('failure', utc('2025-07-10T10:00:00'))

    def test_timeout_option(self):
        "The [ksef] timeout option, with a default"
        from trytond.modules.ksef.announcement import _timeout
        self.assertEqual(_timeout(), 30.0)
        config.set('ksef', 'timeout', '7.5')
        self.assertEqual(_timeout(), 7.5)
        config.set('ksef', 'timeout', 'soon')
        with self.assertLogs(
                'trytond.modules.ksef.announcement', 'WARNING'):
            self.assertEqual(_timeout(), 30.0)

    @with_transaction()
    def test_unreachable_status_service(self):
        "An unreachable status service is logged and skipped"
        pool = Pool()
        Announcement = pool.get('ksef.announcement')
        Authorization = pool.get('ksef.authorization')
        company = create_company()
        Authorization.create([{
                    'company': company.id, 'environment': 'test'}])
        with socket.socket() as sock:
            sock.bind(('127.0.0.1', 0))
            port = sock.getsockname()[1]
        config.set('ksef', 'test_status_url', 'http://127.0.0.1:%d' % port)
        with self.assertLogs(
                'trytond.modules.ksef.announcement', 'WARNING') as logs:
            Announcement.update_from_status_service()
        self.assertIn('127.0.0.1:%d' % port, '\n'.join(logs.output))
        self.assertEqual(Announcement.search_count([]), 0)


if __name__ == '__main__':
    unittest.main()
