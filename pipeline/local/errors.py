"""SageMaker's errors as the local service raises and answers them.

Every layer raises ``ServiceError``; ``responses`` answers it in AWS's JSON 1.1 error shape
(``__type``, ``message``, ``x-amzn-ErrorType``; ``runtime_api.error``).
"""


class ServiceError(Exception):
    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def validation(message: str) -> ServiceError:
    return ServiceError("ValidationException", message)


def missing_parameter(member: str) -> ServiceError:
    """A member the API leaves optional but this operation needs."""
    return validation(f"The local SageMaker service needs the parameter {member}")
