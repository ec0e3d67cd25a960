// A real upstream OpenID provider for the federation tests: node-oidc-provider (from the npm
// registry; `make install` puts it in .venv/node-oidc-provider), configured with one client
// (Tongban), test accounts whose claims include an ID number, and back-channel logout.
//
//   OIDC_PROVIDER_MODULE  path of node_modules/oidc-provider/lib/index.js
//   PORT                  where to listen (127.0.0.1)
//   CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, BACKCHANNEL_URI, POST_LOGOUT_URI   Tongban's registration
//   ACCOUNTS              JSON {login: {claims..., "acr": "..."}}: who may log in, with which claims
//
// The interaction (log-in) is a plain form: POST /interaction/<uid>/login with login=<account>.
// An unknown login answers the client with error=access_denied.
import { generateKeyPairSync } from 'node:crypto';
import http from 'node:http';
import { pathToFileURL } from 'node:url';

const { default: Provider } = await import(pathToFileURL(process.env.OIDC_PROVIDER_MODULE).href);

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;
const accounts = JSON.parse(process.env.ACCOUNTS);
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });

const provider = new Provider(issuer, {
  clients: [{
    client_id: process.env.CLIENT_ID,
    client_secret: process.env.CLIENT_SECRET,
    redirect_uris: [process.env.REDIRECT_URI],
    post_logout_redirect_uris: [process.env.POST_LOGOUT_URI],
    backchannel_logout_uri: process.env.BACKCHANNEL_URI,
    backchannel_logout_session_required: true,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: { keys: [{ ...rsa, kid: 'upstream-rs256', alg: 'RS256', use: 'sig' }] },
  findAccount: async (ctx, id) => (accounts[id] ? {
    accountId: id,
    async claims() {
      const { acr, ...claims } = accounts[id];
      return { sub: id, ...claims };
    },
  } : undefined),
  claims: { openid: ['sub', 'name', 'id_number', 'id_number_verified'] },
  conformIdTokenClaims: false, // the ID number in the ID token itself, not only at userinfo
  acrValues: ['loa-low', 'loa-substantial', 'loa-high'],
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  cookies: { keys: ['upstream-test-cookie-key'] },
  // Tongban listens on 127.0.0.1 in the tests: lift the provider's SSRF guard against loopback
  // addresses for its back-channel logout calls (test only)
  fetch: (url, options) => {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
});
provider.proxy = false;
provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.on('backchannel.error', (client, err) => console.error('backchannel.error', err.message));
provider.on('backchannel.success', (client) => console.log('backchannel.success', client.clientId));

async function readBody(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return new URLSearchParams(body);
}

const callback = provider.callback();
const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, issuer);
  const m = url.pathname.match(/^\/interaction\/([\w-]+)(\/login)?$/);
  if (!m) return callback(req, res);
  try {
    const details = await provider.interactionDetails(req, res);
    if (req.method === 'GET') {
      res.setHeader('Content-Type', 'text/html; charset=utf-8');
      res.end(`<form method="post" action="/interaction/${details.uid}/login"><input name="login">`
        + '<button type="submit">Sign in</button></form>');
      return;
    }
    const login = (await readBody(req)).get('login');
    if (!accounts[login]) {
      await provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'refused' });
      return;
    }
    const grant = new provider.Grant({ accountId: login, clientId: details.params.client_id });
    grant.addOIDCScope(details.params.scope);
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, {
      login: { accountId: login, acr: accounts[login].acr || 'loa-low', amr: ['pwd'] },
      consent: { grantId },
    }, { mergeWithLastSubmission: false });
  } catch (err) {
    console.error('interaction', err);
    res.statusCode = 500;
    res.end(String(err));
  }
});
server.listen(port, '127.0.0.1', () => console.log(`upstream listening on ${issuer}`));
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)));
