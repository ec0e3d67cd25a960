// The browser half of the openid-client tests (tests/idp/openid_client_*.mjs): a cookie jar,
// following the provider's redirects until a page or the client's callback, and the log-in form.
// tests/idp/node_rp.py copies it next to the scripts that import it.

export function browser({ issuer, redirect, login, password }) {
  const jar = new Map();

  async function http(url, options = {}) {
    const cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
    const r = await fetch(new URL(url, issuer), { ...options, redirect: 'manual',
      headers: { ...(options.headers || {}), ...(cookie ? { cookie } : {}) } });
    for (const c of r.headers.getSetCookie()) {
      const kv = c.split(';')[0];
      const i = kv.indexOf('=');
      jar.set(kv.slice(0, i), kv.slice(i + 1));
    }
    return r;
  }

  // inside the provider until a page ({page, status, url}) or the client's callback ({callback})
  async function follow(url) {
    for (let i = 0; i < 10; i++) {
      if (url.startsWith(redirect)) return { callback: url };
      const r = await http(url);
      const location = r.headers.get('location');
      if (!location) return { page: await r.text(), status: r.status, url };
      url = new URL(location, issuer).href;
    }
    throw new Error('too many redirects');
  }

  // fill in the log-in page of ``step`` and follow on (a step already at the callback is kept)
  async function loginAndFollow(step) {
    if (step.callback) return step;
    const csrf = /name="csrf_token" type="hidden" value="([^"]+)"/.exec(step.page)[1];
    const next = /name="next"[^>]*value="([^"]*)"/.exec(step.page)?.[1] ?? '';
    const body = new URLSearchParams({ csrf_token: csrf, login, password,
      next: next.replaceAll('&amp;', '&') });
    const r = await http('/login', { method: 'POST', body });
    const location = r.headers.get('location');
    // the authorization request may continue in the log-in's own answer (a consent page)
    if (!location) return { page: await r.text(), status: r.status, url: new URL('/login', issuer).href };
    return follow(new URL(location, issuer).href);
  }

  return { http, follow, loginAndFollow };
}
