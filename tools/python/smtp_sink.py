"""An SMTP server for tests: every message it is given is written to OUT/<n>.eml.

Usage: smtp_sink.py PORT OUT. It stops when its standard input closes.
"""
import asyncio
import os
import sys

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, out):
        self.out = out
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        name = os.path.join(self.out, f"{self.count:06}.eml")
        with open(name + ".part", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.replace(name + ".part", name)
        return "250 OK"


def main():
    port, out = int(sys.argv[1]), sys.argv[2]
    controller = Controller(Sink(out), hostname="127.0.0.1", port=port)
    controller.start()
    sys.stdin.read()
    controller.stop()


if __name__ == "__main__":
    main()
