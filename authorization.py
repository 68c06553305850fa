# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Per-company KSeF authorization: environment, NIP, how to authenticate and
whether offline invoices may be issued."""
from trytond.i18n import gettext
from trytond.model import ModelSQL, ModelView, Unique, fields
from trytond.model.exceptions import AccessError
from trytond.pool import Pool
from trytond.pyson import Eval
from trytond.transaction import Transaction
from trytond.wizard import Button, StateTransition, StateView, Wizard

from trytond_ksef import environments

from .common import require_ksef_admin
from .exceptions import (
    KSeFAuthorizationValidationError,
    KSeFConfigurationError,
)
from .secret import forget_owned

ENVIRONMENTS = [
    ('test', "Test (TE)"),
    ('demo', "Pre-production (DEMO)"),
    ('prod', "Production"),
    ]


def company_nip(company):
    """The compact Polish NIP of `company`'s party, from its `pl_vat`
    identifier (or a Polish `eu_vat`), or None."""
    from stdnum.pl import nip as stdnum_nip
    party = company.party if company else None
    if not party:
        return None
    for identifier in party.identifiers:
        code = None
        if identifier.type == 'pl_vat':
            code = identifier.code
        elif identifier.type == 'eu_vat' and (identifier.code or '').upper(
                ).replace(' ', '').startswith('PL'):
            code = identifier.code.upper().replace(' ', '')[2:]
        if code:
            compact = stdnum_nip.compact(code)
            if stdnum_nip.is_valid(compact):
                return compact
    return None


class Authorization(ModelSQL, ModelView):
    "KSeF Authorization"
    __string__ = "KSeF Authorization"
    __name__ = 'ksef.authorization'

    company = fields.Many2One(
        'company.company', "Company", required=True, ondelete='CASCADE',
        states={'readonly': Eval('id', -1) >= 0})
    environment = fields.Selection(ENVIRONMENTS, "Environment",
        required=True,
        help="KSeF environment the company's invoices go to. Only "
        "Production has legal effect; Test and Pre-production never "
        "receive real invoices.")
    nip = fields.Function(fields.Char("NIP",
            help="Taken from the Polish VAT identifier (NIP) of the "
            "company's party."), 'get_nip')
    auth_method = fields.Selection([
            ('certificate', "KSeF certificate"),
            ('token', "KSeF token"),
            ], "Authentication", required=True,
        help="How the company authenticates to KSeF: with its KSeF "
        "authentication certificate (recommended) or with a KSeF token.")
    skip_offline = fields.Boolean("Skip Offline Certificates",
        help="Issue no invoice offline: when KSeF cannot be reached, "
        "invoices wait until it accepts them. Uploading an offline "
        "certificate clears this option.")
    certificates = fields.One2Many(
        'ksef.certificate', 'authorization', "Certificates", readonly=True)
    token_stored = fields.Function(
        fields.Boolean("KSeF Token Stored"), 'get_token_stored')
    offline_available = fields.Function(
        fields.Boolean("Offline Issuing Available"),
        'get_offline_available')
    status = fields.Function(fields.Text("Status"), 'get_status')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints = [
            ('company_unique', Unique(t, t.company),
                'ksef.msg_authorization_company_unique'),
            ]
        cls._buttons.update({
                'upload_certificate': {},
                'set_token': {
                    'invisible': Eval('auth_method') != 'token',
                    },
                })

    @staticmethod
    def default_company():
        return Transaction().context.get('company')

    @classmethod
    def default_environment(cls):
        return 'test'

    @classmethod
    def default_auth_method(cls):
        return 'certificate'

    @classmethod
    def default_skip_offline(cls):
        return False

    def get_rec_name(self, name):
        return self.company.rec_name if self.company else ''

    @classmethod
    def search_rec_name(cls, name, clause):
        return [('company.rec_name',) + tuple(clause[1:])]

    def get_nip(self, name):
        return company_nip(self.company)

    def get_token_stored(self, name):
        return Pool().get('ksef.secret').exists(self, 'ksef_token')

    def active_certificate(self, purpose):
        "The usable certificate of `purpose`, or None."
        for certificate in self.certificates:
            if (certificate.purpose == purpose and certificate.active
                    and certificate.state in {'valid', 'expiring'}):
                return certificate
        return None

    def get_offline_available(self, name):
        return (not self.skip_offline
            and self.active_certificate('offline') is not None)

    def get_status(self, name):
        lines = []
        if not self.nip:
            lines.append(gettext('ksef.msg_company_nip_missing',
                    company=self.company.rec_name if self.company else ''))
        if self.auth_method == 'certificate':
            if not self.active_certificate('authentication'):
                lines.append(gettext(
                        'ksef.msg_status_no_authentication_certificate'))
        elif not self.token_stored:
            lines.append(gettext('ksef.msg_status_no_token'))
        if self.skip_offline:
            lines.append(gettext('ksef.msg_status_offline_skipped'))
        elif not self.active_certificate('offline'):
            lines.append(gettext('ksef.msg_status_no_offline_certificate'))
        if not lines:
            lines.append(gettext('ksef.msg_status_ready'))
        return '\n'.join(lines)

    def environment_urls(self):
        from .common import environment
        return environment(self.environment)

    def check_ready(self):
        "Raise a clear error when KSeF cannot be used for this company."
        if not self.nip:
            raise KSeFConfigurationError(gettext(
                    'ksef.msg_company_nip_missing',
                    company=self.company.rec_name))
        if (self.auth_method == 'certificate'
                and not self.active_certificate('authentication')):
            raise KSeFConfigurationError(gettext(
                    'ksef.msg_no_authentication_certificate',
                    company=self.company.rec_name))
        if self.auth_method == 'token' and not self.token_stored:
            raise KSeFConfigurationError(gettext(
                    'ksef.msg_no_token', company=self.company.rec_name))

    @classmethod
    def validate_fields(cls, authorizations, field_names):
        super().validate_fields(authorizations, field_names)
        if field_names is None or 'environment' in field_names:
            for authorization in authorizations:
                if authorization.environment not in environments.ENVIRONMENTS:
                    raise KSeFAuthorizationValidationError(gettext(
                            'ksef.msg_environment_invalid',
                            environment=authorization.environment,
                            error=''))

    @classmethod
    def get_for_company(cls, company):
        "The authorization of `company` (record or id), or None."
        company_id = getattr(company, 'id', company)
        if company_id is None:
            return None
        records = cls.search([('company', '=', company_id)], limit=1)
        return records[0] if records else None

    @classmethod
    def copy(cls, authorizations, default=None):
        if not authorizations:
            return []
        raise AccessError(gettext('ksef.msg_authorization_no_copy'))

    @classmethod
    def on_delete(cls, authorizations):
        callback = super().on_delete(authorizations)
        records = list(authorizations)
        callback.append(lambda: forget_owned(records))
        return callback

    @classmethod
    @ModelView.button_action('ksef.wizard_certificate_upload')
    def upload_certificate(cls, authorizations):
        pass

    @classmethod
    @ModelView.button_action('ksef.wizard_token_set')
    def set_token(cls, authorizations):
        pass


class TokenSetStart(ModelView):
    "Set KSeF Token"
    __string__ = "Set KSeF Token"
    __name__ = 'ksef.token.set.start'
    authorization = fields.Many2One(
        'ksef.authorization', "Authorization", readonly=True)
    token = fields.Char("KSeF Token", strip=False, required=True,
        help="The token generated in KSeF for this company. It is "
        "stored encrypted and can never be read back.")


class TokenSet(Wizard):
    "Set KSeF Token"
    __name__ = 'ksef.token.set'
    start = StateView('ksef.token.set.start',
        'ksef.token_set_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Save", 'save', 'tryton-ok', default=True),
            ])
    save = StateTransition()

    def default_start(self, fields):
        return {'authorization': self.record.id if self.record else None}

    def transition_save(self):
        pool = Pool()
        Secret = pool.get('ksef.secret')
        require_ksef_admin()
        token = (self.start.token or '').strip()
        # Never keep the token in the wizard's session data.
        self.start.token = None
        if not token:
            raise KSeFConfigurationError(gettext('ksef.msg_token_empty'))
        authorization = self.record
        Secret.store(authorization.company, authorization, 'ksef_token',
            token.encode('utf-8'))
        return 'end'
