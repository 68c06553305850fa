# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""KSeF invoices: the FA(3) document of a customer invoice, built and frozen
when the invoice is posted, and the record that follows it through KSeF.

Posting a customer invoice of a company that has a KSeF authorization maps
the invoice to the core's `trytond_ksef.fa3` input, builds and validates
the FA(3) XML and stores the bytes with their SHA-256 in an
``account.invoice.ksef`` record (state pending).  Invalid or incomplete data
refuses the posting with one message listing every problem and the Tryton
field to fix.  Nothing here calls the network: sending is done later, from
the stored bytes, which are never rebuilt.
"""
import datetime
import re
from decimal import Decimal

from trytond.exceptions import UserError
from trytond.i18n import gettext
from trytond.model import (
    Index,
    ModelSQL,
    ModelView,
    Unique,
    Workflow,
    fields,
)
from trytond.model.exceptions import AccessError, ValidationError
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.tools import grouped_slice
from trytond.transaction import Transaction, without_check_access

from trytond_ksef import fa3
from trytond_ksef.crypto import sha256_b64
from trytond_ksef.fa3.common import (
    DATA_MESSAGES,
    countries,
    eu_countries,
    format_decimal,
)

STATES = [
    ('pending', "Pending"),
    ('offline', "Offline"),
    ('sent', "Sent"),
    ('accepted', "Accepted"),
    ('rejected', "Rejected"),
    ]
MODES = [
    ('online', "Online"),
    ('offline24', "Offline24"),
    ('offline', "Offline (KSeF Unavailable)"),
    ('failure', "Failure"),
    ('total_failure', "Total Failure"),
    ]
CORRECTION_TYPES = [
    (None, ""),
    ('1', "At the Date of the Original Invoice"),
    ('2', "At the Date of the Correction"),
    ('3', "At Another Date"),
    ]
# Values of the frozen document: written at creation, changed only by a
# technical correction (context key TECHNICAL_CORRECTION).
FROZEN_FIELDS = frozenset([
        'fa3', 'fa3_hash', 'fa3_size', 'seller_nip', 'issue_date',
        'invoice_number', 'kind'])
# Never changed
FIXED_FIELDS = frozenset(['invoice', 'company'])
TECHNICAL_CORRECTION = '_ksef_technical_correction'
# Params of the core's data problems, so that every message text can use
# them (missing keys would break the % formatting).
PROBLEM_PARAMS = ('max', 'codepoint', 'expected', 'format', 'min',
    'tax_code', 'currency', 'block_field', 'kind', 'other', 'role',
    'detail')
# Problem lines shown at most per invoice
MAX_PROBLEMS = 30


class KSeFInvoiceError(UserError):
    pass


class KSeFInvoiceAccessError(AccessError):
    pass


class KSeFInvoiceValidationError(ValidationError):
    pass


class InvoiceKSeF(Workflow, ModelSQL, ModelView):
    """KSeF Invoice

    One per customer invoice posted by a company using KSeF: the frozen
    FA(3) bytes and their hash, and the state of the invoice in KSeF.
    Only server code changes these records, never a user through RPC
    (`check_modification` refuses every external change); code that runs
    with access checks on (e.g. a wizard) must do its writes inside
    `trytond.transaction.without_check_access()`.
    """
    __string__ = "KSeF Invoice"
    __name__ = 'account.invoice.ksef'
    _rec_name = 'invoice_number'

    invoice = fields.Many2One(
        'account.invoice', "Invoice", required=True, ondelete='RESTRICT',
        readonly=True,
        domain=[
            ('company', '=', Eval('company', -1)),
            ('type', '=', 'out'),
            ])
    company = fields.Many2One(
        'company.company', "Company", required=True, readonly=True)
    authorization = fields.Many2One(
        'ksef.authorization', "Authorization", ondelete='RESTRICT',
        readonly=True,
        domain=[
            ('company', '=', Eval('company', -1)),
            ])
    state = fields.Selection(
        STATES, "State", required=True, readonly=True, sort=False)
    state_string = state.translated('state')
    mode = fields.Selection(
        MODES, "Mode", required=True, readonly=True, sort=False,
        help="How the invoice is issued: online, or in one of the offline "
        "modes the law allows.")
    fa3 = fields.Binary(
        "FA(3) Document", readonly=True, filename='fa3_filename',
        help="The FA(3) XML frozen when the invoice was posted: the bytes "
        "sent to KSeF, hashed and pointed to by the QR codes.")
    fa3_filename = fields.Function(
        fields.Char("FA(3) File Name"), 'get_filename')
    fa3_hash = fields.Char(
        "FA(3) SHA-256", readonly=True,
        help="Base64 SHA-256 of the FA(3) document.")
    fa3_size = fields.Integer("FA(3) Size", readonly=True)
    seller_nip = fields.Char("Seller NIP", readonly=True)
    issue_date = fields.Date("Issue Date", readonly=True)
    invoice_number = fields.Char("Invoice Number", readonly=True)
    kind = fields.Char(
        "Kind", readonly=True,
        help="RodzajFaktury of the document: VAT or KOR (correction).")
    ksef_number = fields.Char("KSeF Number", readonly=True)
    session_reference = fields.Char("Session Reference", readonly=True)
    invoice_reference = fields.Char("Invoice Reference", readonly=True)
    accepted_at = fields.DateTime("Accepted At", readonly=True)
    upo = fields.Binary("UPO", readonly=True, filename='upo_filename')
    upo_filename = fields.Function(
        fields.Char("UPO File Name"), 'get_filename')
    upo_reference = fields.Char("UPO Reference", readonly=True)
    error_code = fields.Char("Error Code", readonly=True)
    error_description = fields.Text("Error Description", readonly=True)
    deadline = fields.Date(
        "Deadline", readonly=True,
        help="The last day to send an offline invoice to KSeF.")
    attempts = fields.Integer("Attempts", required=True, readonly=True)
    next_attempt = fields.DateTime("Next Attempt", readonly=True)
    corrected_hash = fields.Char(
        "Corrected Document SHA-256", readonly=True,
        help="For a technical correction: the SHA-256 of the rejected "
        "offline document it replaces.")
    code2_link = fields.Char("CODE II Link", readonly=True, strip=False)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints = [
            ('invoice_unique', Unique(t, t.invoice),
                'ksef.msg_invoice_ksef_unique'),
            ]
        cls._sql_indexes.update({
                Index(t, (t.state, Index.Equality(cardinality='low')),
                    where=t.state.in_(['pending', 'offline', 'sent'])),
                Index(t, (t.ksef_number, Index.Equality())),
                })
        cls._order = [
            ('issue_date', 'DESC NULLS FIRST'),
            ('id', 'DESC'),
            ]

    @classmethod
    def default_company(cls):
        return Transaction().context.get('company')

    @classmethod
    def default_state(cls):
        return 'pending'

    @classmethod
    def default_mode(cls):
        return 'online'

    @classmethod
    def default_attempts(cls):
        return 0

    def get_filename(self, name):
        base = re.sub(r'[^\w.-]+', '_', self.invoice_number or '') or str(
            self.id)
        if name == 'upo_filename':
            return 'UPO_%s.xml' % base
        return '%s.xml' % base

    @classmethod
    def check_modification(cls, mode, records, values=None, external=False):
        super().check_modification(
            mode, records, values=values, external=external)
        if external:
            raise KSeFInvoiceAccessError(
                gettext('ksef.msg_invoice_ksef_system_only'))
        if mode == 'delete':
            for record in records:
                raise KSeFInvoiceAccessError(gettext(
                        'ksef.msg_invoice_ksef_delete',
                        invoice=record.rec_name))
        elif mode == 'write':
            changed = set(values)
            technical = Transaction().context.get(TECHNICAL_CORRECTION)
            if changed & FIXED_FIELDS or (
                    changed & FROZEN_FIELDS and not technical):
                for record in records:
                    raise KSeFInvoiceAccessError(gettext(
                            'ksef.msg_invoice_ksef_fa3_frozen',
                            invoice=record.rec_name))

    @classmethod
    def validate_fields(cls, records, field_names):
        super().validate_fields(records, field_names)
        if field_names is None or field_names & {
                'fa3', 'fa3_hash', 'fa3_size'}:
            for record in records:
                data = record.fa3
                if not data:
                    continue
                if (sha256_b64(data) != record.fa3_hash
                        or len(data) != record.fa3_size):
                    raise KSeFInvoiceValidationError(gettext(
                            'ksef.msg_invoice_ksef_hash_mismatch',
                            invoice=record.rec_name))

    @classmethod
    def copy(cls, records, default=None):
        if not records:
            return []
        raise KSeFInvoiceAccessError(gettext('ksef.msg_invoice_ksef_no_copy'))


# The KSeF choices of a customer invoice, made before posting.
_DRAFT_OUT_STATES = {
    'readonly': Eval('state') != 'draft',
    'invisible': Eval('type') != 'out',
    }


class Invoice(metaclass=PoolMeta):
    __name__ = 'account.invoice'

    ksef_records = fields.One2Many(
        'account.invoice.ksef', 'invoice', "KSeF Records", readonly=True)
    ksef_invoice = fields.Function(fields.Many2One(
            'account.invoice.ksef', "KSeF Invoice",
            states={
                'invisible': ~Eval('ksef_invoice'),
                }),
        'get_ksef')
    ksef_state = fields.Function(fields.Selection(
            [(None, "")] + STATES, "KSeF State"),
        'get_ksef', searcher='search_ksef')
    ksef_number = fields.Function(fields.Char("KSeF Number"),
        'get_ksef', searcher='search_ksef')
    ksef_split_payment = fields.Boolean(
        "Split Payment (MPP)",
        states=_DRAFT_OUT_STATES,
        help="Mark the KSeF invoice \"mechanizm podzielonej płatności\" "
        "(P_18A): required for a sale of goods or services of annex 15 of "
        "the VAT act over 15 000 PLN gross.")
    ksef_correction_type = fields.Selection(
        CORRECTION_TYPES, "Correction Effect", sort=False,
        states=_DRAFT_OUT_STATES,
        help="For a credit note sent to KSeF: when the correction takes "
        "effect in the tax records (TypKorekty). A reduction of the tax "
        "base usually takes effect at the date of the correction.")
    ksef_correction_reason = fields.Char(
        "Correction Reason",
        states=_DRAFT_OUT_STATES,
        help="For a credit note sent to KSeF: the reason written on the "
        "correction (PrzyczynaKorekty).  Left empty, a text naming the "
        "corrected invoice is used.")

    @classmethod
    def view_attributes(cls):
        return super().view_attributes() + [
            ('/form/notebook/page[@id="ksef"]', 'states', {
                    'invisible': Eval('type') != 'out',
                    }),
            ]

    @classmethod
    def copy(cls, invoices, default=None):
        default = default.copy() if default is not None else {}
        default.setdefault('ksef_records', None)
        return super().copy(invoices, default=default)

    _ksef_fields = {
        'ksef_invoice': 'id',
        'ksef_state': 'state',
        'ksef_number': 'ksef_number',
        }

    def get_ksef(self, name):
        record = self.ksef_records[0] if self.ksef_records else None
        if record is None:
            return None
        return getattr(record, self._ksef_fields[name])

    @classmethod
    def search_ksef(cls, name, clause):
        field = 'ksef_records.' + cls._ksef_fields[name]
        _, operator, value = clause[:3]
        if operator == '=' and value is None:
            return ['OR',
                ('ksef_records', '=', None),
                (field, '=', None),
                ]
        return [(field,) + tuple(clause[1:])]

    def _ksef_authorization(self):
        pool = Pool()
        Authorization = pool.get('ksef.authorization')
        if self.type != 'out' or not self.company:
            return None
        return Authorization.get_for_company(self.company)

    def _credit(self, **values):
        credit = super()._credit(**values)
        if self._ksef_authorization():
            if 'ksef_correction_type' not in values:
                credit.ksef_correction_type = '2'
            if 'ksef_correction_reason' not in values:
                with Transaction().set_context(language=self.party_lang):
                    credit.ksef_correction_reason = gettext(
                        'ksef.msg_invoice_ksef_correction_reason',
                        numbers=self.number or '')
            if 'ksef_split_payment' not in values:
                credit.ksef_split_payment = self.ksef_split_payment
        return credit

    @classmethod
    def _ksef_being_posted(cls, invoices):
        """The customer invoices `invoices` that a call of _post really
        posts: draft or validated ones, and those post_batch has marked
        posted without their move yet.  Re-posting by process (paid or
        cancelled invoices with a move) is left out."""
        return [i for i in invoices if i.type == 'out' and (
                i.state in {'draft', 'validated'}
                or (i.state == 'posted' and not i.move))]

    @classmethod
    def _post(cls, invoices):
        to_ksef = cls._ksef_being_posted(invoices)
        super()._post(invoices)
        if to_ksef:
            cls._ksef_issue(cls.browse([i.id for i in to_ksef]))

    @classmethod
    def post_batch(cls, invoices):
        super().post_batch(invoices)
        # _post runs later from the queue: check the FA(3) data now, so
        # that a refusal reaches the user and nothing is posted.
        to_check = cls._ksef_being_posted(
            cls.browse([i.id for i in invoices]))
        if to_check:
            cls._ksef_issue(to_check, store=False)

    @classmethod
    def draft(cls, invoices):
        for invoice in invoices:
            if invoice.state == 'cancelled' and invoice.ksef_records:
                raise KSeFInvoiceAccessError(gettext(
                        'ksef.msg_invoice_ksef_draft',
                        invoice=invoice.rec_name))
        super().draft(invoices)

    @classmethod
    def cancel(cls, invoices):
        for invoice in invoices:
            # A credit note with refund cancels the invoice it credits
            # with its own move (cancel_move): that is the legal way.
            if invoice.state != 'posted' or invoice.cancel_move:
                continue
            for record in invoice.ksef_records:
                if record.state == 'rejected' and record.mode == 'online':
                    # Never issued: KSeF refused it.
                    continue
                raise KSeFInvoiceAccessError(gettext(
                        'ksef.msg_invoice_ksef_cancel',
                        invoice=invoice.rec_name,
                        state=record.state_string))
        super().cancel(invoices)

    @classmethod
    def _ksef_issue(cls, invoices, store=True):
        """Build, validate and (with `store`) freeze the FA(3) document of
        each customer invoice of `invoices` whose company uses KSeF and
        that has none yet.  Raise one error listing the problems of every
        invoice that cannot make a valid document; then nothing is
        stored."""
        pool = Pool()
        Authorization = pool.get('ksef.authorization')
        InvoiceKSeF = pool.get('account.invoice.ksef')
        invoices = [i for i in invoices if i.type == 'out']
        if not invoices:
            return []
        with without_check_access():
            existing = set()
            for sub in grouped_slice([i.id for i in invoices]):
                existing.update(r.invoice.id for r in InvoiceKSeF.search(
                        [('invoice', 'in', list(sub))], order=[]))
            authorizations = {}
            now = datetime.datetime.now(datetime.timezone.utc)
            errors, to_create = [], []
            for invoice in invoices:
                if invoice.id in existing:
                    continue
                company = invoice.company
                if company.id not in authorizations:
                    authorizations[company.id] = (
                        Authorization.get_for_company(company))
                authorization = authorizations[company.id]
                if not authorization:
                    continue
                mapper = FA3Mapper(invoice, authorization, now)
                data = mapper.build()
                if data is None:
                    errors.append(mapper.message())
                    continue
                summary = fa3.parse_summary(data)
                to_create.append({
                        'invoice': invoice.id,
                        'company': company.id,
                        'authorization': authorization.id,
                        'state': 'pending',
                        'mode': 'online',
                        'fa3': data,
                        'fa3_hash': sha256_b64(data),
                        'fa3_size': len(data),
                        'seller_nip': summary['seller_nip'],
                        'issue_date': summary['issue_date'],
                        'invoice_number': summary['number'],
                        'kind': summary['kind'],
                        'attempts': 0,
                        })
            if errors:
                raise KSeFInvoiceError('\n\n'.join(errors))
            if store and to_create:
                return InvoiceKSeF.create(to_create)
        return []


def bank_account(instrument):
    """The FA(3) bank account of a payment mean's instrument when it is a
    ``bank.account`` (module bank), else None.  Read by attribute so that
    the module needs no dependency on bank."""
    if getattr(instrument, '__name__', None) != 'bank.account':
        return None
    numbers = list(getattr(instrument, 'numbers', None) or [])
    if not numbers:
        return None
    number = next((n for n in numbers if n.type == 'iban'), numbers[0])
    bank = getattr(instrument, 'bank', None)
    party = getattr(bank, 'party', None)
    return fa3.BankAccount(
        number=number.number_compact or number.number,
        swift=getattr(bank, 'bic', None) or None,
        bank_name=party.name if party else None)


def buyer_identifier(identifier):
    """(kind, code, country) of the FA(3) buyer identifier of a tax
    identifier of Tryton, or (None, None, None) without one.

    pl_vat is the Polish NIP; eu_vat keeps its country prefix (a PL one
    makes it a NIP in the core); the national VAT types of the other
    member states (de_vat, fr_tva...) are EU VAT numbers of their country;
    every other type is a foreign tax number of the country its name
    starts with."""
    if identifier is None:
        return None, None, None
    type_ = identifier.type or ''
    code = identifier.code_compact or identifier.code
    if type_ == 'pl_vat':
        return fa3.model.NIP, code, None
    if type_ == 'eu_vat':
        return fa3.model.EU_VAT, code, None
    country = type_.partition('_')[0].upper()
    if country == 'GR':
        country = 'EL'
    if country != 'PL' and country in eu_countries():
        return fa3.model.EU_VAT, code, country
    if country == 'EL':
        country = 'GR'
    return (fa3.model.OTHER, code,
        country if country in countries() else None)


class FA3Mapper:
    """Map one posted customer invoice to the core's `fa3.Invoice`, build
    and validate its FA(3) document, and describe every problem with the
    Tryton record and field to fix."""

    def __init__(self, invoice, authorization, created):
        self.invoice = invoice
        self.authorization = authorization
        self.created = created
        self.problems = []  # translated lines
        self.covered = set()  # core fields reported by our own checks
        self.addresses = {}  # 'seller.address' -> party.address
        self.lines = []  # the invoice lines, in FA(3) order
        self.line_taxes = {}  # index -> the tax giving the line's code
        self.reported_taxes = set()

    # -- problems ----------------------------------------------------------

    def where(self, record, field):
        """'Model "record", field "Field"' of `record`, translated."""
        names = record.__names__(field)
        if record == self.invoice:
            return gettext('ksef.msg_invoice_fa3_where_invoice',
                field=names['field'])
        return gettext('ksef.msg_invoice_fa3_where',
            model=names['model'], record=record.rec_name,
            field=names['field'])

    def where_line(self, index, field):
        line = self.lines[index]
        name = (line.description or (
                line.product.rec_name if line.product else '') or '')
        name = ' '.join(name.split())
        if len(name) > 40:
            name = name[:39] + '…'
        return gettext('ksef.msg_invoice_fa3_where_line',
            position=index + 1, line=name,
            field=line.__names__(field)['field'])

    def problem(self, key, where, message_id, **params):
        "Record a problem of ours, covering the core's `key` field."
        if key:
            self.covered.add(key)
        self.problems.append(gettext('ksef.msg_invoice_fa3_problem',
                field=where, rule=gettext(message_id, **params)))

    def is_covered(self, field):
        return any(field == key or field.startswith(key + '.')
            or field.startswith(key + '[') for key in self.covered)

    def core_problem(self, problem):
        "Record a problem found by the core."
        if self.is_covered(problem.field):
            return
        params = dict.fromkeys(PROBLEM_PARAMS, '')
        params.update({k: str(v) for k, v in problem.params.items()})
        if problem.code in DATA_MESSAGES:
            rule = gettext('ksef.msg_' + problem.code, **params)
        else:
            rule = problem.message
        self.problems.append(gettext('ksef.msg_invoice_fa3_problem',
                field=self.core_where(problem), rule=rule))

    def core_where(self, problem):
        "The Tryton record and field of the core's `problem`."
        invoice = self.invoice
        field = problem.field or ''
        match = re.match(r'lines\[(\d+)\](?:\.(\w+))?', field)
        if match and int(match.group(1)) < len(self.lines):
            index, attr = int(match.group(1)), match.group(2)
            tax = self.line_taxes.get(index)
            if attr == 'exemption' and tax:
                return self.where(tax.ksef_exemption_tax,
                    'ksef_exemption_basis')
            if attr == 'tax_code' and tax:
                return self.where(tax, 'ksef_rate_code')
            line_field = {
                'name': 'description',
                'quantity': 'quantity',
                'unit_price': 'unit_price',
                'amount': 'amount',
                'unit': 'unit',
                'index': 'product',
                }.get(attr, 'taxes')
            return self.where_line(index, line_field)
        for prefix in ('seller.address', 'buyer.address'):
            if field.startswith(prefix) and prefix in self.addresses:
                address = self.addresses[prefix]
                attr = field[len(prefix) + 1:]
                return self.where(address, {
                        'country': 'country',
                        'line2': 'city',
                        }.get(attr, 'street'))
        company_party = invoice.company.party
        if field.startswith('seller.nip'):
            return self.where(company_party, 'identifiers')
        if field.startswith('seller'):
            return self.where(company_party, 'name')
        if field.startswith('buyer.tax_identifier'):
            return self.where(invoice.party, 'identifiers')
        if field.startswith('buyer'):
            return self.where(invoice.party, 'name')
        if field.startswith('correction.reason'):
            return self.where(invoice, 'ksef_correction_reason')
        if field.startswith('correction.type'):
            return self.where(invoice, 'ksef_correction_type')
        if field.startswith('payment'):
            return self.where(invoice, 'payment_term')
        if field.startswith(('taxes', 'exemption')):
            return self.where(invoice, 'taxes')
        top = field.partition('.')[0].partition('[')[0]
        name = {
            'number': 'number',
            'issue_date': 'invoice_date',
            'currency': 'currency',
            'currency_rate': 'currency',
            'total': 'total_amount',
            'lines': 'lines',
            'correction': 'lines',
            }.get(top)
        if name:
            return self.where(invoice, name)
        return gettext('ksef.msg_invoice_fa3_where_document',
            path=problem.path or field)

    def message(self):
        "The translated refusal of the invoice, one line per problem."
        lines = self.problems[:MAX_PROBLEMS]
        if len(self.problems) > MAX_PROBLEMS:
            lines.append(gettext('ksef.msg_invoice_fa3_more_problems',
                    count=len(self.problems) - MAX_PROBLEMS))
        return gettext('ksef.msg_invoice_fa3_invalid',
            invoice=self.invoice.rec_name, problems='\n'.join(lines))

    # -- mapping ------------------------------------------------------------

    def build(self):
        """The validated FA(3) bytes of the invoice, or None when there are
        problems (see `message`)."""
        document = self.document()
        data = None
        try:
            # The XSD is checked once, by validate() below.
            data = fa3.build(document,
                check_nip=self.authorization.environment != 'test',
                schema_check=False)
        except fa3.FA3DataError as error:
            for problem in error.problems:
                self.core_problem(problem)
        if data is not None and not self.problems:
            # The XSD, and the rules build() keeps by construction.
            for problem in fa3.validate(data):
                if problem.is_error:
                    self.problems.append(gettext(
                            'ksef.msg_invoice_fa3_problem',
                            field=gettext(
                                'ksef.msg_invoice_fa3_where_document',
                                path=problem.path or '/'),
                            rule=problem.reason))
        if self.problems:
            return None
        return data

    def document(self):
        invoice = self.invoice
        self.lines = list(invoice.line_lines)
        lines = [self.line(i, line) for i, line in enumerate(self.lines)]
        seller = self.seller()
        currency, rate = self.currency()
        kind, correction = self.correction()
        return fa3.Invoice(
            seller=seller,
            buyer=self.buyer(),
            number=invoice.number,
            issue_date=invoice.invoice_date,
            created=self.created,
            lines=lines,
            kind=kind,
            currency=currency,
            currency_rate=rate,
            place=self.place,
            taxes=self.taxes(currency),
            total=invoice.total_amount,
            split_payment=bool(invoice.ksef_split_payment),
            correction=correction,
            payment=self.payment())

    def address(self, key, address, party):
        "The FA(3) address of party.address `address`."
        if address is None:
            self.problem(key, self.where(party, 'addresses'),
                'ksef.msg_invoice_address_missing')
            return None
        self.addresses[key] = address
        street = ' '.join((address.street_single_line or '').split())
        city = ' '.join(filter(None, [
                    (address.postal_code or '').strip(),
                    (address.city or '').strip()]))
        line1, line2 = (street, city or None) if street else (city, None)
        return fa3.Address(
            country=address.country.code if address.country else None,
            line1=line1 or None, line2=line2)

    def contacts(self, address, party):
        "The e-mail and phone for invoices of `address` or `party`."
        holder = address or party
        email = holder.contact_mechanism_get('email', usage='invoice')
        phone = holder.contact_mechanism_get(
            {'phone', 'mobile'}, usage='invoice')
        email = (email.value or '').strip() if email else ''
        number = ''
        if phone:
            number = (phone.value or '').strip()
            if len(number) > 16:  # the limit of Telefon
                number = (phone.value_compact or '').strip()
            if len(number) > 16:
                number = ''
        phone = number
        if not (email or phone):
            return []
        return [fa3.Contact(email=email or None, phone=phone or None)]

    def seller(self):
        invoice = self.invoice
        party = invoice.company.party
        nip = self.authorization.nip
        if not nip:
            self.problem('seller.nip', self.where(party, 'identifiers'),
                'ksef.msg_invoice_seller_nip_missing')
        address = party.address_get(type='invoice')
        self.place = None
        if address is not None:
            self.place = (address.city or '').strip() or None
        regon = eu_vat = None
        for identifier in party.identifiers:
            if identifier.type == 'pl_regon' and not regon:
                regon = identifier.code_compact
            elif identifier.type == 'eu_vat' and (
                    identifier.code_compact or '').upper().startswith('PL'):
                eu_vat = True
        return fa3.Seller(
            nip=nip,
            name=party.full_name,
            address=self.address('seller.address', address, party),
            contacts=self.contacts(address, party),
            eu_vat=bool(eu_vat),
            regon=regon)

    def buyer(self):
        invoice = self.invoice
        party = invoice.party
        identifier = invoice.party_tax_identifier or party.tax_identifier
        kind, code, country = buyer_identifier(identifier)
        # A party without tax identifier is a consumer (BrakID), unless it
        # has a REGON: then it is a business that must give its NIP.
        business = identifier is not None or any(
            i.type == 'pl_regon' for i in party.identifiers)
        address = invoice.invoice_address
        if business or (address is not None and (
                    address.street_single_line or address.city
                    or address.postal_code)):
            address = self.address('buyer.address', address, party)
        else:
            address = None  # a consumer's address is optional
        return fa3.Buyer(
            name=party.full_name,
            address=address,
            tax_identifier=code,
            tax_identifier_kind=kind or fa3.model.NIP,
            tax_identifier_country=country,
            consumer=not business,
            contacts=self.contacts(invoice.invoice_address, party),
            customer_number=party.code)

    def line(self, index, line):
        codes = {}
        for tax in line.taxes:
            code = tax.ksef_code
            if code:
                codes.setdefault(code, tax)
        code = tax = None
        if len(codes) == 1:
            (code, tax), = codes.items()
            self.line_taxes[index] = tax
        else:
            self.reported_taxes.update(line.taxes)
            where = self.where_line(index, 'taxes')
            if codes:
                self.problem('lines[%d].tax_code' % index, where,
                    'ksef.msg_invoice_line_rate_codes',
                    codes=', '.join(sorted(codes)))
            else:
                self.problem('lines[%d].tax_code' % index, where,
                    'ksef.msg_invoice_line_no_rate_code')
            self.covered.add('total')
        exemption = None
        if code == 'zw':
            basis_tax = tax.ksef_exemption_tax
            if basis_tax.ksef_exemption_basis:
                exemption = fa3.Exemption(
                    basis=basis_tax.ksef_exemption_basis,
                    kind=basis_tax.ksef_exemption_kind or 'law')
        product = line.product
        return fa3.Line(
            name=line.description or (product.rec_name if product else None),
            # As account.invoice.line computes the amount
            quantity=Decimal(str(line.quantity or 0)),
            unit_price=line.unit_price,
            amount=line.amount,
            tax_code=code,
            unit=line.unit.symbol if line.unit else None,
            index=(product.code or None) if product else None,
            exemption=exemption)

    def currency(self):
        "(ISO code, PLN per unit or None) of the invoice currency."
        pool = Pool()
        Currency = pool.get('currency.currency')
        invoice = self.invoice
        code = invoice.currency.code
        self.pln = None
        if code == 'PLN':
            return code, None
        plns = Currency.search([('code', '=', 'PLN')], limit=1)
        if not plns:
            self.problem('currency_rate', self.where(invoice, 'currency'),
                'ksef.msg_invoice_pln_missing')
            self.covered.add('taxes')
            return code, None
        self.pln, = plns
        with Transaction().set_context(date=invoice.currency_date):
            rate = Currency.compute(
                invoice.currency, Decimal(1), self.pln, round=False)
        # KursWaluty has at most 6 decimals (NBP publishes 4).
        rate = rate.quantize(Decimal('0.000001'))
        return code, Decimal(format_decimal(rate))

    def to_pln(self, amount):
        pool = Pool()
        Currency = pool.get('currency.currency')
        with Transaction().set_context(date=self.invoice.currency_date):
            return Currency.compute(self.invoice.currency, amount, self.pln)

    def taxes(self, currency):
        "The accounting totals per FA(3) code, from the invoice taxes."
        totals = []
        for tax_line in self.invoice.taxes:
            tax = tax_line.tax
            code = tax.ksef_code if tax else None
            if not code:
                self.covered.add('total')
                if tax is None or tax not in self.reported_taxes:
                    self.problem(None, self.where(tax_line, 'tax'),
                        'ksef.msg_invoice_tax_no_rate_code')
                continue
            amount_pln = None
            block = fa3.BLOCKS[fa3.TAX_CODES[code][0]]
            if currency != 'PLN' and self.pln and block.tax_pln:
                # The booked tax in PLN (P_14_xW)
                amount_pln = self.to_pln(tax_line.amount)
            totals.append(fa3.TaxTotal(code=code, base=tax_line.base,
                    amount=tax_line.amount, amount_pln=amount_pln))
        return totals

    def correction(self):
        "(kind, fa3.Correction or None) of the invoice."
        invoice = self.invoice
        originals = sorted(
            (i for i in invoice.origin_invoices
                if i.type == 'out' and i.company == invoice.company),
            key=lambda i: (i.invoice_date or datetime.date.min,
                i.number or '', i.id))
        if not originals and invoice.total_amount >= 0:
            return 'VAT', None
        corrected = []
        for i, original in enumerate(originals):
            record = (original.ksef_records[0]
                if original.ksef_records else None)
            number = None
            if record and record.state == 'accepted' and record.ksef_number:
                number = record.ksef_number
            elif record and record.mode != 'total_failure':
                # KSeF takes a correction only once the original has its
                # KSeF number; one without KSeF record was issued outside
                # KSeF (before the company used it).
                self.problem('correction.invoices[%d]' % i,
                    self.where(invoice, 'lines'),
                    'ksef.msg_invoice_original_not_accepted',
                    original=original.rec_name,
                    state=record.state_string)
            corrected.append(fa3.CorrectedInvoice(
                    issue_date=original.invoice_date,
                    number=original.number,
                    ksef_number=number))
        reason = invoice.ksef_correction_reason
        if not reason and originals:
            with Transaction().set_context(language=invoice.party_lang):
                reason = gettext('ksef.msg_invoice_ksef_correction_reason',
                    numbers=', '.join(o.number or '' for o in originals))
        type_ = invoice.ksef_correction_type
        return 'KOR', fa3.Correction(
            invoices=corrected,
            reason=reason,
            type=int(type_) if type_ else None)

    def payment(self):
        invoice = self.invoice
        if invoice.total_amount <= 0:
            return None
        due_dates = sorted({line.maturity_date
                for line in invoice.lines_to_pay if line.maturity_date})
        accounts = []
        for mean in getattr(invoice, 'payment_means', None) or []:
            account = bank_account(mean.instrument)
            if account and account not in accounts:
                accounts.append(account)
        if not due_dates and not accounts:
            return None
        return fa3.Payment(
            due_dates=due_dates,
            method=fa3.model.TRANSFER if accounts else None,
            bank_accounts=accounts)
