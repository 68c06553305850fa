# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Plain input data of an FA(3) invoice.

The Tryton layer maps an ``account.invoice`` to these dataclasses and calls
`trytond_ksef.fa3.build`.  Conventions:

* amounts are `decimal.Decimal` (int accepted, float refused) in the
  invoice currency, with at most 2 decimals; unit prices at most 8,
  quantities and exchange rates at most 6;
* dates are `datetime.date`; the creation time is an aware
  `datetime.datetime`;
* texts are str; whitespace runs are collapsed as the schema's xsd:token
  does; an empty text counts as missing;
* signs follow the accounting: a credit note (``kind='KOR'``) made as a
  "correction by difference" has negative amounts.  A line with a negative
  quantity is written with a positive quantity and a negative unit price,
  as the Ministry's samples do.
"""
import datetime
from dataclasses import dataclass, field
from decimal import Decimal
from typing import List, Optional, Tuple

# Buyer / third party identifier kinds
NIP = 'nip'  # Polish NIP: DaneIdentyfikacyjne/NIP
EU_VAT = 'eu_vat'  # VAT number of another member state: KodUE + NrVatUE
OTHER = 'other'  # any other tax identifier: KodKraju? + NrID
INTERNAL = 'internal'  # third party only: IDWew (NIP-5 digits)
IDENTIFIER_KINDS = (NIP, EU_VAT, OTHER, INTERNAL)

# Payment methods (TFormaPlatnosci)
CASH, CARD, VOUCHER, CHEQUE, CREDIT, TRANSFER, MOBILE = range(1, 8)

# Legal basis kinds of an exemption
EXEMPTION_LAW = 'law'  # P_19A: provision of the Polish VAT act
EXEMPTION_DIRECTIVE = 'directive'  # P_19B: article of directive 2006/112
EXEMPTION_OTHER = 'other'  # P_19C: another legal basis

# Margin schemes (PMarzy)
MARGIN_TRAVEL = 'travel'  # P_PMarzy_2, art. 119
MARGIN_SECOND_HAND = 'second_hand'  # P_PMarzy_3_1, art. 120
MARGIN_ART = 'art'  # P_PMarzy_3_2
MARGIN_ANTIQUES = 'antiques'  # P_PMarzy_3_3 (collectibles and antiques)

# Correction types (TypKorekty)
CORRECTION_AT_ORIGINAL_DATE = 1
CORRECTION_AT_CORRECTION_DATE = 2
CORRECTION_AT_OTHER_DATE = 3

# Third party roles (TRolaPodmiotu3) used by the checks
ROLE_FACTOR = 1
ROLE_RECIPIENT = 2
ROLE_ADDITIONAL_BUYER = 4
ROLE_PAYER = 6
ROLE_JST_RECIPIENT = 8
ROLE_VAT_GROUP_MEMBER_RECIPIENT = 10

DEFAULT_SYSTEM_INFO = 'Tryton ksef'


@dataclass
class Address:
    "Adres: ISO country code and one or two address lines."
    country: str
    line1: str
    line2: Optional[str] = None
    gln: Optional[str] = None  # Global Location Number


@dataclass
class Contact:
    "DaneKontaktowe (at most 3 per party)."
    email: Optional[str] = None
    phone: Optional[str] = None  # at most 16 characters


@dataclass
class Seller:
    "Podmiot1: the taxpayer issuing the invoice."
    nip: str
    name: str
    address: Address
    contacts: List[Contact] = field(default_factory=list)
    correspondence_address: Optional[Address] = None
    # Write PrefiksPodatnika "PL" (registered for intra-Community
    # transactions); added anyway when a line is '0 WDT' or 'np II'.
    eu_vat: bool = False
    eori: Optional[str] = None
    # StatusInfoPodatnika: 1 liquidation, 2 restructuring, 3 bankruptcy,
    # 4 enterprise in inheritance
    status: Optional[int] = None
    # Stopka/Rejestry
    krs: Optional[str] = None
    regon: Optional[str] = None
    bdo: Optional[str] = None


@dataclass
class Buyer:
    """Podmiot2.  Identified by ``tax_identifier`` of kind
    ``tax_identifier_kind`` ('nip', 'eu_vat' or 'other'), or by nothing
    when ``consumer`` is set (BrakID)."""
    name: Optional[str] = None
    address: Optional[Address] = None
    tax_identifier: Optional[str] = None
    tax_identifier_kind: str = NIP
    # KodKraju of an 'other' identifier; for 'eu_vat' the prefix of the
    # number is used when this is not given.
    tax_identifier_country: Optional[str] = None
    consumer: bool = False
    # JST: the invoice concerns a subordinate unit of a local government
    # (then a third party with role 8 is needed); GV: a VAT group member
    # (role 10).
    jst: bool = False
    vat_group: bool = False
    contacts: List[Contact] = field(default_factory=list)
    correspondence_address: Optional[Address] = None
    customer_number: Optional[str] = None  # NrKlienta
    buyer_key: Optional[str] = None  # IDNabywcy (links corrections)
    eori: Optional[str] = None


@dataclass
class ThirdParty:
    "Podmiot3: factor, recipient, payer, JST unit, VAT group member..."
    role: int
    name: Optional[str] = None
    address: Optional[Address] = None
    tax_identifier: Optional[str] = None
    tax_identifier_kind: str = NIP  # also 'internal' (IDWew)
    tax_identifier_country: Optional[str] = None
    share: Optional[Decimal] = None  # Udzial, percent
    customer_number: Optional[str] = None
    contacts: List[Contact] = field(default_factory=list)


@dataclass
class Exemption:
    "Legal basis of an exempt sale (P_19A, P_19B or P_19C)."
    basis: str
    kind: str = EXEMPTION_LAW


@dataclass
class Line:
    """FaWiersz.  ``amount`` is the net value (P_11); for a margin-scheme
    line (``tax_code`` None on an invoice with ``margin``) it is the gross
    value (P_11A) and ``unit_price`` the gross unit price (P_9B)."""
    name: str
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal
    tax_code: Optional[str]  # exactly as TStawkaPodatku: '23', '0 WDT'...
    unit: Optional[str] = None  # P_8A
    # P_10: discount per unit not included in unit_price, so that
    # amount = quantity x (unit_price - discount), as in sample 4.
    discount: Optional[Decimal] = None
    delivery_date: Optional[datetime.date] = None  # P_6A
    index: Optional[str] = None  # Indeks: seller's product code
    gtin: Optional[str] = None
    pkwiu: Optional[str] = None
    cn: Optional[str] = None
    pkob: Optional[str] = None
    gtu: Optional[str] = None  # 'GTU_01'..'GTU_13'
    procedure: Optional[str] = None  # 'WSTO_EE', 'IED', 'TT_D', ...
    annex_15: bool = False  # P_12_Zal_15
    # KursWaluty, PLN per unit of the invoice currency; defaults to the
    # invoice's currency_rate
    currency_rate: Optional[Decimal] = None
    before_correction: bool = False  # StanPrzed: "before" row of a KOR
    # Legal basis of a 'zw' line (usually from the tax record)
    exemption: Optional[Exemption] = None
    uu_id: Optional[str] = None  # UU_ID
    # NrWierszaFa; defaults to the position (1-based).  The "before" and
    # "after" rows of one corrected line share their number.
    number: Optional[int] = None


@dataclass
class TaxTotal:
    """Accounting totals of one tax code (from the invoice's tax lines).
    Several entries with the same code are added up."""
    code: str
    base: Decimal
    amount: Decimal = Decimal(0)
    # tax in PLN for an invoice in another currency (P_14_xW); computed
    # from the exchange rates when missing
    amount_pln: Optional[Decimal] = None


@dataclass
class CorrectedInvoice:
    "DaneFaKorygowanej: one invoice a correction refers to."
    issue_date: datetime.date
    number: str
    ksef_number: Optional[str] = None  # None: issued outside KSeF


@dataclass
class Correction:
    "Correction data of a KOR invoice."
    invoices: List[CorrectedInvoice]
    reason: Optional[str] = None  # PrzyczynaKorekty
    type: Optional[int] = None  # TypKorekty 1, 2 or 3
    period: Optional[str] = None  # OkresFaKorygowanej (art. 106j ust. 3)
    corrected_number: Optional[str] = None  # NrFaKorygowany


@dataclass
class BankAccount:
    "RachunekBankowy."
    number: str  # NRB or IBAN, spaces are removed
    swift: Optional[str] = None
    bank_name: Optional[str] = None
    description: Optional[str] = None


@dataclass
class Payment:
    "Platnosc."
    due_dates: List[datetime.date] = field(default_factory=list)
    method: Optional[int] = None  # CASH .. MOBILE
    other_method: Optional[str] = None  # PlatnoscInna + OpisPlatnosci
    bank_accounts: List[BankAccount] = field(default_factory=list)
    paid_date: Optional[datetime.date] = None  # Zaplacono + DataZaplaty


@dataclass
class NewVehicle:
    """NowySrodekTransportu of an intra-Community supply of a new means of
    transport.  ``kind`` 'land' needs ``usage`` = mileage, 'water' and
    'air' the hours of use."""
    line_number: int  # NrWierszaFa of the line selling it (1-based)
    first_use_date: datetime.date  # P_22A
    kind: str  # 'land', 'water' or 'air'
    usage: str  # P_22B / P_22C / P_22D
    make: Optional[str] = None
    model: Optional[str] = None
    colour: Optional[str] = None
    registration: Optional[str] = None
    production_year: Optional[str] = None
    # land: VIN (P_22B1); water: hull number (P_22C1); air: serial number
    # (P_22D1)
    serial: Optional[str] = None
    vehicle_type: Optional[str] = None  # land only: P_22BT


@dataclass
class Invoice:
    """One FA(3) invoice.  ``kind`` is 'VAT' or 'KOR'.  ``taxes`` are the
    accounting totals per tax code; when None they are computed from the
    lines (net per code, tax rounded per code).  ``total`` (P_15) is
    checked when given."""
    seller: Seller
    buyer: Buyer
    number: str  # P_2
    issue_date: datetime.date  # P_1
    created: datetime.datetime  # DataWytworzeniaFa, aware
    lines: List[Line] = field(default_factory=list)
    kind: str = 'VAT'
    currency: str = 'PLN'
    # PLN per unit of `currency` used for the tax (KursWaluty of lines)
    currency_rate: Optional[Decimal] = None
    place: Optional[str] = None  # P_1M
    delivery_date: Optional[datetime.date] = None  # P_6, when != P_1
    period_start: Optional[datetime.date] = None  # OkresFa/P_6_Od
    period_end: Optional[datetime.date] = None  # OkresFa/P_6_Do
    taxes: Optional[List[TaxTotal]] = None
    total: Optional[Decimal] = None
    cash_accounting: bool = False  # P_16 "metoda kasowa"
    self_billing: bool = False  # P_17 "samofakturowanie"
    # P_18 "odwrotne obciążenie"; forced on by 'oo' and 'np II' lines
    reverse_charge: bool = False
    split_payment: bool = False  # P_18A "mechanizm podzielonej płatności"
    exemption: Optional[Exemption] = None  # basis of all 'zw' lines
    new_vehicles: List[NewVehicle] = field(default_factory=list)
    new_vehicle_art_42_5: bool = False  # P_42_5
    triangular: bool = False  # P_23
    margin: Optional[str] = None  # MARGIN_* or None
    correction: Optional[Correction] = None
    payment: Optional[Payment] = None
    third_parties: List[ThirdParty] = field(default_factory=list)
    delivery_notes: List[str] = field(default_factory=list)  # WZ
    # DodatkowyOpis: (key, value) or (key, value, line number)
    additional_info: List[Tuple] = field(default_factory=list)
    footer: List[str] = field(default_factory=list)  # Stopka/Informacje
    system_info: Optional[str] = DEFAULT_SYSTEM_INFO
