"""Signed requests for tests: NATS user nkeys (Ed25519) and the
UNIBUS-ED25519 Authorization header of DESIGN.md §4, written from the spec
with Debian's python3-cryptography, independently of the C implementation."""
import base64
import hashlib
import os
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives import serialization

PREFIX_USER = 20 << 3
PREFIX_SEED = 18 << 3

RAW = serialization.Encoding.Raw
RAW_PUB = serialization.PublicFormat.Raw
RAW_PRIV = serialization.PrivateFormat.Raw
NOENC = serialization.NoEncryption()


def crc16(data):
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def b32(raw):
    return base64.b32encode(raw).decode().rstrip("=")


def unb32(s):
    return base64.b32decode(s + "=" * (-len(s) % 8))


def encode_pub(pub32):
    raw = bytes([PREFIX_USER]) + pub32
    return b32(raw + crc16(raw).to_bytes(2, "little"))


def encode_seed(seed32):
    b1 = PREFIX_SEED | (PREFIX_USER >> 5)
    b2 = (PREFIX_USER & 31) << 3
    raw = bytes([b1, b2]) + seed32
    return b32(raw + crc16(raw).to_bytes(2, "little"))


def decode_seed(s):
    raw = unb32(s)
    assert crc16(raw[:-2]) == int.from_bytes(raw[-2:], "little"), "bad seed crc"
    return raw[2:34]


def b64url(data):
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class Identity:
    def __init__(self, handle, seed32=None):
        self.handle = handle
        seed32 = seed32 or os.urandom(32)
        self.key = Ed25519PrivateKey.from_private_bytes(seed32)
        self.seed = encode_seed(seed32)
        self.pub = encode_pub(self.key.public_key().public_bytes(RAW, RAW_PUB))
        box = X25519PrivateKey.generate()
        self.box_pub = base64.b64encode(box.public_key().public_bytes(RAW, RAW_PUB)).decode()

    @classmethod
    def from_seed_file(cls, handle, path):
        with open(path) as f:
            return cls(handle, decode_seed(f.read().strip()))

    def authorization(self, method, path, body=b"", ts=None, nonce=None):
        ts = int(time.time()) if ts is None else ts
        nonce = nonce or b64url(os.urandom(16))
        msg = "UNIBUS-ED25519\n%s\n%s\n%d\n%s\n%s" % (
            method, path, ts, nonce, hashlib.sha256(body or b"").hexdigest())
        sig = b64url(self.key.sign(msg.encode()))
        return 'UNIBUS-ED25519 handle="%s",ts="%d",nonce="%s",sig="%s"' % (
            self.handle, ts, nonce, sig)

    def member_body(self, role="member"):
        import json
        return json.dumps({"handle": self.handle, "role": role,
                           "sign_pub": self.pub, "box_pub": self.box_pub}).encode()
