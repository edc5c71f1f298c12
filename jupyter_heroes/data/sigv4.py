"""AWS Signature Version 4 query signing (presigned URLs) with extra signed headers.

The minio SDK presigns URLs that sign only ``host``. A presigned PUT handed to a browser then lets
it send any number of bytes. Signing ``content-length`` as well makes the declared size binding:
MinIO and AWS S3 recompute the signature from the request's real ``Content-Length`` and refuse a
different one (``SignatureDoesNotMatch``), which is how :meth:`S3Storage.presign_put` keeps a
presigned upload inside the caller's remaining quota. The algorithm follows
https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timezone
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"


def _q(s: str) -> str:
    return quote(s, safe="-_.~")


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def canonical_uri(bucket: str, key: str) -> str:
    """Path-style URI of an object, each segment percent-encoded as SigV4 wants."""
    return "/" + _q(bucket) + "/" + quote(key, safe="/-_.~")


def presign(
    *,
    method: str,
    scheme: str,
    host: str,
    bucket: str,
    key: str,
    region: str,
    access_key: str,
    secret_key: str,
    expires: int,
    headers: dict[str, str] | None = None,
    now: datetime | None = None,
) -> str:
    """A presigned URL for *method* on ``bucket/key``; *headers* (e.g. ``{"content-length": "42"}``)
    are signed too and must be sent exactly so. *host* is what the client sends as ``Host``."""
    if not 1 <= expires <= 604800:
        raise ValueError("expires must be between 1 second and 7 days")
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    datestamp = now.strftime("%Y%m%d")
    scope = f"{datestamp}/{region}/s3/aws4_request"
    signed = {"host": host}
    for k, v in (headers or {}).items():
        signed[k.lower().strip()] = " ".join(str(v).split())
    signed_names = ";".join(sorted(signed))
    query = {
        "X-Amz-Algorithm": ALGORITHM,
        "X-Amz-Credential": f"{access_key}/{scope}",
        "X-Amz-Date": amz_date,
        "X-Amz-Expires": str(expires),
        "X-Amz-SignedHeaders": signed_names,
    }
    canonical_query = "&".join(f"{_q(k)}={_q(v)}" for k, v in sorted(query.items()))
    path = canonical_uri(bucket, key)
    canonical_headers = "".join(f"{k}:{signed[k]}\n" for k in sorted(signed))
    canonical_request = "\n".join(
        [method.upper(), path, canonical_query, canonical_headers, signed_names, "UNSIGNED-PAYLOAD"]
    )
    string_to_sign = "\n".join(
        [ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    signing_key = _hmac(("AWS4" + secret_key).encode("utf-8"), datestamp)
    for part in (region, "s3", "aws4_request"):
        signing_key = _hmac(signing_key, part)
    signature = hmac.new(signing_key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"{scheme}://{host}{path}?{canonical_query}&X-Amz-Signature={signature}"
