// A strict, certified relying party (openid-client 6, Node) against a live Tongban: the
// tests/idp/test_openid_client.py test runs it; prints one JSON object with what it saw.
// Arguments come as JSON in OC_ARGS: {issuer, clientId, secret, redirect, login, password}.
import * as client from 'openid-client';
import { browser } from './tongban_openid_client_browser.mjs';

const args = JSON.parse(process.env.OC_ARGS);
const config = await client.discovery(new URL(args.issuer), args.clientId, undefined,
  client.ClientSecretBasic(args.secret),
  { execute: [client.allowInsecureRequests] });

const { follow, loginAndFollow } = browser(args);

async function start(extra = {}) {
  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const nonce = client.randomNonce();
  const url = client.buildAuthorizationUrl(config, { redirect_uri: args.redirect, scope: 'openid profile',
    code_challenge: await client.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
    state, nonce, ...extra });
  return { url: url.href, verifier, state, nonce };
}

async function grant(callback, req) {
  try {
    const tokens = await client.authorizationCodeGrant(config, new URL(callback),
      { pkceCodeVerifier: req.verifier, expectedState: req.state, expectedNonce: req.nonce });
    return { tokens };
  } catch (e) {
    return { error: { name: e.name, code: e.code ?? null, error: e.error ?? null, message: e.message } };
  }
}

const out = {};
// 1. prompt=none without a session: an error openid-client accepts as an authorization response
let req = await start({ prompt: 'none' });
let step = await follow(req.url);
out.promptNone = (await grant(step.callback, req)).error;

// 2. the code flow: log in, code, tokens (ID token validated by openid-client), userinfo, refresh
req = await start();
step = await follow(req.url);
step = await loginAndFollow(step);
let got = await grant(step.callback, req);
if (got.error) {
  out.codeFlow = got.error;
} else {
  const claims = got.tokens.claims();
  const info = await client.fetchUserInfo(config, got.tokens.access_token, claims.sub);
  const refreshed = await client.refreshTokenGrant(config, got.tokens.refresh_token);
  out.codeFlow = { sub: claims.sub, sid: claims.sid, auth_time: claims.auth_time, userinfoSub: info.sub,
    name: info.name, refreshed: Boolean(refreshed.access_token), scope: got.tokens.scope };
  // 3. prompt=login: a new auth_time, the same sid
  req = await start({ prompt: 'login' });
  step = await follow(req.url);
  step = await loginAndFollow(step);
  got = await grant(step.callback, req);
  out.reauth = got.error ?? { sid: got.tokens.claims().sid, auth_time: got.tokens.claims().auth_time };
  // 4. a consent-free prompt=none with the session: a code
  req = await start({ prompt: 'none' });
  step = await follow(req.url);
  got = await grant(step.callback, req);
  out.silent = got.error ?? { sub: got.tokens.claims().sub };
}
console.log(JSON.stringify(out));
