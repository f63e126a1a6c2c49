"""A minimal signed S3 request (AWS Signature V4) over http.client: bucket checks and the conditional-PUT probe.

Only what the local SeaweedFS server needs before delta-rs talks to it:
create or look at a bucket, and PUT with ``If-None-Match: *``. Everything
else goes through deltalake.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import threading
import time
from urllib.parse import quote, urlsplit

__all__ = ["S3Request", "conditional_put_probe"]


def _sign(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


class S3Request:
    """Signed path-style requests to one S3 endpoint."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str, region: str = "us-east-1") -> None:
        u = urlsplit(endpoint)
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 80
        self.access_key = access_key
        self._secret = secret_key
        self.region = region

    def __repr__(self) -> str:  # never the secret
        return f"S3Request({self.host}:{self.port}, access key {self.access_key[:4]}...)"

    def send(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
             timeout: float = 10.0) -> int:
        """Send one request; returns the HTTP status (raises OSError when nothing answers)."""
        now = time.gmtime()
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", now)
        day = amz_date[:8]
        payload = hashlib.sha256(body).hexdigest()
        hdrs = {"host": f"{self.host}:{self.port}", "x-amz-date": amz_date, "x-amz-content-sha256": payload,
                **{k.lower(): v for k, v in (headers or {}).items()}}
        names = sorted(hdrs)
        canonical = "\n".join([method, quote(path, safe="/-_.~"), "",
                               "".join(f"{k}:{hdrs[k].strip()}\n" for k in names), ";".join(names), payload])
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        k = _sign(_sign(_sign(_sign(("AWS4" + self._secret).encode(), day), self.region), "s3"), "aws4_request")
        signature = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
        hdrs["authorization"] = (f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
                                 f"SignedHeaders={';'.join(names)}, Signature={signature}")
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()


def conditional_put_probe(s3: S3Request, bucket: str, key: str) -> list[int]:
    """PUT one key twice at the same moment with ``If-None-Match: *``; the statuses, sorted.

    A store that supports conditional puts answers one 200 and one 412 (or
    409); two 200s mean concurrent Delta commits could overwrite each other.
    """
    statuses: list[int] = []
    go = threading.Barrier(2)

    def put(body: bytes) -> None:
        go.wait(timeout=10)
        try:
            statuses.append(s3.send("PUT", f"/{bucket}/{key}", body, {"If-None-Match": "*"}))
        except OSError:
            statuses.append(0)

    threads = [threading.Thread(target=put, args=(b"probe %d" % i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return sorted(statuses)
