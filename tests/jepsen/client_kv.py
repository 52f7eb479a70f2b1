"""Clients of the unibus HTTP API for the fault-injection workloads.

Every answer is classified as Jepsen does (JEPSEN.md 4.1):

    ok    it happened (with its result)
    fail  it certainly did not happen: the request never reached the node
          (connect refused or timed out), a local refusal (401 before the
          nonce claim, 400, 403), 409 revision_mismatch, 503 no_leader /
          shutting_down / unavailable (docs/http-api.md: nothing applied)
    info  unknown: a timeout or reset after the request was sent, 504
          timeout, 500, anything unexpected

`request(cluster, node, ...)` opens a fresh connection per request (no
keep-alive: a reused connection the server has closed would turn a
certain "not sent" into an unknown) from the client namespace. Connecting
and sending are told apart, so a connect failure is `NotSent`.

KV (register workload):

    kv = KV(cluster, bucket="jepsen", timeout=1.0, stale_reads=False)
    r = kv.read(node, key)            # {"type", "value": int|None, "rev", "error"}
    r = kv.write(node, key, v)        # {"type", "rev", "error"}
    r = kv.cas(node, key, a, b)       # {"type", "applied", "rev", "error"}

cas(a, b) is a linearizable GET and, if the value is a, a PUT ?rev=R of b
(R = the revision read): 200 -> ok applied:true; value != a -> ok
applied:false (the GET is its linearization point); 409 on the PUT -> fail
(the write certainly did not happen); the GET failing in any way -> fail (no
PUT was sent); the PUT timing out -> info. Values are small ints stored as
decimal text. With stale_reads=True reads (the read of a cas too) use
?stale=true: a local read that may be behind (for checking the checker).

Nonce claims (nonce workload): `claim(cluster, node, nonce, ts=None,
authorization=None)` sends a signed GET /v1/me whose nonce is `nonce`;
200 -> ok value true, 401 nonce_reused -> ok value false, other 401s (e.g.
stale_timestamp, a local check before the claim) and 503 no_leader ->
fail, 504 / timeouts after sending -> info. Passing the same
`authorization` string to several nodes replays one signed request.
"""
import base64
import http.client
import json
import urllib.parse

# 503 codes after which nothing was applied (docs/http-api.md "Errors").
NOT_APPLIED_503 = ("no_leader", "shutting_down", "unavailable")


class NotSent(Exception):
    """The request certainly did not reach the node."""


class Unknown(Exception):
    """The request was (maybe partly) sent; its outcome is unknown."""


def error_code(j):
    if isinstance(j, dict) and isinstance(j.get("error"), dict):
        return j["error"].get("code")
    return None


def request(cluster, node, method, path, body=b"", timeout=1.0, authorization=None,
         ident=None, nonce=None):
    """One request from the client namespace. Signs /v1/ paths with ident
    (default the cluster's admin) and the given nonce unless an
    authorization header value is given. Returns (status, JSON or raw
    bytes). Raises NotSent or Unknown."""
    node = cluster.node(node)
    body = body or b""
    headers = {"Connection": "close"}
    if path.startswith("/v1/"):
        headers["Authorization"] = authorization or (ident or cluster.admin).authorization(
            method, path, body, nonce=nonce)
    try:
        s = cluster.connect((node.ip, node.http_port), timeout)
    except (OSError, RuntimeError) as e:
        raise NotSent("connect %s: %r" % (node.name, e))
    conn = http.client.HTTPConnection(node.ip, node.http_port, timeout=timeout)
    conn.sock = s
    try:
        conn.request(method, path, body=body if method in ("PUT", "POST") else None,
                     headers=headers)
        r = conn.getresponse()
        data = r.read()
        status = r.status
    except (OSError, http.client.HTTPException) as e:
        raise Unknown("%s %s on %s: %r" % (method, path, node.name, e))
    finally:
        conn.close()
    try:
        j = json.loads(data) if data else None
    except ValueError:
        j = data
    return status, j


def _short(e):
    s = str(e)
    return s if len(s) < 160 else s[:157] + "..."


def _classify_error(status, j, mutation):
    """(type, error string) for a non-success answer."""
    code = error_code(j)
    err = "%d %s" % (status, code or "")
    if status == 503 and code in NOT_APPLIED_503:
        return "fail", err
    if status in (400, 401, 403, 404, 405, 409, 413):
        return "fail", err
    # 504 timeout, 500 internal, 503 internal (OOM) and anything else: the
    # outcome of a write is unknown; a read that did not answer is info.
    return "info", err


