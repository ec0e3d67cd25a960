// node-oidc-provider as bench/node_oidc_provider.py and bench/compare.py run it: copied next to
// node_modules/oidc-provider in the scratch folder (bench/_common.py: install_node_provider) and
// started there. Settings come from the environment (BENCH_*); listens on 127.0.0.1 only.
//
//   * clients: BENCH_CLIENT_ID (client_credentials, client_secret_basic) and BENCH_PORTAL_ID
//     (authorization_code; it only owns the user access token minted below);
//   * features.clientCredentials and features.introspection enabled;
//   * features.resourceIndicators: BENCH_RESOURCE gets RFC 9068 JWT access tokens signed ES256
//     with a fresh P-256 key; BENCH_OPAQUE_RESOURCE gets opaque ones (the introspection row:
//     this provider does not introspect JWT access tokens);
//   * the default in-memory adapter, proxy off;
//   * once listening, when BENCH_STATE is set: a user access token for one account (scope
//     "openid profile", opaque, no audience, so the userinfo endpoint accepts it), minted with
//     the provider's Grant and AccessToken models, is written to that file as JSON.
import { writeFileSync } from 'node:fs';
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const env = process.env;
const port = Number(env.BENCH_PORT);
const issuer = `http://127.0.0.1:${port}`;
const resource = env.BENCH_RESOURCE;
const opaqueResource = env.BENCH_OPAQUE_RESOURCE;
const accountId = env.BENCH_ACCOUNT || 'bench-citizen';
const portalId = env.BENCH_PORTAL_ID || 'bench-portal';

// A fresh P-256 key for ES256 JWT access tokens; an RSA key too, only because
// RS256 is the provider's default ID Token algorithm (no ID Tokens are issued here).
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });

const provider = new Provider(issuer, {
  clients: [{
    client_id: env.BENCH_CLIENT_ID,
    client_secret: env.BENCH_CLIENT_SECRET,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_basic',
  }, {
    client_id: portalId,
    client_secret: env.BENCH_CLIENT_SECRET,
    grant_types: ['authorization_code'],
    redirect_uris: ['http://127.0.0.1:9/cb'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: {
    keys: [{ ...ec, kid: 'es256', alg: 'ES256', use: 'sig' }, { ...rsa, kid: 'rs256', alg: 'RS256', use: 'sig' }],
  },
  // One in-memory account: what userinfo answers for the minted token.
  findAccount: (ctx, sub) => ({
    accountId: sub,
    claims: () => ({ sub, name: '张三', updated_at: 1700000000 }),
  }),
  claims: { openid: ['sub'], profile: ['name', 'updated_at'] },
  scopes: ['openid', 'profile', 'api:read'],
  ttl: { ClientCredentials: 3600, AccessToken: 3600, Grant: 3600 },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resourceIndicator) => {
        if (resourceIndicator === resource) {
          return {
            scope: 'api:read',
            audience: resource,
            accessTokenTTL: 3600,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'ES256' } },
          };
        }
        // Only for the introspection row: this provider refuses to introspect JWT access tokens.
        if (resourceIndicator === opaqueResource) {
          return { scope: 'api:read', audience: opaqueResource, accessTokenTTL: 3600, accessTokenFormat: 'opaque' };
        }
        throw new Error(`unknown resource ${resourceIndicator}`);
      },
    },
  },
});
provider.proxy = false;
provider.on('server_error', (ctx, err) => console.error('server_error', err));

// What a code flow would leave behind: a grant of "openid profile" to the portal for the
// account, and an access token under it (no resource: audience-less, accepted by userinfo).
async function mintUserToken() {
  const grant = new provider.Grant({ accountId, clientId: portalId });
  grant.addOIDCScope('openid profile');
  const grantId = await grant.save();
  const client = await provider.Client.find(portalId);
  const token = new provider.AccessToken({
    accountId, client, grantId, gty: 'authorization_code', scope: 'openid profile',
  });
  return token.save();
}

const server = provider.listen(port, '127.0.0.1', async () => {
  if (env.BENCH_STATE) {
    const userAccessToken = await mintUserToken();
    writeFileSync(env.BENCH_STATE, JSON.stringify({ user_access_token: userAccessToken }));
  }
  console.log(`oidc-provider listening on ${issuer}`);
});
server.keepAliveTimeout = 65000;
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)));
