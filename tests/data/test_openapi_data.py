"""The OpenAPI document describes the data API's raw bodies as bytes and every error it answers
(pure: the document is built from the declarations, no service needed)."""

from __future__ import annotations

import json

from jupyter_heroes.service.openapi import STATUS_TEXT, build_openapi

BINARY = {"type": "string", "format": "binary"}


def test_upload_body_and_download_answer_are_octet_streams():
    doc = build_openapi()
    upload = doc["paths"]["/organization/data/upload"]["post"]
    assert upload["requestBody"]["content"] == {"application/octet-stream": {"schema": BINARY}}
    assert "application/json" in upload["responses"]["201"]["content"]
    download = doc["paths"]["/organization/data/download"]["get"]
    ok = download["responses"]["200"]
    assert ok["content"] == {"application/octet-stream": {"schema": BINARY}}
    assert {"Content-Length", "ETag", "X-Heroes-Sha256"} <= set(ok["headers"])
    # only those two: every other operation speaks JSON
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if (path, method) in {
                ("/organization/data/upload", "post"),
                ("/organization/data/download", "get"),
            }:
                continue
            assert "application/octet-stream" not in json.dumps(op), (method, path)


def test_upload_errors_are_documented_and_every_reference_resolves():
    doc = build_openapi()
    assert {411, 413, 502} <= set(STATUS_TEXT)
    responses = doc["paths"]["/organization/data/upload"]["post"]["responses"]
    for code in ("411", "413", "502"):
        assert responses[code] == {"$ref": f"#/components/responses/E{code}"}
    assert "Content-Length" in doc["components"]["responses"]["E411"]["description"]
    defined = set(doc["components"]["responses"])
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for code, answer in op["responses"].items():
                ref = answer.get("$ref")
                if ref:
                    assert ref.rsplit("/", 1)[1] in defined, (method, path, code)