def kv_path(bucket, key, **q):
    p = "/v1/kv/%s/%s" % (urllib.parse.quote(bucket, safe=""), urllib.parse.quote(key, safe="/"))
    if q:
        p += "?" + urllib.parse.urlencode(q)
    return p


def _decode_value(j):
    raw = base64.b64decode(j["value"])
    try:
        return int(raw.decode())
    except (UnicodeDecodeError, ValueError):
        return raw.decode("utf-8", "replace")


class KV:
    def __init__(self, cluster, bucket="jepsen", timeout=1.0, stale_reads=False):
        self.c = cluster
        self.bucket = bucket
        self.timeout = timeout
        self.stale_reads = stale_reads

    def _get(self, node, key):
        q = {"stale": "true"} if self.stale_reads else {}
        return request(self.c, node, "GET", kv_path(self.bucket, key, **q), timeout=self.timeout)

    def read(self, node, key):
        try:
            st, j = self._get(node, key)
        except NotSent as e:
            return {"type": "fail", "error": "not sent: " + _short(e)}
        except Unknown as e:
            return {"type": "info", "error": _short(e)}
        if st == 200 and isinstance(j, dict):
            return {"type": "ok", "value": _decode_value(j), "rev": j.get("revision")}
        if st == 404 and error_code(j) == "not_found":
            return {"type": "ok", "value": None}
        t, err = _classify_error(st, j, False)
        return {"type": t, "error": err}

    def _put(self, node, key, value, rev=None):
        q = {"rev": rev} if rev is not None else {}
        return request(self.c, node, "PUT", kv_path(self.bucket, key, **q), str(value).encode(),
                    timeout=self.timeout)

    def write(self, node, key, value):
        try:
            st, j = self._put(node, key, value)
        except NotSent as e:
            return {"type": "fail", "error": "not sent: " + _short(e)}
        except Unknown as e:
            return {"type": "info", "error": _short(e)}
        if st == 200 and isinstance(j, dict):
            return {"type": "ok", "rev": j.get("revision")}
        t, err = _classify_error(st, j, True)
        return {"type": t, "error": err}

    def cas(self, node, key, expected, new):
        r = self.read(node, key)
        if r["type"] != "ok":
            # No PUT was sent: the cas certainly did not happen.
            return {"type": "fail", "error": "read: " + r.get("error", "")}
        if r["value"] != expected:
            out = {"type": "ok", "applied": False, "read": r["value"]}
            if r.get("rev") is not None:
                out["rev"] = r["rev"]
            return out
        try:
            st, j = self._put(node, key, new, rev=r["rev"])
        except NotSent as e:
            return {"type": "fail", "error": "not sent: " + _short(e)}
        except Unknown as e:
            return {"type": "info", "error": _short(e), "read_rev": r["rev"]}
        if st == 200 and isinstance(j, dict):
            return {"type": "ok", "applied": True, "rev": j.get("revision"), "read_rev": r["rev"]}
        if st == 409 and error_code(j) == "revision_mismatch":
            return {"type": "fail", "error": "409 revision_mismatch",
                    "read_rev": r["rev"], "current_revision": j["error"].get("current_revision")}
        t, err = _classify_error(st, j, True)
        return {"type": t, "error": err, "read_rev": r["rev"]}


def claim(cluster, node, nonce, timeout=1.0, ts=None, authorization=None, path="/v1/me"):
    """A signed GET /v1/me with the given nonce (or a prepared header).
    Returns {"type", "value": True|False (ok only), "error"}."""
    if authorization is None:
        authorization = cluster.admin.authorization("GET", path, b"", ts=ts, nonce=nonce)
    try:
        st, j = request(cluster, node, "GET", path, timeout=timeout, authorization=authorization)
    except NotSent as e:
        return {"type": "fail", "error": "not sent: " + _short(e)}
    except Unknown as e:
        return {"type": "info", "error": _short(e)}
    code = error_code(j)
    if st == 200:
        return {"type": "ok", "value": True}
    if st == 401 and code == "nonce_reused":
        return {"type": "ok", "value": False}
    if st == 401:
        # stale_timestamp, unknown_member, bad_signature...: checked locally
        # before the claim is proposed. bad_nonce: the claim was refused.
        return {"type": "fail", "error": "401 %s" % code}
    t, err = _classify_error(st, j, True)
    return {"type": t, "error": err}
