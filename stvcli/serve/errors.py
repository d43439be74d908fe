"""API errors in the OpenAI shape: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse


class ApiError(Exception):
    """A request the server answers with a 4xx/5xx JSON error instead of a completion."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def unauthorized(message: str) -> ApiError:
    return ApiError(401, message, type="authentication_error", code="invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"})


def overloaded(retry_after_s: int = 1) -> ApiError:
    return ApiError(503, "the server is busy (request queue full); retry shortly", type="server_error",
                    code="overloaded", headers={"Retry-After": str(retry_after_s)})


def server_error(message: str) -> ApiError:
    return ApiError(500, message, type="server_error", code="internal_error")


def image_too_large(max_bytes: int, param: str) -> ApiError:
    return ApiError(413, f"image is over the limit of {max_bytes} bytes (--max-image-bytes)", param=param,
                    code="image_too_large")
