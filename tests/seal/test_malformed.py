"""Malformed PDFs at every PDF path (sign API, console upload, sign-pdf CLI, verify API) and the
verifier's limits: 400 invalid_pdf / 409, 413/422/503 with a reason, never 500, never a hang."""

from __future__ import annotations

import base64
import io
import threading

import pytest

from seal import services
from tests.conftest import OTHER_ID, PASSWORD
from tests.flask_flows import csrf_token, login
from tests.seal.malformed import CORPUS, GOOD, SIGN_REFUSED, VERIFY_NO_SEAL
from tongban.extensions import db

NAMES = sorted(CORPUS)


def returns(fn, timeout: float = 120):
    """Run ``fn`` in a thread; fail (instead of hanging the suite) if it never returns."""
    from flask import current_app

    app, box = current_app._get_current_object(), {}

    def run():
        try:
            with app.app_context():
                box["result"] = fn()
        except BaseException as e:  # re-raised in the test thread
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "the request never returned (a loop in the PDF's object graph?)"
    if "error" in box:
        raise box["error"]
    return box["result"]


def _uses(seal_id: str) -> int:
    return [u.action for u in services.uses(seal_id)].count("seal.used")


@pytest.fixture
def sign_api(seal, client, make_client):
    cid, secret = make_client(scopes=["seal:sign"], grant_types=["client_credentials"])
    services.authorise_client(seal.id, cid)
    db.session.commit()
    basic = base64.b64encode(f"{cid}:{secret}".encode()).decode()
    r = client.post("/oauth/token", data={"grant_type": "client_credentials", "scope": "seal:sign"},
                    headers={"Authorization": f"Basic {basic}"})
    auth = {"Authorization": f"Bearer {r.json['access_token']}"}

    def post(pdf: bytes, **form):
        form.setdefault("purpose", "合同签订")
        return client.post(f"/api/v1/seals/{seal.id}/sign", data={"file": (io.BytesIO(pdf), "doc.pdf"), **form},
                           headers=auth, content_type="multipart/form-data")

    return post


def test_the_corpus_is_one_defect_from_a_good_document(seal, sign_api):
    r = sign_api(GOOD)
    assert r.status_code == 200 and r.mimetype == "application/pdf"
    assert services.verify_pdf(r.data)["valid"] is True


@pytest.mark.parametrize("name", NAMES)
def test_sign_api_answers_invalid_pdf(seal, sign_api, name):
    r = returns(lambda: sign_api(CORPUS[name]))
    if name in SIGN_REFUSED:
        assert r.status_code == 409 and r.json["error"] == "sealing_refused"
    else:
        assert r.status_code == 400 and r.json["error"] == "invalid_pdf", r.json
    assert _uses(seal.id) == 0


def test_self_parent_pages_without_mediabox_returns(seal, sign_api):
    """The fuzzer's loop: the Pages node is its own /Parent and no node has a MediaBox."""
    r = returns(lambda: sign_api(CORPUS["self_parent_pages"]))
    assert r.status_code == 400 and r.json["error"] == "invalid_pdf"
    assert "/Parent" in r.json["error_description"]


@pytest.mark.parametrize("form", [{"page": "99999999999999999999"}, {"page": "-2"}, {"field": "a.b"},
                                  {"field": "印章 \"x\" \\ é"}, {"field": "x" * 5000}])
def test_sign_api_odd_parameters_are_4xx(seal, sign_api, form):
    r = sign_api(GOOD, **form)
    assert r.status_code in (200, 400), r.json
    if r.status_code == 400:
        assert r.json["error"] in ("invalid_page", "invalid_request", "invalid_input")


@pytest.mark.parametrize("name", NAMES)
def test_verify_api_answers_invalid_pdf(client, name):
    r = returns(lambda: client.post("/api/v1/seals/verify", data={"file": (io.BytesIO(CORPUS[name]), "d.pdf")},
                                    content_type="multipart/form-data"))
    if name in VERIFY_NO_SEAL:
        assert r.status_code == 200 and r.json["valid"] is False and r.json["signatures"] == []
    else:
        assert r.status_code == 400 and r.json["error"] == "invalid_pdf", r.json


@pytest.mark.parametrize("name", NAMES)
def test_cli_sign_pdf_exits_1_with_one_line(app, seal, tmp_path, name):
    src, out = tmp_path / "in.pdf", tmp_path / "out.pdf"
    src.write_bytes(CORPUS[name])
    runner, args = app.test_cli_runner(), ["seals", "sign-pdf", "--seal", seal.id, str(src), str(out)]
    r = returns(lambda: runner.invoke(args=args))
    assert r.exit_code == 1, r.output
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ")
    assert not out.exists()


@pytest.fixture
def officer_client(app, client, org, seal):
    from people import accounts

    accounts.create_staff(OTHER_ID, "王五", PASSWORD, org.uscc, "seal-admin")
    db.session.commit()
    assert login(client, OTHER_ID).status_code in (302, 303)
    return client


