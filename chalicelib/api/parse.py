"""Turning request data into validated schema objects."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from chalicelib.domain import InvalidRequest
from chalicelib.settings import Settings


def parse[M: BaseModel](model: type[M], data: Any, settings: Settings) -> M:
    """Validate request data, turning pydantic's errors into InvalidRequest."""
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    try:
        return model.model_validate(data, context={"settings": settings})
    except ValidationError as exc:
        details = [
            {
                "field": ".".join(str(part) for part in error["loc"]) or None,
                "problem": error["msg"].removeprefix("Value error, "),
            }
            for error in exc.errors(include_url=False, include_input=False)
        ]
        summary = "; ".join(
            f"{d['field']}: {d['problem']}" if d["field"] else f"{d['problem']}" for d in details
        )
        raise InvalidRequest(f"Invalid request: {summary}", details) from None
