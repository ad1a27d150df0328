"""The OpenAPI 3 document, generated from the routes and their pydantic models."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from chalicelib.api.schemas import CreateVideoRequest, ErrorOut, RungOut
from chalicelib.settings import Settings

REF = "#/components/schemas/{model}"


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    status: int
    response: type[BaseModel] | None
    request: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    auth: bool = True
    errors: tuple[int, ...] = ()


def _limits(schemas: dict[str, Any], settings: Settings) -> None:
    """Write the limits that are settings into the request schema."""
    props = schemas[CreateVideoRequest.__name__]["properties"]
    props["title"]["maxLength"] = settings.max_title_length
    props["title"]["minLength"] = 1
    props["filename"]["maxLength"] = settings.max_filename_length
    props["content_type"]["enum"] = list(settings.allowed_content_types)
    props["size_bytes"]["maximum"] = settings.max_upload_bytes
    if RungOut.__name__ in schemas:
        # New videos get the configured ladder's rungs (those the source allows); not an
        # enum, since videos made under another ladder keep theirs.
        schemas[RungOut.__name__]["properties"]["name"]["examples"] = [f"{side}p" for side in settings.ladder]


def _error(status: int) -> dict[str, Any]:
    return {
        "description": {
            400: "Invalid request",
            401: "Missing, malformed, forged or expired token",
            403: "Not allowed",
            404: "Not found",
            409: "Conflict",
            429: "Too many requests: wait and try again",
            503: "A dependency is failing",
        }.get(status, "Error"),
        "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorOut")}}},
    }


def build_document(operations: list[Operation], settings: Settings) -> dict[str, Any]:
    """An OpenAPI 3.1 document of `operations`."""
    models: set[type[BaseModel]] = {ErrorOut}
    for op in operations:
        models.update(m for m in (op.request, op.response) if m is not None)
    requests = {op.request for op in operations}
    _, defs = models_json_schema(
        [(m, "validation" if m in requests else "serialization") for m in models],
        ref_template=REF,
    )
    schemas: dict[str, Any] = defs.get("$defs", {})
    _limits(schemas, settings)

    paths: dict[str, Any] = {}
    for op in operations:
        item: dict[str, Any] = {"summary": op.summary, "operationId": _operation_id(op)}
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"{(\w+)}", op.path)
        ]
        if op.query is not None:
            for name, field in op.query.model_json_schema()["properties"].items():
                field.pop("title", None)
                params.append({"name": name, "in": "query", "required": False, "schema": field})
        if params:
            item["parameters"] = params
        if op.request is not None:
            item["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": REF.format(model=op.request.__name__)}}},
            }
        responses: dict[str, Any] = {}
        if op.response is None:
            responses[str(op.status)] = {"description": "Done"}
        else:
            responses[str(op.status)] = {
                "description": "Success",
                "content": {"application/json": {"schema": {"$ref": REF.format(model=op.response.__name__)}}},
            }
        codes = set(op.errors) | ({401} if op.auth else set())
        if op.request is not None or op.query is not None:
            codes.add(400)
        for code in sorted(codes):
            responses[str(code)] = _error(code)
        item["responses"] = responses
        item["security"] = [{"cognitoIdToken": []}] if op.auth else []
        paths.setdefault(op.path, {})[op.method.lower()] = item

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Vidline API",
            "version": "1.0.0",
            "description": "Upload videos; get them back encoded, watermarked and playable.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "cognitoIdToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "The id_token from POST /auth/login",
                }
            },
        },
    }


def _operation_id(op: Operation) -> str:
    words = re.sub(r"[{}]", "", op.path).strip("/").replace("/", "_") or "root"
    return f"{op.method.lower()}_{words}"
