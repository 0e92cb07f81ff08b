"""Checks one delivery with the Standard Webhooks reference library.

Reads {"secret", "headers", "body"} as JSON on standard input; exits 0 when the delivery
verifies, 1 with the reason otherwise.
"""
import json
import sys

from standardwebhooks.webhooks import Webhook


def main():
    given = json.load(sys.stdin)
    try:
        Webhook(given["secret"]).verify(given["body"], given["headers"])
    except Exception as error:  # the library raises its own WebhookVerificationError
        print(f"{type(error).__name__}: {error}")
        sys.exit(1)


if __name__ == "__main__":
    main()
