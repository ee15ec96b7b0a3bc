"""Verifies captured webhook requests with standardwebhooks, the reference implementation.

Usage: WEBHOOK_SECRET=whsec_... verify_webhooks.py requests.json
The file is a list of {"headers": {...}, "body": "<base64>"}; prints "verified N", or fails
on the first request whose signature does not hold.
"""

import base64
import json
import os
import sys

from standardwebhooks import Webhook


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as f:
        requests = json.load(f)
    hook = Webhook(os.environ["WEBHOOK_SECRET"])
    for n, request in enumerate(requests):
        body = base64.b64decode(request["body"])
        try:
            hook.verify(body, request["headers"])
        except Exception as e:  # the package raises its own error types
            print(f"request {n} ({request['headers'].get('webhook-id')}): {e}", file=sys.stderr)
            return 1
    print(f"verified {len(requests)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
