"""Encryption at rest of private keys: AES-256-GCM under the instance key-encryption key."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from flask import current_app

from .errors import KekMisconfigured, UnknownKeyFormat

_VERSION = b"\x01"


def _kek() -> bytes:
    kek = current_app.config["TONGBAN_KEK"]
    if len(kek) != 32:
        raise KekMisconfigured("TONGBAN_KEK must be 32 bytes (64 hex characters)")
    return kek


def seal(plaintext: bytes, label: str) -> bytes:
    nonce = os.urandom(12)
    return _VERSION + nonce + AESGCM(_kek()).encrypt(nonce, plaintext, label.encode())


def unseal(blob: bytes, label: str) -> bytes:
    if not blob or blob[:1] != _VERSION:
        raise UnknownKeyFormat("unknown key encryption format")
    return AESGCM(_kek()).decrypt(blob[1:13], blob[13:], label.encode())


def seal_private_key(key, label: str) -> bytes:
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return seal(der, label)


def unseal_private_key(blob: bytes, label: str):
    return serialization.load_der_private_key(unseal(blob, label), password=None)