@pytest.mark.parametrize("name", NAMES)
def test_console_upload_rerenders_the_form(officer_client, seal, name):
    url = f"/seals/console/{seal.id}?lang=en"
    data = {"csrf_token": csrf_token(officer_client, url), "purpose": "签订采购合同", "page": "1",
            "position": "top-right", "file": (io.BytesIO(CORPUS[name]), "x.pdf")}
    r = returns(lambda: officer_client.post(url, data=data, content_type="multipart/form-data"))
    html = r.get_data(as_text=True)
    assert r.mimetype == "text/html" and 'name="purpose"' in html
    if name in SIGN_REFUSED:
        assert r.status_code == 409 and "does not allow another seal" in html
    else:
        assert r.status_code == 400 and "not a PDF document, or it is damaged" in html
    assert _uses(seal.id) == 0


# ---------------------------------------------------------------- the verifier's limits


def _with_copies(sealed: bytes, copies: int, *, indirect_type: bool = False) -> bytes:
    """The attack: more signature fields whose value is the first seal's signature dictionary."""
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

    w = IncrementalPdfFileWriter(io.BytesIO(sealed))
    form = w.root["/AcroForm"]
    first = form["/Fields"][0].get_object()
    sig_ref = first.raw_get("/V")
    fields = form["/Fields"]
    sig_type = w.add_object(generic.NameObject("/Sig")) if indirect_type else generic.NameObject("/Sig")
    for i in range(copies):
        fields.append(w.add_object(generic.DictionaryObject({
            generic.NameObject("/FT"): sig_type,
            generic.NameObject("/T"): generic.TextStringObject(f"Copy{i}"),
            generic.NameObject("/V"): sig_ref})))
    w.update_container(form)
    w.update_root()
    out = io.BytesIO()
    w.write(out)
    return out.getvalue()


def _verify(client, pdf: bytes, **headers):
    return client.post("/api/v1/seals/verify", data={"file": (io.BytesIO(pdf), "d.pdf")},
                       content_type="multipart/form-data", headers=headers)


def test_copies_of_one_signature_are_capped(app, seal, client):
    sealed = services.sign_pdf(seal, GOOD, purpose="p", actor="t")
    db.session.commit()
    r = _verify(client, _with_copies(sealed, app.config["TONGBAN_VERIFY_MAX_SIGNATURES"]))
    assert r.status_code == 422 and r.json["error"] == "too_many_signatures"
    assert "签章" in r.json["error_description"]  # Chinese by default
    r = _verify(client, _with_copies(sealed, 50), **{"Accept-Language": "en"})
    assert r.status_code == 422 and "at most 20 signatures" in r.json["error_description"]


def test_signatures_are_counted_before_pyhanko_reads_them(app, seal, client, monkeypatch):
    """The cap holds before any signature dictionary is parsed (parsing 1,750 of them is the cost),
    also when /FT is an indirect object."""
    from pyhanko.sign.validation import pdf_embedded

    sealed = services.sign_pdf(seal, GOOD, purpose="p", actor="t")
    db.session.commit()

    def not_reached(reader):
        raise RuntimeError("the signatures were read before they were counted")

    monkeypatch.setattr(pdf_embedded, "collect_embedded_signatures", not_reached)
    for indirect in (False, True):
        r = _verify(client, _with_copies(sealed, 30, indirect_type=indirect))
        assert r.status_code == 422 and r.json["error"] == "too_many_signatures", (indirect, r.json)


def test_indirect_arrays_are_fine(seal, sign_api):
    """/Kids and /Fields may be indirect objects: a legal document is not refused for it."""
    from tests.seal.malformed import doc

    pdf = doc(pages=b"<< /Type /Pages /Kids 4 0 R /Count 1 >>",
              cat=b"<< /Type /Catalog /Pages 2 0 R /AcroForm << /Fields 5 0 R >> >>",
              objs={4: b"[3 0 R]", 5: b"[]"})
    r = sign_api(pdf)
    assert r.status_code == 200, r.json
    assert services.verify_pdf(r.data)["valid"] is True


def test_a_copy_is_validated_once_and_proves_nothing(seal, client):
    sealed = services.sign_pdf(seal, GOOD, purpose="p", actor="t")
    db.session.commit()
    r = _verify(client, _with_copies(sealed, 2))
    assert r.status_code == 200 and r.json["valid"] is False
    first, *copies = r.json["signatures"]
    assert first["intact"] is True and first["seal_code"] == seal.code
    assert len(copies) == 2
    for c in copies:
        assert c["valid"] is False and c["error"].startswith("a copy of the signature in field")
        assert c["seal_code"] is None  # never "": the schema says 13 digits or null


