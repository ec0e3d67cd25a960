"""The authorization code flow end to end over HTTP, driven by Authlib's client."""

import re
from urllib.parse import parse_qs, urlsplit

import requests
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.conftest import CITIZEN_ID, PASSWORD

REDIRECT = "http://127.0.0.1:9/callback"


def browser_login(base, session: requests.Session, login=CITIZEN_ID, password=PASSWORD, next_url=None):
    page = session.get(f"{base}/login", params={"next": next_url} if next_url else None)
    csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text).group(1)
    return session.post(f"{base}/login", data={"csrf_token": csrf, "login": login, "password": password,
                                               "next": next_url or ""}, allow_redirects=False)


def follow_to_callback(session, url):
    """Follow redirects inside the provider until one points at the client's redirect URI."""
    for _ in range(10):
        resp = session.get(url, allow_redirects=False)
        if resp.status_code not in (302, 303):
            return resp
        url = resp.headers["Location"]
        if url.startswith(REDIRECT):
            return url
        if url.startswith("/"):
            url = session.base + url
    raise AssertionError("too many redirects")


def test_code_flow_with_pkce(live_server, citizen, make_client):
    client_id, secret = make_client(first_party=True)
    disco = requests.get(f"{live_server}/.well-known/openid-configuration").json()
    assert disco["issuer"] == live_server
    oauth = OAuth2Session(client_id, secret, scope="openid profile", redirect_uri=REDIRECT,
                          code_challenge_method="S256")
    verifier = "v" * 64
    url, state = oauth.create_authorization_url(disco["authorization_endpoint"], code_verifier=verifier,
                                                nonce="n-0S6_WzA2Mj")
    browser = requests.Session()
    browser.base = live_server
    assert browser_login(live_server, browser).status_code == 302
    callback = follow_to_callback(browser, url)
    assert isinstance(callback, str), callback.text[:500]
    q = parse_qs(urlsplit(callback).query)
    assert q["state"] == [state] and q["iss"] == [live_server]
    token = oauth.fetch_token(disco["token_endpoint"], authorization_response=callback,
                              code_verifier=verifier)
    keys = KeySet.import_key_set(requests.get(disco["jwks_uri"]).json())
    id_token = jwt.decode(token["id_token"], keys, algorithms=["RS256"])
    claims = id_token.claims
    assert claims["iss"] == live_server and claims["aud"] == [client_id]
    assert claims["nonce"] == "n-0S6_WzA2Mj" and claims["name"] == "张三"
    assert claims["sid"] and claims["at_hash"] and claims["auth_time"]
    assert "id_number" not in claims
    at = jwt.decode(token["access_token"], keys, algorithms=["ES256"])
    assert at.header["typ"] == "at+jwt" and at.claims["client_id"] == client_id
    info = oauth.get(disco["userinfo_endpoint"]).json()
    assert info["sub"] == claims["sub"] and info["birthdate"] == "1949-12-31" and info["gender"] == "female"
    # refresh: rotation, and reuse of the old one revokes the family
    new = oauth.refresh_token(disco["token_endpoint"], refresh_token=token["refresh_token"])
    assert new["refresh_token"] != token["refresh_token"]
    reuse = requests.post(disco["token_endpoint"], data={"grant_type": "refresh_token",
                                                         "refresh_token": token["refresh_token"]},
                          auth=(client_id, secret))
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    again = requests.post(disco["token_endpoint"], data={"grant_type": "refresh_token",
                                                         "refresh_token": new["refresh_token"]},
                          auth=(client_id, secret))
    assert again.status_code == 400, "the rotated token's family must be revoked after reuse"
    r = requests.get(disco["userinfo_endpoint"], headers={"Authorization": f"Bearer {new['access_token']}"})
    assert r.status_code == 401
