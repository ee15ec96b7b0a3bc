"""Signs the message on stdin with dkimpy (PyPI `dkimpy`), for eingang's tests.

Usage: dkimpy_sign.py DOMAIN SELECTOR KEY.pem < message > signed message
The signature covers From, To, Subject, Date and Message-ID; dkimpy's default
canonicalization (relaxed headers, simple body) is kept on purpose, so that this differs
from the relaxed/relaxed signatures the tests make with mail-auth.
"""

import sys

try:
    import dkim
except ImportError:
    sys.exit("dkimpy is missing: install it with `python3 -m pip install dkimpy==1.1.8`")


def main() -> None:
    domain, selector, key_file = sys.argv[1:4]
    with open(key_file, "rb") as f:
        key = f.read()
    message = sys.stdin.buffer.read()
    signature = dkim.sign(
        message,
        selector.encode(),
        domain.encode(),
        key,
        include_headers=[b"From", b"To", b"Subject", b"Date", b"Message-ID"],
    )
    sys.stdout.buffer.write(signature + message)


if __name__ == "__main__":
    main()
