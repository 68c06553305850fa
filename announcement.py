# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""KSeF failure and unavailability announcements (PROTOCOL.md §12, §21).

Announcements belong to a KSeF environment, not to a company: one failure of
KSeF PROD concerns every company sending there.  The scheduled task reads
them from KSeF's status service ("Latarnia"); administrators enter by hand
what the service does not publish (an unavailability announced in the BIP,
a total failure announced in the media) or what it could not deliver.
"""
import datetime as dt
import logging
from collections import defaultdict

from trytond.i18n import gettext
from trytond.model import ModelSQL, ModelView, Unique, fields
from trytond.model.exceptions import AccessError
from trytond.pool import Pool
from trytond.pyson import Eval
from trytond.transaction import Transaction, without_check_access

from trytond_ksef import deadlines
from trytond_ksef.client import KSeFStatusClient, RetryPolicy
from trytond_ksef.client import StatusMessage as Message
from trytond_ksef.deadlines import polish_date
from trytond_ksef.errors import KSeFError

from .authorization import ENVIRONMENTS
from .common import environment as environment_urls
from .common import get_option, naive_utc
from .exceptions import (
    KSeFAnnouncementValidationError,
    KSeFConfigurationError,
    KSeFDeadlineError,
)

logger = logging.getLogger(__name__)

CATEGORIES = [
    ('failure', "Failure"),
    ('total_failure', "Total Failure"),
    ('unavailability', "Unavailability"),
    ('maintenance', "Maintenance"),
    ]
SOURCES = [
    ('manual', "Manual"),
    ('status_service', "Status Service"),
    ]
# Categories of the status service (PROTOCOL.md §21) -> ours.  The service
# announces no unavailability (niedostępność): that one is entered by hand.
SERVICE_CATEGORIES = {
    Message.FAILURE: 'failure',
    Message.TOTAL_FAILURE: 'total_failure',
    Message.MAINTENANCE: 'maintenance',
    }
FAILURE_END = 'FAILURE_END'
DEFAULT_TIMEOUT = 30.0
# A cron that runs every 15 minutes does not need to insist: one retry.
RETRY = RetryPolicy(max_attempts=2, backoff_initial=1.0)
UTC = dt.timezone.utc


def _timeout():
    "Seconds of `[ksef] timeout` in trytond.conf (default 30)."
    value = get_option('timeout')
    try:
        timeout = float(value) if value not in (None, '') else None
    except (TypeError, ValueError):
        timeout = None
        logger.warning(
            "ignoring invalid [ksef] timeout %r: using %s s",
            value, DEFAULT_TIMEOUT)
    if timeout is None or timeout <= 0:
        timeout = DEFAULT_TIMEOUT
    return timeout


def service_events(messages):
    """Group status-service messages into events and return, per event, the
    announcement values: the messages of one ``eventId`` (FAILURE_START,
    then FAILURE_END) describe one failure, and the latest version wins.

    ``start`` is the latest message's start (else the earliest one known);
    ``end`` is its end, and for a FAILURE_END without an end, the time the
    end was published.  Messages without an id, without a start or of an
    unknown category are skipped (with a warning)."""
    groups = defaultdict(list)
    for message in messages:
        if not message.id or message.category not in SERVICE_CATEGORIES:
            logger.warning(
                "skipping KSeF status message %r of category %r",
                message.id, message.category)
            continue
        key = (('event', message.event_id) if message.event_id is not None
            else ('message', message.id))
        groups[key].append(message)
    events = []
    for group in groups.values():
        latest = max(group, key=lambda m: (
                m.version if m.version is not None else -1,
                m.type == FAILURE_END,
                m.published or dt.datetime.min.replace(tzinfo=UTC)))
        start = latest.start or min(
            (m.start for m in group if m.start), default=None)
        end = latest.end
        if end is None and latest.type == FAILURE_END:
            end = latest.published
        start, end = naive_utc(start), naive_utc(end)
        if start is None or (end is not None and end < start):
            logger.warning(
                "skipping KSeF status message %s: no start or end before "
                "start", latest.id)
            continue
        events.append({
                'category': SERVICE_CATEGORIES[latest.category],
                'start': start,
                'end': end,
                'title': latest.title or '',
                'text': latest.text or '',
                'message_id': latest.id,
                'event_id': latest.event_id,
                'version': latest.version,
                'published': naive_utc(latest.published),
                })
    return events


class Announcement(ModelSQL, ModelView):
    "KSeF Announcement"
    __string__ = "KSeF Announcement"
    __name__ = 'ksef.announcement'
    _rec_name = 'title'

    _service_readonly = {'readonly': Eval('source') == 'status_service'}

    environment = fields.Selection(
        ENVIRONMENTS, "Environment", required=True,
        states=_service_readonly,
        help="The KSeF environment the announcement is about.")
    category = fields.Selection(
        CATEGORIES, "Category", required=True, sort=False,
        states=_service_readonly,
        help="Failure: invoices may be issued in failure mode and sent "
        "within 7 business days after it ends; it also moves the deadline "
        "of waiting offline invoices.\n"
        "Total failure: invoices issued during it need not be sent.\n"
        "Unavailability: invoices may be issued offline and sent by the "
        "next business day after it ends.\n"
        "Maintenance: for information, it moves no deadline.")
    category_string = category.translated('category')
    start = fields.DateTime(
        "Start", required=True, states=_service_readonly)
    end = fields.DateTime(
        "End", states=_service_readonly,
        help="Leave empty while it is ongoing.")
    title = fields.Char("Title", states=_service_readonly)
    text = fields.Text("Text", states=_service_readonly)
    source = fields.Selection(
        SOURCES, "Source", required=True, readonly=True,
        help="Entered by hand, or read from KSeF's status service "
        "(those cannot be changed).")
    message_id = fields.Char(
        "Message ID", readonly=True,
        help="The identifier of the latest status-service message.")
    event_id = fields.Integer(
        "Event ID", readonly=True,
        help="The status-service event the messages describe.")
    version = fields.Integer("Version", readonly=True)
    published = fields.DateTime("Published", readonly=True)

    del _service_readonly

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints = [
            ('message_unique', Unique(t, t.environment, t.message_id),
                'ksef.msg_announcement_message_unique'),
            ]
        cls._order = [
            ('start', 'DESC'),
            ('id', 'DESC'),
            ]

    @classmethod
    def default_source(cls):
        return 'manual'

    @classmethod
    def default_environment(cls):
        "The environment of the current company's authorization, if any."
        pool = Pool()
        Authorization = pool.get('ksef.authorization')
        company = Transaction().context.get('company')
        if company is None:
            return None
        authorizations = Authorization.search(
            [('company', '=', company)], limit=1)
        if authorizations:
            return authorizations[0].environment

    def get_rec_name(self, name):
        return self.title or self.category_string

    @classmethod
    def copy(cls, announcements, default=None):
        "A copy is a manual announcement."
        default = default.copy() if default is not None else {}
        default.setdefault('source', cls.default_source())
        for name in ['message_id', 'event_id', 'version', 'published']:
            default.setdefault(name, None)
        return super().copy(announcements, default=default)

    @classmethod
    def validate_fields(cls, records, field_names):
        super().validate_fields(records, field_names)
        if field_names & {'start', 'end'}:
            for record in records:
                record.check_dates()

    def check_dates(self):
        if self.start and self.end and self.end < self.start:
            raise KSeFAnnouncementValidationError(
                gettext('ksef.msg_announcement_end_before_start',
                    announcement=self.rec_name))

    @classmethod
    def check_modification(cls, mode, records, values=None, external=False):
        # Before super(): 8.2 refuses states-readonly fields with its own
        # message, 8.0 does not check them; say the same on both.
        if external and mode in {'create', 'write'}:
            for record in records:
                if record.source == 'status_service':
                    raise AccessError(gettext(
                            'ksef.msg_announcement_service_readonly',
                            announcement=record.rec_name))
        super().check_modification(
            mode, records, values=values, external=external)

    @classmethod
    def on_modification(cls, mode, records, field_names=None):
        """Announcements move the deadlines of waiting offline invoices.

        Contract with the invoices: when announcements are created, changed
        or deleted, the classmethod ``ksef_update_deadlines(environments)``
        of ``account.invoice.ksef`` (offline.py) is called in the same
        transaction with the sorted list of the environment names ('test',
        'demo', 'prod') whose announcements changed, and recomputes the
        deadlines of the invoices of those environments with
        :meth:`deadline` (for 'delete' the records still exist)."""
        super().on_modification(mode, records, field_names=field_names)
        environments = sorted({r.environment for r in records})
        if environments:
            cls._update_deadlines(environments)

    @classmethod
    def _update_deadlines(cls, environments):
        Pool().get('account.invoice.ksef').ksef_update_deadlines(
            environments)

    @classmethod
    def update_from_status_service(cls, records=None):
        """Read KSeF's status service of every environment in use
        (scheduled task).

        One status service serves TEST and DEMO: each address is asked once
        and its messages are stored for every environment it serves.  An
        unreachable service is logged and skipped."""
        pool = Pool()
        Authorization = pool.get('ksef.authorization')
        with without_check_access():
            names = sorted({a.environment for a in Authorization.search([])})
        by_url = defaultdict(list)
        for name in names:
            try:
                url = environment_urls(name).status_url
            except KSeFConfigurationError as error:
                logger.warning(
                    "KSeF status service of %s not read: %s",
                    name, error.message)
                continue
            by_url[url].append(name)
        for url, names in by_url.items():
            messages = cls._fetch_status_messages(url, names)
            if messages is None:
                continue
            for name in names:
                cls._store_status_messages(name, messages)

    @classmethod
    def _fetch_status_messages(cls, url, names):
        """The messages of the status service at `url`, or None when it
        cannot be reached or answers nonsense."""
        # The URL is checked to carry no query (environments.urls).
        where = '%s (%s)' % (url, ', '.join(names))
        with KSeFStatusClient(
                url, timeout=_timeout(), retry=RETRY) as client:
            try:
                messages = list(client.get_messages())
            except KSeFError as error:
                logger.warning(
                    "KSeF status service %s not read: %s", where, error)
                return None
            try:
                status = client.get_status()
            except KSeFError as error:
                logger.warning(
                    "KSeF status of %s not read: %s", where, error)
            else:
                logger.info("KSeF status of %s: %s", where, status.state)
                messages.extend(status.messages)
        return messages

    @classmethod
    def _store_status_messages(cls, environment, messages):
        """Create or update the announcements of `environment` from the
        status-service `messages`: one announcement per event, found by
        event or message id, changed only by a version at least as high."""
        events = service_events(messages)
        if not events:
            return []
        event_ids = [e['event_id'] for e in events
            if e['event_id'] is not None]
        message_ids = [m.id for m in messages if m.id]
        existing = cls.search([
                ('environment', '=', environment),
                ('source', '=', 'status_service'),
                ['OR',
                    ('event_id', 'in', event_ids),
                    ('message_id', 'in', message_ids),
                    ],
                ])
        by_event = {r.event_id: r for r in existing
            if r.event_id is not None}
        by_message = {r.message_id: r for r in existing}
        to_save = []
        for values in events:
            record = None
            if values['event_id'] is not None:
                record = by_event.get(values['event_id'])
            if record is None:
                record = by_message.get(values['message_id'])
            if record is None:
                record = cls(
                    environment=environment, source='status_service',
                    **values)
                to_save.append(record)
                continue
            if (record.version is not None and values['version'] is not None
                    and values['version'] < record.version):
                continue
            changed = False
            for name, value in values.items():
                if getattr(record, name) != value:
                    setattr(record, name, value)
                    changed = True
            if changed:
                to_save.append(record)
        if to_save:
            cls.save(to_save)
        return to_save

    @classmethod
    def _periods(cls, environment, category):
        "(start, end) Polish dates of `category` in `environment`, sorted."
        records = cls.search([
                ('environment', '=', environment),
                ('category', '=', category),
                ], order=[('start', 'ASC'), ('id', 'ASC')])
        return [(polish_date(r.start), polish_date(r.end)) for r in records]

    @classmethod
    def failures(cls, environment):
        """The announced failures of `environment` as (start, end) pairs of
        Polish dates, `end` None while ongoing: the `failures` of
        `trytond_ksef.deadlines.send_deadline`."""
        return cls._periods(environment, 'failure')

    @classmethod
    def covering(cls, environment, category, on_date):
        """The (start, end) periods of `category` in `environment` that
        cover the day `on_date` (`end` None while ongoing)."""
        return [(start, end)
            for start, end in cls._periods(environment, category)
            if start <= on_date and (end is None or on_date <= end)]

    @classmethod
    def total_failure(cls, environment, on_date):
        "Whether a total failure of `environment` covers the day `on_date`."
        return bool(cls.covering(environment, 'total_failure', on_date))

    @classmethod
    def unavailability(cls, environment, on_date):
        """The announced unavailability of `environment` covering the day
        `on_date`, as a (start, end) pair of Polish dates (`end` None while
        ongoing), or None: the `unavailability` of `send_deadline`.  Of
        overlapping announcements, the one ending last counts."""
        covering = cls.covering(environment, 'unavailability', on_date)
        if not covering:
            return None
        return max(covering, key=lambda p: (p[1] is None, p[1]))

    @classmethod
    def deadline(cls, environment, mode, issued_on, observed=None):
        """The last day (Polish date) to send to `environment` an invoice
        issued on `issued_on` in `mode` ('offline24', 'offline', 'failure',
        'total_failure'), given the recorded announcements; None when there
        is none: still unknown (ongoing failure or unavailability) or no
        obligation to send.

        A total failure announced while the invoice waits (from its issue
        date up to its deadline) removes the obligation to send
        (PROTOCOL.md §12).  Maintenance moves nothing.

        `observed` is the (start, end) of an unavailability the caller saw
        itself (KSeF unreachable), used in mode 'offline' when none was
        announced."""
        if mode == deadlines.TOTAL_FAILURE:
            return None
        unavailability = None
        if mode == deadlines.OFFLINE:
            unavailability = (cls.unavailability(environment, issued_on)
                or observed)
        try:
            deadline = deadlines.send_deadline(
                mode, issued_on, failures=cls.failures(environment),
                unavailability=unavailability)
        except deadlines.DeadlineError as error:
            raise KSeFDeadlineError(
                gettext('ksef.msg_' + error.code, **error.params)
                ) from error
        for start, end in cls._periods(environment, 'total_failure'):
            if ((end is None or end >= issued_on)
                    and (deadline is None or start <= deadline)):
                return None
        return deadline
