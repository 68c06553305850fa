# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
from trytond.pool import PoolMeta

CRON_METHODS = [
    ('ksef.certificate|check_expiry', "Check KSeF Certificate Expiry"),
    ('account.invoice.ksef|ksef_send', "Send Invoices to KSeF"),
    ('account.invoice.ksef|ksef_check', "Check KSeF Statuses and UPOs"),
    ('ksef.announcement|update_from_status_service',
        "Update KSeF Announcements"),
    ]


class Cron(metaclass=PoolMeta):
    __name__ = 'ir.cron'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.method.selection.extend(CRON_METHODS)
        cls._notifications.update(key for key, _ in CRON_METHODS)
