// openid-client 6 (Node) as a browser-style public client with DPoP (RFC 9449) against a live
// Tongban: tests/idp/test_openid_client_dpop.py runs it and checks what it prints (one JSON object).
// OC_ARGS: {issuer, clientId, redirect, login, password, resource}.
import * as client from 'openid-client';
import { browser } from './tongban_openid_client_browser.mjs';

const args = JSON.parse(process.env.OC_ARGS);
const config = await client.discovery(new URL(args.issuer), args.clientId, undefined, client.None(),
  { execute: [client.allowInsecureRequests] });

// every answer with a DPoP-Nonce challenge is counted (openid-client retries them itself)
const challenges = { token: 0, userinfo: 0 };
config[client.customFetch] = async (url, options) => {
  const r = await fetch(url, options);
  const where = new URL(url).pathname.endsWith('/token') ? 'token' : 'userinfo';
  if (r.headers.get('dpop-nonce') && (r.status === 400 || r.status === 401)) challenges[where] += 1;
  return r;
};

const { follow, loginAndFollow: login } = browser(args);

function describe(e) {
  return { name: e.name, code: e.code ?? null, error: e.error ?? null, message: e.message };
}

const out = { discovery: { dpopAlgs: config.serverMetadata().dpop_signing_alg_values_supported,
  subjectTypes: config.serverMetadata().subject_types_supported } };
const keyPair = await client.randomDPoPKeyPair('ES256');
const DPoP = client.getDPoPHandle(config, keyPair);
const verifier = client.randomPKCECodeVerifier();
const state = client.randomState();
const nonce = client.randomNonce();
const params = { redirect_uri: args.redirect, scope: 'openid profile offline_access',
  code_challenge: await client.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
  state, nonce, dpop_jkt: await DPoP.calculateThumbprint() };
let step = await follow(client.buildAuthorizationUrl(config, params).href);
if (step.page) step = await login(step);
try {
  const tokens = await client.authorizationCodeGrant(config, new URL(step.callback),
    { pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce }, undefined, { DPoP });
  const claims = tokens.claims();
  out.code = { tokenType: tokens.token_type, sub: claims.sub, jkt: await DPoP.calculateThumbprint(),
    accessToken: tokens.access_token };
  const info = await client.fetchUserInfo(config, tokens.access_token, claims.sub, { DPoP });
  out.userinfo = { sub: info.sub, name: info.name };
  const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token, undefined, { DPoP });
  out.refresh = { tokenType: refreshed.token_type, accessToken: refreshed.access_token };
  // the refreshed token works at userinfo with the same key, and not with another one
  out.userinfoAfterRefresh = (await client.fetchUserInfo(config, refreshed.access_token, claims.sub, { DPoP })).sub;
  const other = client.getDPoPHandle(config, await client.randomDPoPKeyPair('ES256'));
  try {
    await client.fetchUserInfo(config, refreshed.access_token, claims.sub, { DPoP: other });
    out.otherKey = 'accepted';
  } catch (e) {
    out.otherKey = describe(e);
  }
  try {
    await client.refreshTokenGrant(config, refreshed.refresh_token, undefined, { DPoP: other });
    out.otherKeyRefresh = 'accepted';
  } catch (e) {
    out.otherKeyRefresh = describe(e);
  }
} catch (e) {
  out.error = describe(e);
}
out.challenges = challenges;
console.log(JSON.stringify(out));
