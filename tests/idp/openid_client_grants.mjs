// openid-client 6 (Node; a strict, certified relying party) drives the grants beyond the code
// flow against a live Tongban: token exchange (RFC 8693, genericGrantRequest), CIBA poll mode
// (initiateBackchannelAuthentication + pollBackchannelAuthenticationGrant) and the device
// authorization grant (initiateDeviceAuthorization + pollDeviceAuthorizationGrant).
// tests/idp/test_openid_client_grants.py runs it. Arguments come as JSON in OC_ARGS:
// {issuer, exchanger: {clientId, secret}, subjectToken, audience, clerk: {clientId, secret},
//  loginHint, bindingMessage, kiosk: {clientId}}.
// While a grant waits for the citizen it prints {"waiting": "ciba"|"device", ...} on a line
// of its own (the test then approves as the citizen over HTTP); the last line is the result.
import * as client from 'openid-client';

const args = JSON.parse(process.env.OC_ARGS);
const insecure = { execute: [client.allowInsecureRequests] };
const issuer = new URL(args.issuer);
const out = {};

function failure(e) {
  return { name: e.name, error: e.error, message: e.message, code: e.code };
}

function claimsOf(jwt) {
  return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());
}

// ---------------------------------------------------------------- token exchange (RFC 8693)
{
  const config = await client.discovery(issuer, args.exchanger.clientId, undefined,
    client.ClientSecretBasic(args.exchanger.secret), insecure);
  const meta = config.serverMetadata();
  out.discovery = {
    grantTypes: meta.grant_types_supported,
    backchannelEndpoint: meta.backchannel_authentication_endpoint,
    deliveryModes: meta.backchannel_token_delivery_modes_supported,
    userCode: meta.backchannel_user_code_parameter_supported,
  };
  try {
    const t = await client.genericGrantRequest(config, 'urn:ietf:params:oauth:grant-type:token-exchange', {
      subject_token: args.subjectToken,
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      audience: args.audience,
      purpose: 'openid-client',
    });
    out.exchange = { issuedTokenType: t.issued_token_type, tokenType: t.token_type, scope: t.scope,
      expiresIn: t.expiresIn(), refresh: t.refresh_token ?? null, claims: claimsOf(t.access_token) };
  } catch (e) {
    out.exchange = { failed: failure(e) };
  }
  try {
    await client.genericGrantRequest(config, 'urn:ietf:params:oauth:grant-type:token-exchange', {
      subject_token: args.subjectToken,
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      audience: 'not-an-allowed-target',
    });
    out.exchangeRefused = { failed: null };
  } catch (e) {
    out.exchangeRefused = { failed: failure(e) };
  }
}

// ---------------------------------------------------------------- CIBA, poll mode
{
  const config = await client.discovery(issuer, args.clerk.clientId, undefined,
    client.ClientSecretBasic(args.clerk.secret), insecure);
  try {
    const started = await client.initiateBackchannelAuthentication(config, {
      scope: 'openid profile', login_hint: args.loginHint, binding_message: args.bindingMessage,
    });
    console.log(JSON.stringify({ waiting: 'ciba', expiresIn: started.expires_in, interval: started.interval }));
    const t = await client.pollBackchannelAuthenticationGrant(config, started,
      undefined, { signal: AbortSignal.timeout(60000) });
    const c = t.claims();
    out.ciba = { sub: c.sub, sid: c.sid, acr: c.acr, authTime: c.auth_time, name: c.name, aud: c.aud,
      refresh: t.refresh_token ?? null };
  } catch (e) {
    out.ciba = { failed: failure(e) };
  }
}

// ---------------------------------------------------------------- device authorization grant
{
  const config = await client.discovery(issuer, args.kiosk.clientId, undefined, client.None(), insecure);
  try {
    const started = await client.initiateDeviceAuthorization(config, { scope: 'openid profile' });
    console.log(JSON.stringify({ waiting: 'device', userCode: started.user_code,
      verificationUriComplete: started.verification_uri_complete }));
    const t = await client.pollDeviceAuthorizationGrant(config, started,
      undefined, { signal: AbortSignal.timeout(60000) });
    const c = t.claims();
    out.device = { sub: c.sub, sid: c.sid, acr: c.acr, name: c.name, refreshed: false };
    if (t.refresh_token) {
      const r = await client.refreshTokenGrant(config, t.refresh_token);
      out.device.refreshed = Boolean(r.access_token) && (r.claims() === undefined || r.claims().sub === c.sub);
    }
  } catch (e) {
    out.device = { failed: failure(e) };
  }
}

console.log(JSON.stringify(out));
