"""Ed25519 verification through the OpenSSL that Python's ``ssl`` module already loaded.

Why: the agent must verify signatures but never signs, and it already has OpenSSL's
``libcrypto`` mapped for TLS to the broker. ``cryptography`` brings a second, static
copy of OpenSSL (about 6 MiB of the agent's resident memory, ``docs/agent.md``:
Footprint); calling the loaded one's ``EVP_DigestVerify`` through ``ctypes`` costs
about 0.5 MiB and runs the same Ed25519 code (RFC 8032, cofactorless, ``S < L``
checked).

:func:`verifier` returns None when this Python's ``_ssl`` does not export the
functions (a statically linked build, OpenSSL older than 1.1.1); the caller then
falls back to ``cryptography``. ``tests/signing/test_ossl_verify.py`` checks both give
the same answer on a corpus of good, tampered and malformed signatures and keys.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

__all__ = ["verifier"]

_EVP_PKEY_ED25519 = 1087  # NID_ED25519, stable since OpenSSL 1.1.1
_PUBLIC_LEN = 32
_SIGNATURE_LEN = 64

Verify = Callable[[bytes, bytes, bytes], bool]
_cached: list[Verify | None] = []


def _bind() -> Verify | None:
    try:
        import _ssl

        lib = ctypes.CDLL(_ssl.__file__)  # dlsym on it searches its dependencies: libcrypto
        new_key = lib.EVP_PKEY_new_raw_public_key
        free_key = lib.EVP_PKEY_free
        new_ctx = lib.EVP_MD_CTX_new
        free_ctx = lib.EVP_MD_CTX_free
        init = lib.EVP_DigestVerifyInit
        verify = lib.EVP_DigestVerify
        clear_errors = lib.ERR_clear_error
    except (ImportError, OSError, AttributeError):
        return None
    pointer = ctypes.c_void_p
    new_key.restype, new_key.argtypes = pointer, [ctypes.c_int, pointer, ctypes.c_char_p, ctypes.c_size_t]
    free_key.restype, free_key.argtypes = None, [pointer]
    new_ctx.restype, new_ctx.argtypes = pointer, []
    free_ctx.restype, free_ctx.argtypes = None, [pointer]
    init.restype, init.argtypes = ctypes.c_int, [pointer, pointer, pointer, pointer, pointer]
    verify.restype = ctypes.c_int
    verify.argtypes = [pointer, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
    clear_errors.restype, clear_errors.argtypes = None, []

    def check(public: bytes, signature: bytes, data: bytes) -> bool:
        if len(public) != _PUBLIC_LEN or len(signature) != _SIGNATURE_LEN:
            return False
        key = new_key(_EVP_PKEY_ED25519, None, public, _PUBLIC_LEN)
        if not key:
            clear_errors()
            return False
        ctx = new_ctx()
        try:
            if not ctx:
                raise MemoryError("OpenSSL could not allocate a verification context")
            ok = init(ctx, None, None, None, key) == 1 and verify(ctx, signature, _SIGNATURE_LEN, data, len(data)) == 1
        finally:
            free_ctx(ctx)
            free_key(key)
            clear_errors()  # a failed verification leaves an entry on this thread's OpenSSL error queue
        return ok

    return check


def verifier() -> Verify | None:
    """``check(public, signature, data) -> bool`` through the loaded libcrypto, or None if unavailable."""
    if not _cached:
        _cached.append(_bind())
    return _cached[0]