def test_a_padded_copy_is_still_a_copy(seal, client):
    """The copy's CMS bytes differ (other padding) but its signature value is the first one's."""
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

    sealed = services.sign_pdf(seal, GOOD, purpose="p", actor="t")
    db.session.commit()
    w = IncrementalPdfFileWriter(io.BytesIO(sealed))
    form = w.root["/AcroForm"]
    original = form["/Fields"][0].get_object()["/V"]
    contents = bytes(original["/Contents"])
    padded = contents[:-1] + b"\x01"
    assert padded != contents and contents.endswith(b"\x00")
    copy = generic.DictionaryObject({k: v for k, v in original.items()})
    copy[generic.NameObject("/Contents")] = generic.ByteStringObject(padded)
    form["/Fields"].append(w.add_object(generic.DictionaryObject({
        generic.NameObject("/FT"): generic.NameObject("/Sig"),
        generic.NameObject("/T"): generic.TextStringObject("Padded"),
        generic.NameObject("/V"): w.add_object(copy)})))
    w.update_container(form)
    out = io.BytesIO()
    w.write(out)
    r = _verify(client, out.getvalue())
    assert r.status_code == 200 and r.json["valid"] is False
    assert r.json["signatures"][1]["error"].startswith("a copy of the signature in field")


def test_signature_cap_is_configurable(app, seal, authority_seal, client):
    once = services.sign_pdf(seal, GOOD, purpose="p", actor="t")
    twice = services.sign_pdf(authority_seal, once, purpose="p", actor="t", licence_use=True)
    db.session.commit()
    app.config["TONGBAN_VERIFY_MAX_SIGNATURES"], saved = 1, app.config["TONGBAN_VERIFY_MAX_SIGNATURES"]
    try:
        assert _verify(client, once).json["valid"] is True
        r = _verify(client, twice)
        assert r.status_code == 422 and r.json["error"] == "too_many_signatures"
    finally:
        app.config["TONGBAN_VERIFY_MAX_SIGNATURES"] = saved


def test_time_bound(app, seal, client):
    sealed = services.sign_pdf(seal, GOOD, purpose="p", actor="t")
    db.session.commit()
    app.config["TONGBAN_VERIFY_MAX_SECONDS"], saved = 0, app.config["TONGBAN_VERIFY_MAX_SECONDS"]
    try:
        r = _verify(client, sealed)
        assert r.status_code == 422 and r.json["error"] == "verification_too_long"
    finally:
        app.config["TONGBAN_VERIFY_MAX_SECONDS"] = saved
    assert _verify(client, sealed).json["valid"] is True


def test_time_bound_is_checked_inside_the_difference_analysis(app, seal, client, monkeypatch):
    """One signature, then a later revision: the clock runs out while pyHanko compares them."""
    sealed = services.sign_pdf(seal, GOOD, purpose="p", actor="t")
    db.session.commit()
    updated = _with_copies(sealed, 0)  # an incremental update after the seal, no new field
    assert _verify(client, updated).json["signatures"][0]["intact"] is True

    class Clock:
        calls = 0

        @classmethod
        def monotonic(cls) -> float:  # the deadline is set, the checks before the signature pass; then not
            cls.calls += 1
            return 0.0 if cls.calls <= 3 else 1e9

    monkeypatch.setattr(services, "time", Clock)
    r = _verify(client, updated)
    assert r.status_code == 422 and r.json["error"] == "verification_too_long" and Clock.calls >= 4


def test_concurrent_verifications_per_worker_are_capped(app, client):
    limit = app.config["TONGBAN_VERIFY_CONCURRENCY"]
    slot = services._verify_slot(limit)
    held = 0
    try:
        while slot.acquire(blocking=False):  # what `limit` verifications in progress hold
            held += 1
        assert held == limit
        r = _verify(client, GOOD)
        assert r.status_code == 503 and r.json["error"] == "verifier_busy"
        assert int(r.headers["Retry-After"]) > 0
        page = client.get("/seals/verify")
        token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        r = client.post("/seals/verify", data={"file": (io.BytesIO(GOOD), "d.pdf"), "csrf_token": token},
                        content_type="multipart/form-data")
        assert r.status_code == 503 and r.headers["Retry-After"]
    finally:
        for _ in range(held):
            slot.release()
    assert _verify(client, GOOD).status_code == 200  # the slots are given back


def test_cli_verify_reports_limits_with_exit_2(app, seal, tmp_path):
    sealed = services.sign_pdf(seal, GOOD, purpose="p", actor="t")
    db.session.commit()
    path = tmp_path / "copies.pdf"
    path.write_bytes(_with_copies(sealed, 40))
    r = app.test_cli_runner().invoke(args=["seals", "verify", str(path)])
    assert r.exit_code == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1


def test_verify_page_and_cli_verify_answer_every_malformed_pdf(app, client, tmp_path):
    page = client.get("/seals/verify")
    token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    runner = app.test_cli_runner()
    for name in NAMES:
        data = {"file": (io.BytesIO(CORPUS[name]), "d.pdf"), "csrf_token": token}
        r = returns(lambda data=data: client.post("/seals/verify", data=data, content_type="multipart/form-data"))
        assert r.status_code == (200 if name in VERIFY_NO_SEAL else 400), name
        assert r.mimetype == "text/html"
        path = tmp_path / f"{name}.pdf"
        path.write_bytes(CORPUS[name])
        r = returns(lambda path=path: runner.invoke(args=["seals", "verify", str(path), "--json"]))
        assert r.exit_code == (1 if name in VERIFY_NO_SEAL else 2), (name, r.output)
