"""OpenAPI schema adjustments."""

MALFORMED_REQUEST = {
    "description": "Malformed request: a NUL character in the URL (refused before any view runs).",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}


def document_malformed_requests(result, generator, request, public):
    """drf-spectacular postprocessing hook: RejectNulCharactersMiddleware can answer 400 on
    any operation; say so where an operation documents no 400 of its own."""
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict) and "responses" in operation:
                operation["responses"].setdefault("400", MALFORMED_REQUEST)
    return result
