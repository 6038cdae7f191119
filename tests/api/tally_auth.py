"""Signed reads for the Python clients of scripts/api-live (docs/api/README.md, "Signed reads").

`signed_headers` builds the four headers a read about a person or their money carries; loaded
as schemathesis hooks (SCHEMATHESIS_HOOKS=tally_auth) it signs every generated request with the
key in TALLY_READ_KEY for the chain TALLY_CHAIN_ID, so generated reads reach the answers
they are entitled to (public routes ignore the headers).
"""

import hashlib
import json
import os
import secrets
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def load_key(path):
    """The signing key of a `tally` key file."""
    with open(path) as f:
        return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(json.load(f)["secret_key"]))


def public_hex(key):
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    ).hex()


def signed_headers(key, chain_id, method, path, query="", body=b""):
    """The Tally-Key, Tally-Timestamp, Tally-Nonce and Tally-Signature headers."""
    timestamp = str(int(time.time() * 1000))
    nonce = secrets.token_hex(16)
    message = "\n".join([
        "tally-request/v1", chain_id, method.upper(), path, query,
        hashlib.sha256(body).hexdigest(), timestamp, nonce,
    ]).encode()
    return {
        "Tally-Key": public_hex(key),
        "Tally-Timestamp": timestamp,
        "Tally-Nonce": nonce,
        "Tally-Signature": key.sign(message).hex(),
    }


try:
    import schemathesis
except ImportError:  # a plain client needs only signed_headers
    schemathesis = None

if schemathesis is not None and os.environ.get("TALLY_READ_KEY"):
    from urllib.parse import urlencode

    @schemathesis.auth()
    class TallySignedRead:
        """Signs each generated request as it will be sent (path and query included)."""

        def get(self, case, ctx):
            return load_key(os.environ["TALLY_READ_KEY"])

        def set(self, case, key, ctx):
            query = urlencode(case.query, doseq=True) if case.query else ""
            headers = signed_headers(
                key, os.environ["TALLY_CHAIN_ID"], case.method, case.formatted_path, query
            )
            case.headers = {**(case.headers or {}), **headers}
