// openid-client 6 (Node, certified strict RP) against a live Tongban, modern profile:
// PAR (buildAuthorizationUrlWithPAR), JAR (buildAuthorizationUrlWithJAR, by value and pushed),
// private_key_jwt (PrivateKeyJwt) at the token, PAR, introspection and revocation endpoints,
// prompt=none errors through PAR, revocation with token_type_hint, refresh rotation.
// tests/idp/test_openid_client_modern.py runs it; it prints one JSON object with what it saw.
// OC_ARGS: {issuer, fapiClientId, jarClientId, jwk (private JWK), redirect, login, password}
import * as client from 'openid-client';
import { browser } from './tongban_openid_client_browser.mjs';

const args = JSON.parse(process.env.OC_ARGS);
const { d, ...pub } = args.jwk;
const privateKey = await crypto.subtle.importKey('jwk', args.jwk, { name: 'ECDSA', namedCurve: 'P-256' },
  false, ['sign']);
const signingKey = { key: privateKey, kid: args.jwk.kid };

async function configFor(clientId) {
  return client.discovery(new URL(args.issuer), clientId, undefined, client.PrivateKeyJwt(signingKey),
    { execute: [client.allowInsecureRequests] });
}
const fapi = await configFor(args.fapiClientId);
const jar = await configFor(args.jarClientId);

const { follow, loginAndFollow } = browser(args);

async function params(extra = {}) {
  const verifier = client.randomPKCECodeVerifier();
  const p = { redirect_uri: args.redirect, scope: 'openid profile offline_access',
    code_challenge: await client.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
    state: client.randomState(), nonce: client.randomNonce(), ...extra };
  return { p, verifier };
}

async function grant(config, callback, req, options) {
  try {
    const tokens = await client.authorizationCodeGrant(config, new URL(callback),
      { pkceCodeVerifier: req.verifier, expectedState: req.p.state, expectedNonce: req.p.nonce }, undefined, options);
    return { tokens };
  } catch (e) {
    return { error: describe(e) };
  }
}

function describe(e) {
  return { name: e.name, code: e.code ?? null, error: e.error ?? null, message: e.message };
}

async function attempt(fn) {
  try {
    return { ok: await fn() };
  } catch (e) {
    return { error: describe(e) };
  }
}

const out = { metadata: {} };
const meta = fapi.serverMetadata();
for (const k of ['pushed_authorization_request_endpoint', 'request_parameter_supported',
  'request_uri_parameter_supported', 'token_endpoint_auth_methods_supported']) {
  out.metadata[k] = meta[k];
}

// 1. PAR with prompt=none, no session: openid-client accepts the error response (iss, state)
let req = await params({ prompt: 'none' });
let url = await client.buildAuthorizationUrlWithPAR(fapi, req.p);
out.parUrlParams = [...url.searchParams.keys()].sort();
let step = await follow(url.href);
out.promptNone = (await grant(fapi, step.callback, req)).error ?? 'no error';

// 2. PAR + private_key_jwt + DPoP (fapi2 client: sender-constrained tokens): log in, tokens, userinfo
const DPoP = client.getDPoPHandle(fapi, await client.randomDPoPKeyPair('ES256'));
req = await params();
url = await client.buildAuthorizationUrlWithPAR(fapi, req.p, { DPoP });
step = await loginAndFollow(await follow(url.href));
let got = await grant(fapi, step.callback, req, { DPoP });
if (got.error) {
  out.par = got.error;
} else {
  const claims = got.tokens.claims();
  const info = await client.fetchUserInfo(fapi, got.tokens.access_token, claims.sub, { DPoP });
  out.par = { sub: claims.sub, name: info.name, hasRefresh: Boolean(got.tokens.refresh_token),
    tokenType: got.tokens.token_type };
  // refresh rotation
  const refreshed = await client.refreshTokenGrant(fapi, got.tokens.refresh_token, undefined, { DPoP });
  out.par.rotated = refreshed.refresh_token !== got.tokens.refresh_token;
  // revocation with hints: an access token under a wrong hint is still found (RFC 7009 §2.1) ...
  out.introspectBefore = (await client.tokenIntrospection(fapi, refreshed.access_token,
    { token_type_hint: 'access_token' })).active;
  out.revokeAccess = await attempt(() => client.tokenRevocation(fapi, refreshed.access_token,
    { token_type_hint: 'refresh_token' }).then(() => 'revoked'));
  out.introspectAfter = (await client.tokenIntrospection(fapi, refreshed.access_token)).active;
  // ... and the refresh token under its own hint: refreshing with it fails from then on
  out.revokeRefresh = await attempt(() => client.tokenRevocation(fapi, refreshed.refresh_token,
    { token_type_hint: 'refresh_token' }).then(() => 'revoked'));
  out.refreshAfterRevoke = (await attempt(() => client.refreshTokenGrant(fapi, refreshed.refresh_token, undefined, { DPoP }))).error;
  // the rotated-out refresh token is spent too
  out.par.oldRefreshAgain = (await attempt(() => client.refreshTokenGrant(fapi, got.tokens.refresh_token, undefined, { DPoP }))).error;
}

// 3. JAR pushed through PAR (the fapi2 client): the session is there, straight to the callback
req = await params();
const jarUrl = await client.buildAuthorizationUrlWithJAR(fapi, req.p, signingKey);
url = await client.buildAuthorizationUrlWithPAR(fapi, jarUrl.searchParams, { DPoP });
step = await follow(url.href);
got = await grant(fapi, step.callback, req, { DPoP });
out.jarPar = got.error ?? { sub: got.tokens.claims().sub };

// 4. JAR by value (a private_key_jwt client that may use the front channel)
req = await params();
url = await client.buildAuthorizationUrlWithJAR(jar, req.p, signingKey);
out.jarUrlParams = [...url.searchParams.keys()].sort();
step = await follow(url.href);
got = await grant(jar, step.callback, req);
out.jarValue = got.error ?? { sub: got.tokens.claims().sub };

// 5. the fapi2 client's plain authorization request is refused (an error page, not a redirect)
req = await params();
step = await follow(client.buildAuthorizationUrl(fapi, req.p).href);
out.fapiPlain = { status: step.status ?? null, callback: Boolean(step.callback) };

console.log(JSON.stringify(out));
