# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Offline issuing (PROTOCOL.md §12): invoices issued while KSeF cannot be
used carry QR CODE II signed with the company's offline certificate and
must reach KSeF by a legal deadline.

When an invoice is issued offline:

* at posting: the company chose offline24, a failure (or total failure) of
  KSeF is announced for today, or the invoice is dated before today (KSeF
  then marks it offline by itself, §12.1);
* at sending: KSeF cannot be reached (network, timeout, 5xx).

Only with a usable offline certificate (and "skip offline" unticked); a
total failure needs none (no QR codes, no obligation to send).  Without
one, the invoice stays pending and the user is told it cannot be handed
out before KSeF accepts it.

The send cron sends offline invoices with offlineMode=true, nearest
deadline first (see sending.py), lists and notifies those past their
deadline.  A technical correction re-issues a rejected offline invoice
with new bytes and the hash of the rejected ones.
"""
import datetime

from trytond.exceptions import UserError
from trytond.i18n import gettext
from trytond.model import ModelView, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.transaction import Transaction, without_check_access

from trytond_ksef import fa3, qr
from trytond_ksef.crypto import sha256_b64
from trytond_ksef.deadlines import polish_today

from .exceptions import KSeFBackdatedWarning, KSeFDeadlineError
from .invoice import TECHNICAL_CORRECTION, FA3Mapper


class Authorization(metaclass=PoolMeta):
    __name__ = 'ksef.authorization'

    offline24 = fields.Boolean("Issue Offline (Offline24)",
        help="Issue every invoice offline (offline24 mode): each carries "
        "QR CODE II and is sent to KSeF by the end of the next business "
        "day. Needs a valid offline certificate.")

    @classmethod
    def default_offline24(cls):
        return False

    def ksef_ongoing(self, category, on_date):
        "Whether an announced `category` of the environment covers the day."
        Announcement = Pool().get('ksef.announcement')
        return bool(Announcement.covering(self.environment, category,
                on_date))


class InvoiceKSeF(metaclass=PoolMeta):
    __name__ = 'account.invoice.ksef'

    offline_since = fields.Date("Offline Since", readonly=True,
        help="The day KSeF was first found unreachable for this invoice.")
    overdue = fields.Function(fields.Boolean("Past Deadline"),
        'get_overdue', searcher='search_overdue')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._buttons.update({
                'technical_correction': {
                    'invisible': ((Eval('state') != 'rejected')
                        | (Eval('mode') == 'online')),
                    'depends': ['state', 'mode'],
                    },
                })

    def get_overdue(self, name):
        return bool(self.deadline and self.state in {'pending', 'offline'}
            and self.deadline < polish_today())

    @classmethod
    def search_overdue(cls, name, clause):
        _, operator, value = clause[:3]
        today = polish_today()
        if (operator == '=') == bool(value):
            return [
                ('state', 'in', ['pending', 'offline']),
                ('deadline', '<', today),
                ]
        return ['OR',
            ('state', 'not in', ['pending', 'offline']),
            ('deadline', '=', None),
            ('deadline', '>=', today),
            ]

    # -- going offline -------------------------------------------------------

    def _ksef_code2_link(self):
        authorization = self.authorization
        certificate = authorization.active_certificate('offline')
        urls = authorization.environment_urls()
        return qr.code2_link(urls.qr_url, 'Nip', authorization.nip,
            self.seller_nip, certificate.serial_hex, self.fa3_hash,
            certificate.private_key())

    def _ksef_deadline(self, today=None):
        """The deadline of this offline record given what is known now;
        None when unknown (a failure not recorded) or none applies."""
        Announcement = Pool().get('ksef.announcement')
        today = today or polish_today()
        if self.mode == 'online':
            return None
        observed = None
        if self.mode == 'offline':
            observed = (self.offline_since or self.issue_date, today)
        try:
            return Announcement.deadline(self.authorization.environment,
                self.mode, self.issue_date, observed=observed)
        except KSeFDeadlineError:
            return None

    @classmethod
    def ksef_go_offline(cls, records, mode, today=None):
        """Issue `records` offline in `mode`: CODE II signed with the
        offline certificate (none in total failure), the deadline."""
        today = today or polish_today()
        for record in records:
            values = {'state': 'offline', 'mode': mode}
            if mode != 'total_failure' and not record.code2_link:
                values['code2_link'] = record._ksef_code2_link()
            if mode == 'offline' and not record.offline_since:
                values['offline_since'] = today
            cls.write([record], values)
        for record in cls.browse([r.id for r in records]):
            cls.write([record], {'deadline': record._ksef_deadline(today)})

    @classmethod
    def _ksef_unreachable(cls, records):
        super()._ksef_unreachable(records)
        today = polish_today()
        to_offline = []
        for record in records:
            if (record.state == 'pending' and record.mode == 'online'
                    and record.authorization.offline_available):
                to_offline.append(record)
        if to_offline:
            mode = 'offline'
            authorization = to_offline[0].authorization
            if authorization.ksef_ongoing('failure', today):
                mode = 'failure'
            try:
                cls.ksef_go_offline(to_offline, mode, today)
            except UserError as error:
                # The offline key cannot be used: stay pending, say why.
                cls.write(to_offline, {
                        'error_description': error.message})
        # KSeF is still unavailable: the deadline of every invoice waiting
        # in offline mode for it moves, not only of those tried now (else
        # they would be notified past a deadline KSeF itself postponed).
        cls.ksef_update_deadlines(
            {r.authorization.environment for r in records})

    @classmethod
    def ksef_update_deadlines(cls, environments):
        """Recompute the deadlines of the waiting offline invoices of
        `environments` (announcements changed)."""
        today = polish_today()
        records = cls.search([
                ('state', 'in', ['pending', 'offline']),
                ('mode', '!=', 'online'),
                ('authorization.environment', 'in', list(environments)),
                ])
        for record in records:
            before = (record.deadline, record.mode)
            if record.authorization.ksef_ongoing('total_failure', today):
                # Announced during the wait: no obligation to send.
                record.mode = 'total_failure'
            deadline = record._ksef_deadline(today)
            if (deadline, record.mode) != before:
                cls.write([record], {
                        'deadline': deadline, 'mode': record.mode})

    # -- posting -------------------------------------------------------------

    @classmethod
    def ksef_posting_modes(cls, records):
        """Issue offline at posting what must be: announced failures,
        offline24 chosen by the company, invoices dated before today."""
        today = polish_today()
        groups = {}
        for record in records:
            authorization = record.authorization
            mode = None
            if authorization.ksef_ongoing('total_failure', today):
                mode = 'total_failure'
            elif authorization.offline_available:
                if authorization.ksef_ongoing('failure', today):
                    mode = 'failure'
                elif authorization.offline24 or record.issue_date < today:
                    mode = 'offline24'
            if mode:
                groups.setdefault(mode, []).append(record)
        for mode, group in groups.items():
            cls.ksef_go_offline(group, mode, today)

    # -- cron: past deadline -------------------------------------------------

    @classmethod
    def ksef_send(cls, records=None, wait=True):
        result = super().ksef_send(records=records, wait=wait)
        if records is None:
            cls.ksef_notify_overdue()
        return result

    @classmethod
    def ksef_notify_overdue(cls):
        "Notify the invoices past their deadline (send cron)."
        pool = Pool()
        Cron = pool.get('ir.cron')
        with without_check_access():
            records = cls.search([('overdue', '=', True)],
                order=[('deadline', 'ASC'), ('id', 'ASC')])
            for record in records:
                Cron.notify('tryton-warning', 'ksef.act_invoice_ksef_form',
                    None, 'ksef.msg_offline_overdue',
                    invoice=record.invoice_number or '',
                    company=record.company.rec_name,
                    deadline=record.deadline.isoformat())
        return records

    # -- technical correction ------------------------------------------------

    @classmethod
    @ModelView.button
    def technical_correction(cls, records):
        """Rebuild the FA(3) of rejected offline invoices from their
        invoice as it is now (same number and content, new bytes) and send
        it with the hash of the rejected document (§12.2)."""
        pool = Pool()
        Invoice = pool.get('account.invoice')
        corrected = []
        with without_check_access():
            for record in records:
                if record.state != 'rejected' or record.mode == 'online':
                    continue
                invoice = Invoice(record.invoice.id)
                now = datetime.datetime.now(datetime.timezone.utc)
                for created in [now, now + datetime.timedelta(seconds=1)]:
                    # DataWytworzeniaFa has whole seconds: within the second
                    # of the rejected document, the next one is taken.
                    mapper = FA3Mapper(invoice, record.authorization,
                        created)
                    data = mapper.build()
                    if data is None:
                        raise UserError(mapper.message())
                    if sha256_b64(data) != record.fa3_hash:
                        break
                summary = fa3.parse_summary(data)
                if (summary['number'], summary['issue_date'],
                        summary['seller_nip']) != (record.invoice_number,
                        record.issue_date, record.seller_nip):
                    raise UserError(gettext(
                            'ksef.msg_technical_correction_changed',
                            invoice=record.invoice_number))
                digest = sha256_b64(data)
                if digest == record.fa3_hash:
                    raise UserError(gettext(
                            'ksef.msg_technical_correction_same',
                            invoice=record.invoice_number))
                values = {
                    'fa3': data,
                    'fa3_hash': digest,
                    'fa3_size': len(data),
                    'corrected_hash': record.fa3_hash,
                    'state': 'offline',
                    'session_reference': None,
                    'invoice_reference': None,
                    'error_code': None,
                    'error_description': None,
                    'next_attempt': None,
                    'code2_link': None,
                    }
                with Transaction().set_context(**{TECHNICAL_CORRECTION: True}):
                    cls.write([record], values)
                record = cls(record.id)
                if record.mode != 'total_failure':
                    cls.write([record], {
                            'code2_link': record._ksef_code2_link()})
                corrected.append(record)
            if corrected:
                cls.ksef_send(corrected, wait=True)


class Invoice(metaclass=PoolMeta):
    __name__ = 'account.invoice'

    @classmethod
    def _post(cls, invoices):
        cls._ksef_check_backdated(cls._ksef_being_posted(invoices))
        super()._post(invoices)

    @classmethod
    def post_batch(cls, invoices):
        cls._ksef_check_backdated(cls._ksef_being_posted(invoices))
        super().post_batch(invoices)

    @classmethod
    def _ksef_issue(cls, invoices, store=True):
        records = super()._ksef_issue(invoices, store=store)
        if records:
            InvoiceKSeF = Pool().get('account.invoice.ksef')
            InvoiceKSeF.ksef_posting_modes(records)
        return records

    @classmethod
    def _ksef_check_backdated(cls, invoices):
        """Warn before posting an invoice dated before today without an
        offline certificate: KSeF will treat it as offline (§12.1), and it
        cannot carry CODE II."""
        pool = Pool()
        Warning = pool.get('res.user.warning')
        today = polish_today()
        backdated = []
        for invoice in invoices:
            if (invoice.type != 'out' or not invoice.invoice_date
                    or invoice.invoice_date >= today
                    or invoice.ksef_records):
                continue
            authorization = invoice._ksef_authorization()
            if authorization and not authorization.offline_available:
                backdated.append(invoice)
        if backdated:
            key = Warning.format('ksef_backdated', backdated)
            if Warning.check(key):
                raise KSeFBackdatedWarning(key, gettext(
                        'ksef.msg_invoice_backdated_no_offline',
                        invoices=', '.join(i.rec_name for i in backdated)))
