# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Sending frozen FA(3) documents to KSeF, and following them until KSeF
gives their KSeF number and UPO.

Nothing here runs inside the posting transaction: posting queues
`InvoiceKSeF.ksef_send` for after the commit (a queue task, served by
trytond-worker when the site runs workers), and the cron "Send invoices to
KSeF" picks up whatever is left.  The cron "Check KSeF statuses" follows
the sent invoices and fetches missing UPOs.

Rules kept here (DESIGN.md invariants):

* the bytes sent are the frozen bytes of the record, never rebuilt;
* a record is locked before it is sent and the state that follows a remote
  success is committed before the next remote call, so two workers never
  send the same invoice and nothing KSeF accepted is forgotten;
* a send whose answer was lost is reconciled (the session's invoice list by
  hash, or KSeF's duplicate answer 440 with the same hash), never guessed;
* transient failures (network, timeouts, 5xx, 429) leave the record to a
  later attempt; definitive refusals are stored with KSeF's code and text.
"""
import datetime
import json
import logging
from collections import OrderedDict

from trytond import backend
from trytond.exceptions import UserError
from trytond.i18n import gettext
from trytond.model import ModelView, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Bool, Eval
from trytond.transaction import Transaction, without_check_access

from trytond_ksef import errors
from trytond_ksef.client import (
    AuthTokens,
    BatchPackage,
    CertificateCredentials,
    ContextIdentifier,
    InvoiceStatus,
    KSeFClient,
    OnlineSession,
    PollPolicy,
    RetryPolicy,
    TokenCredentials,
)

from .common import get_option, naive_utc

logger = logging.getLogger(__name__)

# Secrets kept per authorization (encrypted, see secret.py)
TOKENS_KIND = 'auth_tokens'
SESSION_KIND = 'online_session'
# A stored interactive session is reused while it stays valid this long.
SESSION_MARGIN = datetime.timedelta(minutes=15)
# Records in these states may be sent
SENDABLE = ('pending', 'offline')


def _option(name, default, type_=float):
    value = get_option(name)
    if value in (None, ''):
        return default
    try:
        return type_(value)
    except (TypeError, ValueError):
        logger.warning("invalid [ksef] %s = %r, using %r",
            name, value, default)
        return default


def timeout():
    "Seconds every HTTP call to KSeF may take ([ksef] timeout)."
    return _option('timeout', 30.0)


def batch_threshold():
    """Above this number of invoices to send at once for one company, a
    batch session is used ([ksef] batch_threshold)."""
    return _option('batch_threshold', 20, int)


def status_wait():
    """Seconds a send run waits for KSeF to process what it sent before
    leaving the rest to the status cron ([ksef] status_wait)."""
    return _option('status_wait', 20.0)


def retry_delay():
    "Seconds before a record that failed transiently is tried again."
    return _option('retry_delay', 300.0)


def _utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def _retry_later(error):
    """Whether a failed call is tried again later: transient errors, and
    authentication problems (the record is not at fault)."""
    return errors.is_transient(error) or isinstance(error, (
            errors.AuthenticationRequired, errors.AuthenticationFailed))


def _describe(error):
    "(code, description) to store for a KSeF error."
    params = getattr(error, 'params', {}) or {}
    code = params.get('exception_code') or params.get('status_code')
    description = params.get('description') or ''
    details = params.get('details') or ''
    if isinstance(error, errors.APIError):
        parts = []
        for detail in error.errors:
            text = detail.description or ''
            if detail.details:
                text += ' (%s)' % '; '.join(detail.details)
            parts.append('%s: %s' % (detail.code, text))
        description = '\n'.join(parts) or str(error)
    elif not description:
        description = str(error)
    elif details:
        description = '%s (%s)' % (description, details)
    return (str(code) if code is not None else error.code), description


class Sender:
    """The KSeF client of one authorization for one run, keeping its
    access tokens and interactive session encrypted between runs."""

    def __init__(self, authorization):
        self.authorization = authorization
        self.urls = authorization.environment_urls()
        self._session = None
        self._client = None
        # Set when a session was opened: the caller commits it.
        self.opened = False

    # -- stored secrets ------------------------------------------------------

    def _load(self, kind):
        Secret = Pool().get('ksef.secret')
        data = Secret.fetch(self.authorization, kind)
        if not data:
            return None
        try:
            value = json.loads(data.decode('utf-8'))
        except ValueError:
            return None
        # Bound to the API and the NIP: a change of environment or of
        # company identifier makes them useless.
        if (value.get('api_url') != self.urls.api_url
                or value.get('nip') != self.authorization.nip):
            return None
        return value.get('data')

    def _store(self, kind, data):
        Secret = Pool().get('ksef.secret')
        if data is None:
            Secret.forget(self.authorization, kind)
            return
        Secret.store(self.authorization.company, self.authorization, kind,
            json.dumps({
                    'api_url': self.urls.api_url,
                    'nip': self.authorization.nip,
                    'data': data,
                    }).encode('utf-8'))

    def _on_tokens(self, tokens):
        with without_check_access():
            self._store(TOKENS_KIND, tokens.to_dict() if tokens else None)

    # -- client --------------------------------------------------------------

    def credentials(self):
        pool = Pool()
        Secret = pool.get('ksef.secret')
        authorization = self.authorization
        authorization.check_ready()
        context = ContextIdentifier.nip(authorization.nip)
        if authorization.auth_method == 'token':
            token = Secret.fetch(authorization, 'ksef_token')
            return TokenCredentials(context, token.decode('utf-8'))
        certificate = authorization.active_certificate('authentication')
        return CertificateCredentials(context, certificate.certificate,
            certificate.private_key())

    @property
    def client(self):
        if self._client is None:
            stored = self._load(TOKENS_KIND)
            tokens = None
            if stored:
                try:
                    tokens = AuthTokens.from_dict(stored)
                except (KeyError, TypeError, ValueError):
                    tokens = None
            wait = status_wait()
            self._client = KSeFClient(self.urls.api_url,
                status_url=self.urls.status_url,
                timeout=timeout(),
                retry=RetryPolicy(
                    max_attempts=_option('max_attempts', 3, int),
                    backoff_initial=_option('retry_backoff', 1.0),
                    rate_limit_max_wait=_option('rate_limit_wait', 10.0)),
                poll=PollPolicy(
                    interval=_option('poll_interval', 1.0),
                    invoice_timeout=wait, session_timeout=wait,
                    auth_timeout=_option('auth_wait', 120.0)),
                tokens=tokens,
                credentials=self.credentials(),
                on_tokens=self._on_tokens)
        return self._client

    def close(self):
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- interactive session -------------------------------------------------

    def session(self):
        """The interactive session to send in: the stored one while it is
        valid long enough, else a new one (stored at once)."""
        if self._session is None:
            stored = self._load(SESSION_KIND)
            if stored:
                try:
                    session = OnlineSession.from_dict(stored)
                except (KeyError, TypeError, ValueError):
                    session = None
                if session and session.valid_until and (
                        session.valid_until - SESSION_MARGIN > _utcnow()):
                    self._session = session
                elif session:
                    self._close_quietly(session)
        if self._session is None:
            self._session = self.client.open_online_session()
            self.opened = True
            with without_check_access():
                self._store(SESSION_KIND, self._session.to_dict())
        return self._session

    def drop_session(self):
        "Forget the stored session (KSeF closed it)."
        self._session = None
        with without_check_access():
            self._store(SESSION_KIND, None)

    def _close_quietly(self, session):
        try:
            self.client.close_online_session(session)
        except errors.KSeFError as error:
            logger.info("closing KSeF session %s: %s",
                session.reference_number, error.code)
        with without_check_access():
            self._store(SESSION_KIND, None)


class InvoiceKSeF(metaclass=PoolMeta):
    __name__ = 'account.invoice.ksef'

    advice = fields.Function(fields.Text("What to Do"), 'get_advice')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._buttons.update({
                'send_now': {
                    'invisible': ~Eval('state').in_(
                        ['pending', 'offline', 'rejected']),
                    'depends': ['state'],
                    },
                'check_status': {
                    'invisible': ~Eval('state').in_(['sent']),
                    'depends': ['state'],
                    },
                'download_upo': {
                    'invisible': ((Eval('state') != 'accepted')
                        | Bool(Eval('upo'))),
                    'depends': ['state', 'upo'],
                    },
                })

    def get_advice(self, name):
        if self.state == 'rejected':
            if self.mode != 'online':
                return gettext('ksef.msg_advice_rejected_offline')
            if (self.error_code or '') in {'410', '415'}:
                return gettext('ksef.msg_advice_rejected_permission')
            return gettext('ksef.msg_advice_rejected')
        if (self.state == 'accepted' and not self.upo
                and self.error_description):
            return gettext('ksef.msg_advice_upo_retry')
        if self.state in {'pending', 'offline'} and self.error_description:
            if self.state == 'pending' and not (
                    self.authorization and
                    self.authorization.offline_available):
                return gettext('ksef.msg_advice_pending_no_offline')
            return gettext('ksef.msg_advice_retry')
        return None

    # -- buttons -------------------------------------------------------------

    @classmethod
    @ModelView.button
    def send_now(cls, records):
        with without_check_access():
            rejected = [r for r in records if r.state == 'rejected']
            if rejected:
                # Sent again as they are: useful after KSeF permissions
                # were fixed; KSeF refuses unchanged wrong content again.
                cls.write(rejected, {
                        'state': 'pending',
                        'next_attempt': None,
                        })
            cls.ksef_send(records, wait=True)

    @classmethod
    @ModelView.button
    def check_status(cls, records):
        with without_check_access():
            cls.ksef_check(records)

    @classmethod
    @ModelView.button
    def download_upo(cls, records):
        with without_check_access():
            cls.ksef_check(records)

    # -- selection -----------------------------------------------------------

    @classmethod
    def _ksef_to_send_domain(cls):
        now = naive_utc(_utcnow())
        return [
            ('state', 'in', list(SENDABLE)),
            ('mode', '!=', 'total_failure'),
            ['OR',
                ('next_attempt', '=', None),
                ('next_attempt', '<=', now),
                ],
            ]

    @classmethod
    def _ksef_order(cls):
        return [('deadline', 'ASC NULLS LAST'), ('issue_date', 'ASC'),
            ('id', 'ASC')]

    @classmethod
    def ksef_send_queued(cls, records):
        "Queue task run after posting commits."
        # Records locked or already sent by another worker are skipped.
        cls.ksef_send(records)

    @classmethod
    def ksef_send(cls, records=None, wait=True):
        """Send records (all those due, when None: the cron) to KSeF.

        The transaction is committed around each invoice (or batch)."""
        transaction = Transaction()
        with without_check_access():
            if records is None:
                records = cls.search(cls._ksef_to_send_domain(),
                    order=cls._ksef_order())
            else:
                records = [r for r in cls.browse(records)
                    if r.state in SENDABLE]
            groups = OrderedDict()
            for record in records:
                if record.authorization:
                    groups.setdefault(record.authorization.id, []).append(
                        record.id)
            ids = [i for group in groups.values() for i in group]
            transaction.commit()
            sent = []
            for authorization_id, group in groups.items():
                sent.extend(cls._ksef_send_company(authorization_id, group))
            if wait and sent:
                cls.ksef_check(cls.browse(sent), wait=True)
        return ids

    @classmethod
    def _ksef_lock(cls, record_id, states=SENDABLE):
        """Lock the row of `record_id` for this transaction and return the
        fresh record when it is still in `states`, else None.

        Call it at the start of a transaction (just after a commit): on
        PostgreSQL a row locked by another worker is skipped (SKIP LOCKED)
        and a row changed by a worker that committed meanwhile makes the
        lock fail, and is skipped too."""
        transaction = Transaction()
        cursor = transaction.connection.cursor()
        table = cls._table
        try:
            if backend.name == 'postgresql':
                cursor.execute('SELECT "state" FROM "%s" WHERE "id" = %%s '
                    'FOR UPDATE SKIP LOCKED' % table, (record_id,))
            else:
                # SQLite: take the database write lock now; another
                # process waits here until this transaction ends.
                cursor.execute('UPDATE "%s" SET "attempts" = "attempts" '
                    'WHERE "id" = ?' % table, (record_id,))
                cursor.execute('SELECT "state" FROM "%s" WHERE "id" = ?'
                    % table, (record_id,))
            row = cursor.fetchone()
        except backend.DatabaseOperationalError:
            transaction.rollback()
            return None
        if not row or row[0] not in states:
            return None
        return cls(record_id)

    @classmethod
    def _ksef_send_company(cls, authorization_id, ids):
        "Send `ids` of one authorization; return the ids now sent."
        pool = Pool()
        Authorization = pool.get('ksef.authorization')
        transaction = Transaction()
        authorization = Authorization(authorization_id)
        sender = Sender(authorization)
        sent = []
        try:
            if len(ids) > batch_threshold():
                sent = cls._ksef_send_batch(sender, ids)
                if sent is not None:
                    return sent
                sent = []
            for record_id in ids:
                transaction.commit()
                record = cls._ksef_lock(record_id)
                if record is None:
                    continue
                outcome = cls._ksef_send_one(sender, record)
                transaction.commit()
                if outcome == 'sent':
                    sent.append(record_id)
                elif outcome == 'stop':
                    break
        except UserError as error:
            # Configuration (certificate, token, secret key): every record
            # keeps waiting with the reason shown.
            transaction.rollback()
            cls._ksef_config_problem(ids, error)
        finally:
            sender.close()
            transaction.commit()
        return sent

    @classmethod
    def _ksef_config_problem(cls, ids, error):
        records = [r for r in cls.browse(ids) if r.state in SENDABLE]
        cls.write(records, {
                'error_code': 'configuration',
                'error_description': error.message,
                'next_attempt': naive_utc(_utcnow()
                    + datetime.timedelta(seconds=retry_delay())),
                })
        Transaction().commit()

    def _ksef_send_values(self):
        return {
            'offline_mode': self.mode != 'online',
            'hash_of_corrected_invoice': self.corrected_hash or None,
            }

    @classmethod
    def _ksef_send_one(cls, sender, record):
        """Send one locked record in the interactive session.  Return
        'sent', 'failed' (this record only) or 'stop' (KSeF cannot be
        reached: the others of the company wait too)."""
        client = sender.client
        if record.session_reference and not record.invoice_reference:
            # An earlier send's answer was lost: look for the invoice in
            # that session before sending it again.
            status = cls._ksef_find(client, record.session_reference,
                record.fa3_hash)
            if status is not None:
                cls.write([record], {
                        'state': 'sent',
                        'invoice_reference': status.reference_number,
                        'error_code': None,
                        'error_description': None,
                        })
                return 'sent'
        for attempt in range(2):
            try:
                session = sender.session()
                if sender.opened:
                    # The new session is kept before the next call; the
                    # commit ends the row lock: take it again.
                    sender.opened = False
                    Transaction().commit()
                    record = cls._ksef_lock(record.id)
                    if record is None:
                        return 'failed'
                result = client.send_invoice(session, record.fa3,
                    **record._ksef_send_values())
            except errors.SessionClosed as error:
                sender.drop_session()
                if attempt:
                    # Closed again at once: try later, like any transient
                    # failure, instead of ending the whole run.
                    cls._ksef_transient([record], error)
                    return 'stop'
                continue
            except errors.OutcomeUnknown as error:
                cls._ksef_transient([record], error,
                    session_reference=error.params.get('session'))
                return 'stop'
            except errors.KSeFError as error:
                if _retry_later(error):
                    cls._ksef_transient([record], error)
                    return 'stop'
                cls._ksef_reject([record], error)
                return 'failed'
            cls.write([record], {
                    'state': 'sent',
                    'session_reference': result.session_reference_number,
                    'invoice_reference': result.reference_number,
                    'attempts': record.attempts + 1,
                    'next_attempt': None,
                    'error_code': None,
                    'error_description': None,
                    })
            return 'sent'

    @classmethod
    def _ksef_find(cls, client, session_reference, invoice_hash):
        "The status of `invoice_hash` in the session, None if unknown."
        try:
            return client.find_session_invoice(session_reference,
                invoice_hash)
        except errors.KSeFError as error:
            logger.info("KSeF session %s not searchable: %s",
                session_reference, error.code)
            return None

    @classmethod
    def _ksef_send_batch(cls, sender, ids):
        """Send `ids` in one batch session per offline flag.  Return the
        ids sent, or None when the batch could not be built (the caller
        sends them one by one)."""
        transaction = Transaction()
        client = sender.client
        sent = []
        transaction.commit()
        # Lock every record of the batch for the whole exchange.
        records = []
        for record_id in ids:
            record = cls._ksef_lock(record_id)
            if record is not None and not record.corrected_hash:
                records.append(record)
        groups = OrderedDict()
        for record in records:
            groups.setdefault(record.mode != 'online', []).append(record)
        for offline, group in groups.items():
            try:
                package = BatchPackage.build(
                    ('%d.xml' % r.id, r.fa3) for r in group)
            except errors.KSeFError as error:
                logger.warning("KSeF batch not built: %s", error)
                return None
            try:
                with package:
                    session = client.open_batch_session(package,
                        offline_mode=offline)
                    # Committed before the next remote call: a lost upload
                    # is reconciled in this session by hash.
                    cls.write(group, {
                            'session_reference': session.reference_number,
                            'invoice_reference': None,
                            })
                    transaction.commit()
                    if any(cls._ksef_lock(r.id) is None for r in group):
                        # Another worker took one meanwhile: it will find
                        # this session unclosed and send them itself.
                        transaction.rollback()
                        return sent
                    client.upload_batch_parts(session, package)
                    client.close_batch_session(session)
            except errors.KSeFError as error:
                if _retry_later(error):
                    cls._ksef_transient(cls.browse([r.id for r in group]),
                        error)
                    transaction.commit()
                    return sent
                cls._ksef_reject(cls.browse([r.id for r in group]), error)
                transaction.commit()
                continue
            group = cls.browse([r.id for r in group])
            cls.write(group, {
                    'state': 'sent',
                    'next_attempt': None,
                    'error_code': None,
                    'error_description': None,
                    })
            for record in group:
                record.attempts += 1
            cls.save(group)
            transaction.commit()
            sent.extend(r.id for r in group)
        return sent

    @classmethod
    def _ksef_transient(cls, records, error, session_reference=None):
        """KSeF could not be reached or did not answer: try again later
        (issue offline when the company may: see `_ksef_unreachable`)."""
        code, description = _describe(error)
        delay = retry_delay()
        if error.retry_after:
            delay = max(float(error.retry_after), 1.0)
        values = {
            'error_code': code,
            'error_description': gettext('ksef.msg_send_transient',
                error=description),
            'next_attempt': naive_utc(
                _utcnow() + datetime.timedelta(seconds=delay)),
            }
        for record in records:
            record_values = dict(values, attempts=record.attempts + 1)
            if session_reference:
                record_values['session_reference'] = session_reference
                record_values['invoice_reference'] = None
            cls.write([record], record_values)
        if not isinstance(error, (errors.RateLimited,
                    errors.AuthenticationFailed,
                    errors.AuthenticationRequired)):
            cls._ksef_unreachable(cls.browse([r.id for r in records]))

    @classmethod
    def _ksef_unreachable(cls, records):
        "Hook: KSeF unreachable for `records` (offline issuing)."
        pass

    @classmethod
    def _ksef_reject(cls, records, error):
        code, description = _describe(error)
        cls.write(list(records), {
                'state': 'rejected',
                'error_code': code,
                'error_description': description,
                'next_attempt': None,
                })
        cls._ksef_notify_rejected(records)

    @classmethod
    def _ksef_notify_rejected(cls, records):
        pass

    # -- statuses and UPO ----------------------------------------------------

    @classmethod
    def _ksef_to_check_domain(cls):
        return ['OR',
            ('state', '=', 'sent'),
            [('state', '=', 'accepted'), ('upo', '=', None)],
            ]

    @classmethod
    def ksef_check(cls, records=None, wait=False):
        """Ask KSeF the status of sent records and fetch missing UPOs
        (all such records when None: the cron).  Commits after each."""
        pool = Pool()
        Authorization = pool.get('ksef.authorization')
        transaction = Transaction()
        with without_check_access():
            if records is None:
                records = cls.search(cls._ksef_to_check_domain(),
                    order=[('id', 'ASC')])
            groups = OrderedDict()
            for record in records:
                if record.authorization and (record.state == 'sent' or (
                            record.state == 'accepted' and not record.upo)):
                    groups.setdefault(record.authorization.id, []).append(
                        record.id)
            transaction.commit()
            for authorization_id, ids in groups.items():
                sender = Sender(Authorization(authorization_id))
                try:
                    cls._ksef_check_company(sender, ids, wait)
                except UserError as error:
                    transaction.rollback()
                    logger.warning("KSeF status check not possible: %s",
                        error.message)
                finally:
                    sender.close()
                    transaction.commit()

    @classmethod
    def _ksef_check_company(cls, sender, ids, wait):
        transaction = Transaction()
        client = sender.client
        listings = {}  # batch session -> {hash: status}
        deadline = _utcnow() + datetime.timedelta(
            seconds=status_wait() if wait else 0)
        for record_id in ids:
            transaction.commit()
            record = cls._ksef_lock(record_id, ('sent', 'accepted'))
            if record is None:
                continue
            status = None
            try:
                if record.state == 'sent':
                    status = cls._ksef_status(client, record, listings,
                        deadline)
                    if status is not None:
                        cls._ksef_apply_status(client, record, status)
                        transaction.commit()
                        record = cls(record_id)
                if record.state == 'accepted' and not record.upo:
                    cls._ksef_fetch_upo(client, record, status)
            except errors.RateLimited as error:
                # The next records would be refused too (and KSeF makes
                # repeated excess wait longer): the next run goes on.
                logger.info("KSeF rate limit reached checking statuses "
                    "(retry after %s s)", error.retry_after)
                transaction.commit()
                break
            except errors.KSeFError as error:
                logger.info("KSeF status of %s not known yet: %s",
                    record.invoice_number, error.code)
                if not errors.is_transient(error):
                    code, description = _describe(error)
                    cls.write([record], {
                            'error_code': code,
                            'error_description': description,
                            })
            transaction.commit()

    @classmethod
    def _ksef_status(cls, client, record, listings, deadline):
        """The final InvoiceStatus of a sent record, or None while KSeF
        processes it (or when the record went back to pending)."""
        session = record.session_reference
        # The client polls until a final status or the time left (none:
        # one look).
        left = max(0.0, (deadline - _utcnow()).total_seconds())
        if record.invoice_reference:
            try:
                return client.wait_for_invoice(session,
                    record.invoice_reference, timeout=left)
            except errors.StillProcessing:
                return None
        # Batch: the session's invoices by hash, once the session is done.
        if session not in listings:
            try:
                session_status = client.wait_for_session(session,
                    timeout=left)
            except errors.StillProcessing:
                return None
            # KSeF's largest page: a batch of 10 000 invoices is listed
            # in 10 requests (this list allows 20 a minute).
            listings[session] = (session_status, {
                    s.invoice_hash: s
                    for s in client.list_session_invoices(session,
                        page_size=1000)})
        session_status, by_hash = listings[session]
        status = by_hash.get(record.fa3_hash)
        if status is None:
            # Never processed (package refused, upload not finished in
            # time...): send it again.
            code, description = _describe(session_status.error()
                or errors.SessionFailed(session=session,
                    status_code=session_status.code,
                    description=session_status.status.description,
                    details=''))
            cls.write([record], {
                    'state': 'pending',
                    'session_reference': None,
                    'invoice_reference': None,
                    'error_code': code,
                    'error_description': description,
                    })
            return None
        cls.write([record], {'invoice_reference': status.reference_number})
        return status if status.is_final else None

    @classmethod
    def _ksef_apply_status(cls, client, record, status):
        "Record the final `status` of `record` (sent)."
        if status.is_success:
            cls._ksef_accept(record, status.ksef_number,
                status.acquisition_date or status.invoicing_date)
            return
        error = status.error()
        if status.code == InvoiceStatus.DUPLICATE:
            cls._ksef_duplicate(client, record, error)
            return
        if error.transient or status.code == 405:
            # Cancelled by the system or by a session error: not taken,
            # send it again (a copy KSeF did take answers 440).
            code, description = _describe(error)
            cls.write([record], {
                    'state': 'pending',
                    'session_reference': None,
                    'invoice_reference': None,
                    'error_code': code,
                    'error_description': description,
                    })
            return
        cls._ksef_reject([record], error)

    @classmethod
    def _ksef_accept(cls, record, ksef_number, accepted_at,
            session_reference=None, invoice_reference=None):
        values = {
            'state': 'accepted',
            'ksef_number': ksef_number,
            'accepted_at': naive_utc(accepted_at or _utcnow()),
            'next_attempt': None,
            'error_code': None,
            'error_description': None,
            }
        if session_reference:
            values['session_reference'] = session_reference
        if invoice_reference:
            values['invoice_reference'] = invoice_reference
        cls.write([record], values)

    @classmethod
    def _ksef_duplicate(cls, client, record, error):
        """KSeF answered 440: an invoice of the same seller, kind and
        number is already there.  When that original has our hash, it is
        this very document (accepted before, e.g. after a lost answer):
        take its KSeF number.  Otherwise it is another document."""
        original_number = error.params.get('original_ksef_number')
        original_session = error.params.get('original_session')
        original = None
        if original_session:
            original = client.find_session_invoice(original_session,
                record.fa3_hash)
        if (original is not None and original.is_success
                and original.ksef_number
                and original.ksef_number == (
                    original_number or original.ksef_number)):
            cls._ksef_accept(record, original.ksef_number,
                original.acquisition_date or original.invoicing_date,
                session_reference=original_session,
                invoice_reference=original.reference_number)
            logger.info("KSeF duplicate of %s reconciled to %s",
                record.invoice_number, original.ksef_number)
            return
        code, description = _describe(error)
        cls.write([record], {
                'state': 'rejected',
                'error_code': code,
                'error_description': gettext(
                    'ksef.msg_send_duplicate_other',
                    invoice=record.invoice_number or '',
                    ksef_number=original_number or '',
                    description=description),
                'next_attempt': None,
                })
        cls._ksef_notify_rejected([record])

    @classmethod
    def _ksef_fetch_upo(cls, client, record, status=None):
        """Store the UPO of accepted `record`.  From the pre-signed address
        of its final `status` when it has one still valid (KSeF does not
        rate-limit those downloads), else from the API."""
        upo = None
        url = status.upo_download_url if status is not None else None
        expiration = (status.upo_download_url_expiration
            if status is not None else None)
        if url and (expiration is None or expiration > _utcnow()):
            try:
                upo = client.download_upo(url, reference=record.ksef_number)
            except errors.KSeFError as error:
                logger.info("KSeF UPO of %s not downloaded: %s",
                    record.invoice_number, error.code)
        if upo is None:
            upo = client.get_invoice_upo(record.session_reference,
                ksef_number=record.ksef_number)
        cls.write([record], {
                'upo': upo.content,
                'upo_reference': record.ksef_number,
                # A former failed download (e.g. a refused UPO) is over.
                'error_code': None,
                'error_description': None,
                })


class Authorization(metaclass=PoolMeta):
    __name__ = 'ksef.authorization'

    @classmethod
    def on_modification(cls, mode, authorizations, field_names=None):
        super().on_modification(mode, authorizations,
            field_names=field_names)
        if mode == 'write' and field_names and (
                field_names & {'environment', 'auth_method'}):
            # Tokens and sessions of the former settings are useless.
            Secret = Pool().get('ksef.secret')
            for authorization in authorizations:
                Secret.forget(authorization, TOKENS_KIND)
                Secret.forget(authorization, SESSION_KIND)



class Invoice(metaclass=PoolMeta):
    __name__ = 'account.invoice'

    ksef_message = fields.Function(fields.Text("KSeF Message",
            states={
                'invisible': ~Eval('ksef_message'),
                }),
        'get_ksef_message')

    def get_ksef_message(self, name):
        record = self.ksef_records[0] if self.ksef_records else None
        if record is None:
            return None
        lines = []
        if record.error_description:
            if record.error_code:
                lines.append('[%s] %s' % (
                        record.error_code, record.error_description))
            else:
                lines.append(record.error_description)
        if record.advice:
            lines.append(record.advice)
        return '\n\n'.join(lines) or None

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._buttons.update({
                'ksef_send': {
                    'invisible': ~Eval('ksef_state').in_(
                        ['pending', 'offline', 'rejected']),
                    'depends': ['ksef_state'],
                    },
                'ksef_check': {
                    'invisible': ~Eval('ksef_state').in_(
                        ['sent', 'accepted']),
                    'depends': ['ksef_state'],
                    },
                })

    def _ksef_never_issued(self):
        "Whether KSeF refused this invoice: it was never issued."
        return bool(self.ksef_records) and all(
            r.state == 'rejected' and r.mode == 'online'
            for r in self.ksef_records)

    def get_allow_cancel(self, name):
        allowed = super().get_allow_cancel(name)
        if (not allowed and self.state == 'posted' and self.type == 'out'
                and self._ksef_never_issued()):
            # Its move must be reversed; no credit note, since there is
            # no issued invoice to correct.
            allowed = True
        return allowed

    @classmethod
    def cancel(cls, invoices):
        for invoice in invoices:
            if (invoice.type == 'out' and invoice.state == 'posted'
                    and not invoice.cancel_move
                    and invoice._ksef_never_issued()):
                # For this call only (the company is not saved): cancel
                # with a reversing move even when the company does not
                # cancel customer invoices.
                invoice.company.cancel_invoice_out = True
        super().cancel(invoices)

    @classmethod
    def _ksef_issue(cls, invoices, store=True):
        records = super()._ksef_issue(invoices, store=store)
        if records:
            InvoiceKSeF = Pool().get('account.invoice.ksef')
            # Sent after the posting commits, never inside it.
            with Transaction().set_context(queue_name='ksef'):
                InvoiceKSeF.__queue__.ksef_send_queued(records)
        return records

    @classmethod
    @ModelView.button
    def ksef_send(cls, invoices):
        InvoiceKSeF = Pool().get('account.invoice.ksef')
        records = [r for i in invoices for r in i.ksef_records]
        if records:
            InvoiceKSeF.send_now(records)

    @classmethod
    @ModelView.button
    def ksef_check(cls, invoices):
        InvoiceKSeF = Pool().get('account.invoice.ksef')
        records = [r for i in invoices for r in i.ksef_records]
        if records:
            InvoiceKSeF.check_status(records)
