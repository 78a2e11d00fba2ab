"""Error answers exactly as the fact sheet gives them (code, description, HTTP status); no ``time`` block."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A Bitrix24 error answer: raised by method code, rendered by the app or put into ``result_error``."""

    def __init__(self, status: int, code: str | int, description: str) -> None:
        super().__init__(f"{status} {code} {description}")
        self.status = status
        self.code = code
        self.description = description

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "error_description": self.description}

    @property
    def outcome(self) -> str:
        """Key for the stats: the code, or the description for the empty-code crm errors."""
        return str(self.code) if self.code != "" else self.description


def bad_request(description: str) -> ApiError:
    return ApiError(400, "", description)


def invalid_credentials() -> ApiError:
    return ApiError(401, "INVALID_CREDENTIALS", "Invalid request credentials")


def method_not_found() -> ApiError:
    return ApiError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")


def query_limit() -> ApiError:
    return ApiError(503, "QUERY_LIMIT_EXCEEDED", "Too many requests")


def operation_time_limit() -> ApiError:
    return ApiError(429, "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.")


def overload() -> ApiError:
    return ApiError(503, "OVERLOAD_LIMIT", "REST API is blocked due to overload.")


def internal_error() -> ApiError:
    return ApiError(500, "INTERNAL_SERVER_ERROR", "Internal server error")


def batch_length_exceeded() -> ApiError:
    return ApiError(400, "ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded")


def batch_method_not_allowed() -> ApiError:
    return ApiError(405, "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage")


def engine_error(code: str | int, description: str) -> ApiError:
    """An error of the newer controller-based methods (crm.item.*, crm.type.*): HTTP 400 with a code."""
    return ApiError(400, code, description)


def missing_parameter(name: str) -> ApiError:
    return engine_error(100, f"Could not find value for parameter {{{name}}}")


def invalid_parameter(value: str, name: str, kind: str) -> ApiError:
    return engine_error(
        100, f"Invalid value {value} to match with parameter {{{name}}}. Should be value of type {kind}."
    )
