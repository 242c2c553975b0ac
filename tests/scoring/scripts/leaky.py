"""run() fails with secrets in its message: a caller must never see them, the server log must."""

import sys

SECRET = "AccountKey=edgeship-test-secret-4f9c"
PATH = "/home/alice/private/models/weights.bin"


def init():
    pass


def run(data):
    if "exit" in data:
        sys.exit(f"giving up on {PATH}")
    if "fail" in data:
        raise RuntimeError(f"cannot open {PATH} with {SECRET}")
    if "unencodable" in data:
        return {"handle": object()}  # JSON cannot encode it: the script's fault, answered as a 500
    return {"ok": True}
