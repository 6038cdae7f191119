"""A client generated from docs/api/openapi.yaml (openapi-python-client) pays and reads back.

scripts/api-live generates the package `tally_client` and runs this against a live network:
the payment is signed offline by `tally tx sign` (the key never meets the network), submitted
and followed through the generated client alone, and its receipt and both balances are checked.
Environment: TALLY_BIN, TALLY_API, TALLY_NET (the `tally testnet init` directory).
"""

import importlib
import json
import os
import pkgutil
import subprocess
import sys
import time

import tally_client
import tally_client.api
from tally_auth import load_key, signed_headers
from tally_client import Client

BIN, API, NET = os.environ["TALLY_BIN"], os.environ["TALLY_API"], os.environ["TALLY_NET"]


def operation(operation_id):
    """The generated module of an operation, wherever its tag put it."""
    for sub in pkgutil.iter_modules(tally_client.api.__path__):
        try:
            return importlib.import_module(f"tally_client.api.{sub.name}.{operation_id}")
        except ModuleNotFoundError:
            continue
    sys.exit(f"the generated client has no operation {operation_id}")


def ok(response, status=200):
    """The typed answer of a response that must have `status`."""
    if response.status_code != status:
        sys.exit(f"expected {status}, got {response.status_code}: {response.content!r}")
    if response.parsed is None:
        sys.exit(f"the generated client could not parse: {response.content!r}")
    return response.parsed


def public_key(path):
    with open(path) as f:
        return json.load(f)["public_key"]


def main():
    client = Client(base_url=API, raise_on_unexpected_status=False, timeout=10.0)
    status = ok(operation("get_status").sync_detailed(client=client))
    # Reads about accounts and payments are signed: here by the demo KYC provider, which
    # registered both accounts' identities.
    kyc = load_key(f"{NET}/keys/kyc.key")

    def as_kyc(path):
        return client.with_headers(signed_headers(kyc, status.chain_id, "GET", path))

    # Unsigned, the same read is refused without a word about the account.
    payer, payee = public_key(f"{NET}/accounts/account-2.key"), public_key(f"{NET}/accounts/account-3.key")
    refused = operation("get_account").sync_detailed(payer, client=client)
    assert refused.status_code == 401, refused
    before = ok(operation("get_account").sync_detailed(payer, client=as_kyc(f"/v1/accounts/{payer}")))
    payee_before = ok(operation("get_account").sync_detailed(payee, client=as_kyc(f"/v1/accounts/{payee}")))
    usd = before.balances["USD"]

    # Signed offline: chain id, sequence and expiry come from the typed reads above.
    signed = subprocess.run(
        [BIN, "tx", "sign", "--key", f"{NET}/accounts/account-2.key",
         "--chain-id", status.chain_id, "--sequence", str(before.sequence),
         "--expiry-height", str(status.height + 500),
         "transfer", "--to", payee, "--asset", "USD", "--amount", "1234"],
        check=True, capture_output=True, text=True,
    ).stdout
    body_model = importlib.import_module("tally_client.models").SubmitRequest
    body = body_model.from_dict(json.loads(signed))

    submitted = ok(operation("submit_transaction").sync_detailed(client=client, body=body), 202)
    tx_hash = submitted.to_dict()["hash"]
    print(f"submitted {tx_hash}")
    if os.environ.get("TALLY_TX_FILE"):
        with open(os.environ["TALLY_TX_FILE"], "w") as f:
            f.write(tx_hash)

    deadline = time.time() + 60
    while True:
        answer = ok(operation("get_transaction").sync_detailed(
            tx_hash, client=as_kyc(f"/v1/transactions/{tx_hash}")))
        if answer.to_dict()["status"] != "pending":
            break
        if time.time() > deadline:
            sys.exit("the payment was not final within 60 s")
        time.sleep(0.2)
    final = answer.to_dict()
    assert final["status"] == "committed", final
    receipt = final["receipt"]
    assert receipt["outcome"] == "applied" and receipt["code"] == "ok", receipt
    moved = receipt["events"][0]["transferred"]
    assert (moved["from"], moved["to"], moved["asset"], moved["amount"]) == (payer, payee, "USD", 1234), moved

    after = ok(operation("get_account").sync_detailed(payer, client=as_kyc(f"/v1/accounts/{payer}")))
    payee_after = ok(operation("get_account").sync_detailed(payee, client=as_kyc(f"/v1/accounts/{payee}")))
    assert after.balances["USD"] == usd - 1234, (usd, after.balances["USD"])
    assert payee_after.balances["USD"] == payee_before.balances["USD"] + 1234
    assert after.sequence == before.sequence + 1

    block = ok(operation("get_block").sync_detailed(final["height"], client=client))
    assert block.to_dict()["header"]["height"] == final["height"]
    print(f"the generated client paid 1234 USD minor units and read the receipt at height {final['height']}")


if __name__ == "__main__":
    main()
