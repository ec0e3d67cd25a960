"""Plain pyHanko on this machine: the yardstick for ``bench/seal.py``.

Signs the same one-page PDF as ``bench/seal.py`` with nothing of ours in the way: a
throw-away root → intermediate → signer chain (the shape of our CA), PAdES B-B
(no timestamp, no revocation data), then validates the result. Prints figures; asserts nothing.

    .venv/bin/python bench/pyhanko_baseline.py [-n 30]

Rows:
- ``SimpleSigner``: pyHanko's own in-memory signer, which re-parses its private key
  on every signature (what the issue's "175 ms RSA" measures);
- ``key loaded once``: a minimal ``Signer`` over a ``cryptography`` key parsed once;
- ``visible``: the same with a visible field and pyHanko's default text stamp;
- ``validate``: ``validate_pdf_signature`` with a new ``ValidationContext`` per
  document (trust root only, no fetching, soft-fail revocation).
"""

from __future__ import annotations

import argparse
import io
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import loadavg, one_page_pdf, timed
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields, signers
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.registry import SimpleCertificateStore


def _cert(subject: str, key, issuer: tuple[x509.Certificate, object] | None, *, ca: bool) -> x509.Certificate:
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = (issuer[0].subject, issuer[1]) if issuer else (name, key)
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=365))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=not ca, content_commitment=not ca, key_encipherment=False,
                                      data_encipherment=False, key_agreement=False, key_cert_sign=ca,
                                      crl_sign=ca, encipher_only=False, decipher_only=False), critical=True))
    return b.sign(issuer_key, hashes.SHA256())


def _asn1(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


class KeyOnceSigner(signers.Signer):
    """The smallest signer that keeps its parsed private key (pyHanko's SimpleSigner re-parses it per call)."""

    def __init__(self, key, cert, chain):
        self._key = key
        super().__init__(signing_cert=cert, cert_registry=SimpleCertificateStore.from_certs(chain))

    async def async_sign_raw(self, data: bytes, digest_algorithm: str, dry_run: bool = False) -> bytes:
        if dry_run:
            return bytes(72 if isinstance(self._key, ec.EllipticCurvePrivateKey) else 256)
        h = getattr(hashes, digest_algorithm.upper())()
        if isinstance(self._key, ec.EllipticCurvePrivateKey):
            return self._key.sign(data, ec.ECDSA(h))
        return self._key.sign(data, padding.PKCS1v15(), h)


def sign(pdf: bytes, signer: signers.Signer, *, visible: bool) -> bytes:
    spec = fields.SigFieldSpec("Signature1", on_page=0, box=(420, 56, 533, 169)) if visible else None
    meta = signers.PdfSignatureMetadata(field_name="Signature1", md_algorithm="sha256",
                                        subfilter=fields.SigSeedSubFilter.PADES)
    out = io.BytesIO()
    signers.PdfSigner(meta, signer=signer, new_field_spec=spec).sign_pdf(
        IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False), output=out)
    return out.getvalue()


def validate(doc: bytes, root: asn1_x509.Certificate, others: list[asn1_x509.Certificate]) -> bool:
    vc = ValidationContext(trust_roots=[root], other_certs=others, allow_fetching=False,
                           revocation_mode="soft-fail")
    sig = PdfFileReader(io.BytesIO(doc), strict=False).embedded_signatures[0]
    return validate_pdf_signature(sig, vc).bottom_line


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=30)
    args = ap.parse_args()
    import logging

    # "revocation checking is soft-fail and no data is available" is the point here
    logging.getLogger("pyhanko_certvalidator").setLevel(logging.ERROR)

    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _cert("Baseline Root", root_key, None, ca=True)
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = _cert("Baseline Intermediate", inter_key, (root, root_key), ca=True)
    chain = [_asn1(inter), _asn1(root)]
    pdf = one_page_pdf()
    print(f"plain pyHanko; one-page PDF: {len(pdf)} bytes; n={args.n} (median wall, best wall, median CPU); "
          f"load average {loadavg()}")
    docs = {}
    for label, key in (("EC P-256", ec.generate_private_key(ec.SECP256R1())),
                       ("RSA-2048", rsa.generate_private_key(public_exponent=65537, key_size=2048))):
        cert = _asn1(_cert(f"Baseline {label}", key, (inter, inter_key), ca=False))
        pkcs8 = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
        simple = signers.SimpleSigner(cert, asn1_keys.PrivateKeyInfo.load(pkcs8),
                                      SimpleCertificateStore.from_certs(chain))
        once = KeyOnceSigner(key, cert, chain)
        for what, signer, visible in (("SimpleSigner, invisible", simple, False),
                                      ("key loaded once, invisible", once, False),
                                      ("key loaded once, visible", once, True)):
            med, best, cpu, out = timed(lambda s=signer, v=visible: sign(pdf, s, visible=v), args.n)
            docs[(label, visible)] = out
            print(f"seal     {label:<9} {what:<30} {med * 1000:7.1f} ms"
                  f" (best {best * 1000:5.1f}, cpu {cpu * 1000:5.1f})"
                  f"  {1 / med:6.1f} seals/s  +{len(out) - len(pdf):6d} bytes")
    for (label, visible), doc in docs.items():
        med, best, cpu, ok = timed(lambda d=doc: validate(d, _asn1(root), chain), args.n)
        assert ok, "baseline signature does not validate"
        what = "visible" if visible else "invisible"
        print(f"validate {label:<9} {what:<30} {med * 1000:7.1f} ms"
              f" (best {best * 1000:5.1f}, cpu {cpu * 1000:5.1f})"
              f"  {1 / med:6.1f} validations/s")
    print(f"load average {loadavg()}")


if __name__ == "__main__":
    main()
