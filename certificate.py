# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""KSeF certificates of a company: authentication and offline.

Uploads go through a wizard that checks everything with
`trytond_ksef.certificates.inspect` (the same code as
``trytond-ksef inspect-certificate``) and stores nothing when a check fails.
The private key is kept only in `ksef.secret`, encrypted; the password is
used to open the key and then dropped.
"""
import datetime as dt

from trytond.i18n import gettext
from trytond.model import ModelSQL, ModelView, fields
from trytond.model.exceptions import AccessError
from trytond.pool import Pool
from trytond.pyson import Date, Eval, If
from trytond.transaction import Transaction
from trytond.wizard import Button, StateTransition, StateView, Wizard

from trytond_ksef import certificates as core

from .common import require_ksef_admin, secret_key
from .exceptions import KSeFCertificateError, KSeFCertificateWarning
from .secret import forget_owned

PURPOSES = [
    ('authentication', "Authentication"),
    ('offline', "Offline"),
    ]
KEY_KIND = 'private_key'


def _purpose_label(purpose):
    return {
        'authentication': gettext('ksef.msg_purpose_authentication'),
        'offline': gettext('ksef.msg_purpose_offline'),
        }.get(purpose, gettext('ksef.msg_purpose_none'))


def certificate_error(error):
    "Translate a core CertificateError into the user's language."
    params = dict(error.params)
    for key in ('expected', 'found'):
        if key in params:
            params[key] = _purpose_label(params[key])
    return KSeFCertificateError(gettext('ksef.msg_' + error.code, **params))


class Certificate(ModelSQL, ModelView):
    "KSeF Certificate"
    __string__ = "KSeF Certificate"
    __name__ = 'ksef.certificate'
    _rec_name = 'subject'

    authorization = fields.Many2One(
        'ksef.authorization', "Authorization", required=True,
        ondelete='CASCADE', readonly=True)
    company = fields.Many2One(
        'company.company', "Company", required=True, readonly=True)
    purpose = fields.Selection(PURPOSES, "Purpose", required=True,
        readonly=True)
    active = fields.Boolean("Active", readonly=True,
        help="Only one certificate per purpose is active; an upload "
        "replaces the previous one.")
    subject = fields.Char("Subject", readonly=True)
    identifier_type = fields.Char("Identifier Type", readonly=True)
    identifier = fields.Char("Identifier", readonly=True)
    serial_hex = fields.Char("Serial Number", readonly=True)
    fingerprint = fields.Char("SHA-256 Fingerprint", readonly=True)
    key_type = fields.Char("Key Type", readonly=True)
    valid_from = fields.DateTime("Valid From", readonly=True)
    valid_to = fields.DateTime("Valid To", readonly=True)
    certificate = fields.Binary("Certificate", readonly=True,
        filename='certificate_filename',
        help="The certificate as issued (public; the private key is never "
        "shown).")
    certificate_filename = fields.Function(
        fields.Char("Certificate Filename"), 'get_certificate_filename')
    state = fields.Function(fields.Selection([
                ('valid', "Valid"),
                ('expiring', "Expiring Soon"),
                ('expired', "Expired"),
                ('not_yet_valid', "Not Yet Valid"),
                ], "State"), 'get_state', searcher='search_state')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [('valid_to', 'DESC'), ('id', 'DESC')]

    @classmethod
    def view_attributes(cls):
        return super().view_attributes() + [
            ('/tree', 'visual', If(Eval('valid_to', None)
                    & (Eval('valid_to', None)
                        < Date(delta_days=core.EXPIRY_WARNING.days)),
                    'danger', '')),
            ]

    @staticmethod
    def default_active():
        return True

    def get_certificate_filename(self, name):
        return '%s-%s.der' % (self.purpose, (self.serial_hex or '')[:16])

    @classmethod
    def _now(cls):
        return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)

    def get_state(self, name):
        now = self._now()
        if not self.valid_to or not self.valid_from:
            return 'expired'
        if now < self.valid_from:
            return 'not_yet_valid'
        if now > self.valid_to:
            return 'expired'
        if self.valid_to - now < core.EXPIRY_WARNING:
            return 'expiring'
        return 'valid'

    @classmethod
    def search_state(cls, name, clause):
        _, operator, value = clause[:3]
        now = cls._now()
        soon = now + core.EXPIRY_WARNING
        domains = {
            'valid': [('valid_from', '<=', now), ('valid_to', '>=', soon)],
            'expiring': [('valid_to', '>=', now), ('valid_to', '<', soon)],
            'expired': [('valid_to', '<', now)],
            'not_yet_valid': [('valid_from', '>', now)],
            }
        values = value if isinstance(value, (list, tuple)) else [value]
        domain = ['OR'] + [domains[v] for v in values if v in domains]
        if operator in {'!=', 'not in'}:
            return ['NOT', domain] if len(domain) > 1 else []
        return domain if len(domain) > 1 else [('id', '=', -1)]

    def load(self):
        "The certificate as the core sees it."
        return core.load_certificate(self.certificate)

    def private_key(self):
        "Decrypt and load the private key (server side only)."
        Secret = Pool().get('ksef.secret')
        data = Secret.fetch(self, KEY_KIND)
        if data is None:
            raise KSeFCertificateError(gettext(
                    'ksef.msg_certificate_key_missing',
                    certificate=self.rec_name))
        # Checked at the upload (key matches the certificate).
        return core.load_private_key(data, None, checked=True)

    @classmethod
    def copy(cls, certificates, default=None):
        # A copy would share nothing secret but would be a certificate
        # without its key: refuse instead of making a useless record.
        if not certificates:
            return []
        raise AccessError(gettext('ksef.msg_certificate_no_copy'))

    @classmethod
    def check_modification(cls, mode, certificates, values=None,
            external=False):
        super().check_modification(
            mode, certificates, values=values, external=external)
        if mode == 'write' and external:
            raise AccessError(gettext('ksef.msg_certificate_readonly'))

    @classmethod
    def on_delete(cls, certificates):
        callback = super().on_delete(certificates)
        records = list(certificates)
        callback.append(lambda: forget_owned(records))
        return callback

    @classmethod
    def import_inspection(cls, authorization, purpose, inspection):
        """Store a checked certificate with its key for `authorization` and
        deactivate the previous one of the same purpose."""
        pool = Pool()
        Secret = pool.get('ksef.secret')
        Authorization = pool.get('ksef.authorization')
        certificate = inspection.certificate
        key_der = _key_der(inspection.key)
        secret_key()  # Refuse before storing anything without a key.
        previous = cls.search([
                ('authorization', '=', authorization.id),
                ('purpose', '=', purpose),
                ('active', '=', True),
                ])
        if previous:
            cls.write(previous, {'active': False})
        record, = cls.create([{
                    'authorization': authorization.id,
                    'company': authorization.company.id,
                    'purpose': purpose,
                    'active': True,
                    'subject': certificate.subject,
                    'identifier_type': certificate.identifier.type,
                    'identifier': certificate.identifier.value,
                    'serial_hex': certificate.serial_hex,
                    'fingerprint': certificate.fingerprint,
                    'key_type': certificate.key_type,
                    'valid_from': _naive(certificate.not_before),
                    'valid_to': _naive(certificate.not_after),
                    'certificate': certificate.der,
                    }])
        Secret.store(authorization.company, record, KEY_KIND, key_der)
        if purpose == 'offline' and authorization.skip_offline:
            # Adding an offline certificate turns offline issuing on.
            Authorization.write([authorization], {'skip_offline': False})
        return record

    @classmethod
    def check_expiry(cls, records=None):
        """Notify about active certificates that expire within 30 days or
        have expired (scheduled task)."""
        pool = Pool()
        Cron = pool.get('ir.cron')
        if records is None:
            records = cls.search([
                    ('active', '=', True),
                    ('state', 'in', ['expiring', 'expired']),
                    ])
        for record in records:
            if record.state not in {'expiring', 'expired'}:
                continue
            message = ('ksef.msg_certificate_expired'
                if record.state == 'expired'
                else 'ksef.msg_certificate_expiring')
            Cron.notify('tryton-warning', 'ksef.act_certificate_form',
                None, message, certificate=record.rec_name,
                company=record.company.rec_name,
                purpose=_purpose_label(record.purpose),
                date=record.valid_to.date().isoformat())
        return records


def _naive(moment):
    return moment.astimezone(dt.timezone.utc).replace(tzinfo=None)


def _key_der(key):
    from cryptography.hazmat.primitives import serialization
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())


class CertificateUploadStart(ModelView):
    "Upload KSeF Certificate"
    __string__ = "Upload KSeF Certificate"
    __name__ = 'ksef.certificate.upload.start'
    authorization = fields.Many2One(
        'ksef.authorization', "Authorization", required=True,
        readonly=True)
    purpose = fields.Selection(PURPOSES, "Purpose", required=True,
        help="Authentication: to connect to KSeF. Offline: to sign the "
        "CODE II of invoices issued while KSeF is unreachable.")
    file_format = fields.Selection([
            ('separate', "Certificate and key files"),
            ('pkcs12', "PKCS#12 bundle (.p12, .pfx)"),
            ], "Format", required=True)
    certificate = fields.Binary("Certificate (.crt, .cer, .pem)",
        states={
            'invisible': Eval('file_format') != 'separate',
            'required': Eval('file_format') == 'separate',
            })
    # The names of the fields that carry secrets contain "secret" (or
    # "password"): Tryton then leaves their values out of its RPC log,
    # which otherwise writes every argument in full at DEBUG level.
    private_key_secret = fields.Binary("Private Key (.key, .pem)",
        states={
            'invisible': Eval('file_format') != 'separate',
            'required': Eval('file_format') == 'separate',
            })
    pkcs12_secret = fields.Binary("PKCS#12 File",
        states={
            'invisible': Eval('file_format') != 'pkcs12',
            'required': Eval('file_format') == 'pkcs12',
            })
    password = fields.Char("Password", strip=False,
        help="Opens the private key; it is used once and never stored.")

    @classmethod
    def default_file_format(cls):
        return 'separate'


class CertificateUpload(Wizard):
    "Upload KSeF Certificate"
    __name__ = 'ksef.certificate.upload'
    start = StateView('ksef.certificate.upload.start',
        'ksef.certificate_upload_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Upload", 'upload', 'tryton-ok', default=True),
            ])
    upload = StateTransition()

    def default_start(self, fields):
        pool = Pool()
        Authorization = pool.get('ksef.authorization')
        authorization = None
        if self.model and self.model.__name__ == 'ksef.authorization':
            authorization = self.record
        if authorization is None:
            authorization = Authorization.get_for_company(
                Transaction().context.get('company'))
        return {
            'authorization': authorization.id if authorization else None,
            'purpose': 'authentication',
            'file_format': 'separate',
            }

    def transition_upload(self):
        pool = Pool()
        Certificate = pool.get('ksef.certificate')
        Warning = pool.get('res.user.warning')
        require_ksef_admin()
        start = self.start
        authorization = start.authorization
        purpose = start.purpose
        password = start.password or None
        files = {}
        if start.file_format == 'pkcs12':
            files['p12_bytes'] = start.pkcs12_secret
        else:
            files['cert_bytes'] = start.certificate
            files['key_bytes'] = start.private_key_secret
        # Nothing secret stays in the wizard's session data.
        start.password = start.private_key_secret = None
        start.pkcs12_secret = None
        # Both files of a pair are needed: a certificate without its key
        # is useless here (and inspect() needs the certificate).
        if not all(files.values()):
            raise KSeFCertificateError(gettext('ksef.msg_certificate_no_file'))
        secret_key()  # A clear message before any work when it is missing.
        try:
            inspection = core.inspect(
                password=password.encode('utf-8') if password else None,
                purpose=purpose, nip=authorization.nip, **files)
        except core.CertificateError as error:
            raise certificate_error(error) from None
        for warning in inspection.warnings:
            key = Warning.format('ksef_certificate_%s' % warning.code,
                [authorization])
            key += '_' + inspection.certificate.fingerprint[:16]
            if Warning.check(key):
                raise KSeFCertificateWarning(key, gettext(
                        'ksef.msg_warning_' + warning.code,
                        **warning.params))
        Certificate.import_inspection(authorization, purpose, inspection)
        return 'end'
