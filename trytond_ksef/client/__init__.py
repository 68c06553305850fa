# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""KSeF 2.0 API client (httpx), framework-free.

``from trytond_ksef.client import KSeFClient`` and the objects below;
errors are in `trytond_ksef.errors`.
"""
from ._http import DEFAULT_TIMEOUT, RetryPolicy, parse_retry_after
from .api import KSeFClient, KSeFStatusClient, PollPolicy
from .batch import (
    DEFAULT_PART_SIZE,
    MAX_INVOICES,
    MAX_PACKAGE_SIZE,
    MAX_PART_SIZE,
    MAX_PARTS,
    BatchEntry,
    BatchPackage,
    BatchPart,
)
from .models import (
    FA3,
    AuthOperation,
    AuthStatus,
    AuthTokens,
    BatchSession,
    CertificateCredentials,
    Challenge,
    ContextIdentifier,
    FormCode,
    InvoiceStatus,
    KSeFStatus,
    OnlineSession,
    PartUpload,
    PublicKeyCertificate,
    SentInvoice,
    SessionStatus,
    StatusInfo,
    StatusMessage,
    TokenCredentials,
    Upo,
    UpoPage,
    parse_datetime,
)

__all__ = [
    'KSeFClient', 'KSeFStatusClient', 'RetryPolicy', 'PollPolicy',
    'DEFAULT_TIMEOUT', 'parse_retry_after',
    'BatchPackage', 'BatchEntry', 'BatchPart', 'DEFAULT_PART_SIZE',
    'MAX_PART_SIZE', 'MAX_PARTS', 'MAX_PACKAGE_SIZE', 'MAX_INVOICES',
    'FA3', 'FormCode', 'ContextIdentifier', 'AuthTokens', 'AuthOperation',
    'AuthStatus', 'Challenge', 'CertificateCredentials', 'TokenCredentials',
    'PublicKeyCertificate', 'OnlineSession', 'BatchSession', 'PartUpload',
    'SentInvoice', 'InvoiceStatus', 'SessionStatus', 'StatusInfo', 'Upo',
    'UpoPage', 'KSeFStatus', 'StatusMessage', 'parse_datetime',
    ]
