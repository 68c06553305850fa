# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
from trytond.exceptions import UserError, UserWarning
from trytond.model.exceptions import ValidationError


class KSeFConfigurationError(UserError):
    pass


class KSeFCertificateError(UserError):
    pass


class KSeFCertificateWarning(UserWarning):
    pass


class KSeFAuthorizationValidationError(ValidationError):
    pass


class KSeFAnnouncementValidationError(ValidationError):
    pass


class KSeFDeadlineError(UserError):
    pass


class KSeFBackdatedWarning(UserWarning):
    pass
