// Keycloak-shaped OpenID Connect provider for the HEROES test bed, built on panva/oidc-provider
// (OpenID Certified). Started by jupyter_heroes/testing/oidc.py; never used in production.
//
// Shaped like a Keycloak realm so the production authenticator runs unchanged against it:
//   issuer      http://127.0.0.1:<port>/realms/<realm>
//   endpoints   /realms/<realm>/protocol/openid-connect/{auth,token,userinfo,certs,logout,revoke,token/introspect}
//   login form  /realms/<realm>/login-actions/authenticate (ids kc-form-login, username, password, kc-login)
//   tokens      JWT access tokens (RS256, typ at+jwt, aud "account") carrying realm_access.roles, groups,
//               azp, session_state, like Keycloak's; roles are NOT in userinfo or the ID token (Keycloak's
//               default "realm roles" mapper); refresh tokens for every login, bound to the SSO session
//               (like Keycloak's non-offline refresh tokens: they stop working at logout); refresh tokens
//               are not rotated (Keycloak's default "Revoke Refresh Token: off").
//   userinfo    Keycloak-like: accepts the JWT access token, answers from the *current* user data, and
//               refuses the token once the SSO session has ended.
//   logout      RP-initiated logout; with a valid id_token_hint it ends the session without asking
//               (auto-submitted confirmation form), without one it shows Keycloak's confirmation page.
//
// The realm (users and clients) lives in a JSON file that is re-read whenever it changes, so a test
// removes a role or a group of a user, or registers a client, by rewriting the file:
//   {"users": {"alice": {"password": "...", "email": "...", "name": "Alice Hero",
//                        "groups": ["/acme/crash-sim"], "roles": ["researcher"]}},
//    "clients": [{"client_id": "jupyterhub", "client_secret": "...", "redirect_uris": [...],
//                 "post_logout_redirect_uris": [...]}]}
//
// Env: OIDC_PORT, OIDC_REALM (heroes), OIDC_REALM_FILE, OIDC_KEY_FILE (RSA JWK, made if absent),
//      OIDC_ACCESS_TOKEN_TTL (300 s), OIDC_REFRESH_TOKEN_TTL (1800 s), OIDC_SESSION_TTL (3600 s).
import fs from 'node:fs';
import crypto from 'node:crypto';
import express from 'express';
import Provider, { errors } from 'oidc-provider';
import MemoryAdapter from 'oidc-provider/lib/adapters/memory_adapter.js';

const PORT = Number(process.env.OIDC_PORT || 8080);
const REALM = process.env.OIDC_REALM || 'heroes';
const BASE = `/realms/${REALM}`;
const ISSUER = `http://127.0.0.1:${PORT}${BASE}`;
const REALM_FILE = process.env.OIDC_REALM_FILE;
const KEY_FILE = process.env.OIDC_KEY_FILE;
const AT_TTL = Number(process.env.OIDC_ACCESS_TOKEN_TTL || 300);
const RT_TTL = Number(process.env.OIDC_REFRESH_TOKEN_TTL || 1800);
const SESSION_TTL = Number(process.env.OIDC_SESSION_TTL || 3600);
// Keycloak's access tokens are for the "account" audience; as a resource indicator it needs a URI
const RESOURCE = `${ISSUER}/account`;
const TOKEN_SCOPES = 'openid profile email groups roles offline_access';

if (!REALM_FILE || !KEY_FILE) {
  console.error('OIDC_REALM_FILE and OIDC_KEY_FILE must be set');
  process.exit(2);
}

// ---- the realm file, re-read when it changes --------------------------------------------------
let realmCache = { mtime: -1, realm: { users: {}, clients: [] } };
function realm() {
  const { mtimeMs, size } = fs.statSync(REALM_FILE);
  const stamp = `${mtimeMs}:${size}`;
  if (stamp !== realmCache.mtime) {
    const parsed = JSON.parse(fs.readFileSync(REALM_FILE, 'utf8'));
    realmCache = { mtime: stamp, realm: { users: parsed.users || {}, clients: parsed.clients || [] } };
  }
  return realmCache.realm;
}

// stable subject ids, like Keycloak's user UUIDs
const subOf = (u) => crypto.createHash('sha256').update(`${REALM}:${u}`).digest('hex').replace(
  /^(.{8})(.{4})(.{4})(.{4})(.{12}).*/, '$1-$2-$3-$4-$5');
function userBySub(sub) {
  const { users } = realm();
  const name = Object.keys(users).find((u) => subOf(u) === sub);
  return name ? [name, users[name]] : [undefined, undefined];
}
function profileClaims(sub, username, u) {
  const [given, ...rest] = (u.name || username).split(' ');
  return {
    sub, preferred_username: username, name: u.name || username, given_name: given,
    family_name: rest.join(' '), email: u.email || `${username}@example.org`, email_verified: true,
    groups: u.groups || [],
  };
}

// ---- keys ---------------------------------------------------------------------------------------
function signingKey() {
  if (!fs.existsSync(KEY_FILE)) {
    const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
    const jwk = { ...privateKey.export({ format: 'jwk' }), kid: crypto.randomUUID(), use: 'sig', alg: 'RS256' };
    fs.writeFileSync(KEY_FILE, JSON.stringify(jwk), { mode: 0o600 });
  }
  return JSON.parse(fs.readFileSync(KEY_FILE, 'utf8'));
}
const JWK = signingKey();
const PUBLIC_KEY = crypto.createPublicKey({ key: JWK, format: 'jwk' });

// ---- storage: memory, except clients, which come from the realm file -----------------------------
class RealmAdapter extends MemoryAdapter {
  async find(id) {
    if (this.model !== 'Client') return super.find(id);
    const c = realm().clients.find((x) => x.client_id === id);
    if (!c) return undefined;
    return {
      token_endpoint_auth_method: 'client_secret_post',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      post_logout_redirect_uris: [],
      ...c,
    };
  }
}

const configuration = {
  adapter: RealmAdapter,
  jwks: { keys: [JWK] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  routes: {
    authorization: '/protocol/openid-connect/auth',
    token: '/protocol/openid-connect/token',
    userinfo: '/protocol/openid-connect/userinfo',
    jwks: '/protocol/openid-connect/certs',
    end_session: '/protocol/openid-connect/logout',
    revocation: '/protocol/openid-connect/revoke',
    introspection: '/protocol/openid-connect/token/introspect',
  },
  scopes: ['openid', 'offline_access', 'profile', 'email', 'groups', 'roles'],
  claims: {
    // Keycloak's group mapper puts "groups" in every token; realm roles go to the access token only
    openid: ['sub', 'groups'],
    profile: ['name', 'given_name', 'family_name', 'preferred_username'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  conformIdTokenClaims: false, // scope claims in the ID token too, as Keycloak does
  features: {
    devInteractions: { enabled: false },
    introspection: { enabled: true },
    revocation: { enabled: true },
    userinfo: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => RESOURCE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, resourceIndicator) => {
        if (resourceIndicator !== RESOURCE) throw new errors.InvalidTarget();
        return { scope: TOKEN_SCOPES, audience: 'account', accessTokenFormat: 'jwt', accessTokenTTL: AT_TTL,
                 jwt: { sign: { alg: 'RS256' } } };
      },
    },
    rpInitiatedLogout: {
      enabled: true,
      async logoutSource(ctx, form) {
        // Keycloak ends the session at once when the RP proves itself with id_token_hint
        const auto = Boolean(ctx.oidc.params.id_token_hint);
        ctx.body = `<!DOCTYPE html><html><head><meta charset="utf-8"><title>Logging out</title></head><body>
<div id="kc-logout-confirm"><h1 id="kc-page-title">Do you want to log out?</h1>${form}
<button id="kc-logout" type="submit" form="op.logoutForm" name="logout" value="yes">Logout</button></div>
${auto ? `<script>const f = document.getElementById('op.logoutForm'); const i = document.createElement('input');
i.type = 'hidden'; i.name = 'logout'; i.value = 'yes'; f.appendChild(i); f.submit();</script>` : ''}
</body></html>`;
      },
      async postLogoutSuccessSource(ctx) {
        ctx.body = '<!DOCTYPE html><html><body><h1 id="kc-page-title">You are logged out</h1></body></html>';
      },
    },
  },
  pkce: { required: () => false }, // oauthenticator sends S256 anyway
  // Keycloak gives a refresh token with every login, tied to the SSO session
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: false,
  async extraTokenClaims(ctx, token) {
    if (token.kind !== 'AccessToken' || !token.accountId) return undefined;
    const [username, u] = userBySub(token.accountId);
    if (!username) return undefined;
    return {
      ...profileClaims(token.accountId, username, u),
      typ: 'Bearer',
      azp: token.clientId,
      session_state: token.sessionUid,
      sid: token.sessionUid,
      realm_access: { roles: u.roles || [] },
      resource_access: {},
    };
  },
  async findAccount(ctx, sub) {
    const [username, u] = userBySub(sub);
    if (!username) return undefined;
    return { accountId: sub, async claims() { return profileClaims(sub, username, u); } };
  },
  // first-party client: no consent screen; grant the openid scopes/claims asked for and the access token resource
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    const grant = grantId ? await ctx.oidc.provider.Grant.find(grantId)
      : new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    const requested = ctx.oidc.requestParamScopes ? [...ctx.oidc.requestParamScopes].join(' ') : 'openid';
    grant.addOIDCScope(requested);
    grant.addOIDCClaims(['sub', 'groups', 'preferred_username', 'email', 'email_verified', 'name', 'given_name', 'family_name']);
    grant.addResourceScope(RESOURCE, requested);
    await grant.save();
    return grant;
  },
  interactions: {
    // Keycloak-shaped login form URL; the _interaction cookie is scoped to this path
    url: (ctx, interaction) => `${BASE}/login-actions/authenticate?client_id=${ctx.oidc.client?.clientId || ''}&tab_id=${interaction.uid}`,
  },
  ttl: {
    AccessToken: AT_TTL, IdToken: AT_TTL, AuthorizationCode: 60, Interaction: 600, Session: SESSION_TTL,
    Grant: SESSION_TTL, RefreshToken: RT_TTL,
  },
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = `<!DOCTYPE html><html><body><h1 id="kc-page-title">Error</h1><pre id="kc-error-message">${esc(JSON.stringify(out))}</pre></body></html>`;
  },
};

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const provider = new Provider(ISSUER, configuration);
provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.on('grant.error', (ctx, err) => console.log('grant.error', err.message, err.error_description || ''));
provider.on('end_session.success', () => console.log('end_session.success'));

const loginPage = (action, username = '', error = '') => `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Sign in to ${esc(REALM)}</title></head>
<body><div id="kc-form"><h1 id="kc-page-title">Sign in to your account</h1>
${error ? `<div id="input-error" class="kc-feedback-text">${esc(error)}</div>` : ''}
<form id="kc-form-login" action="${esc(action)}" method="post">
  <label for="username">Username or email</label><input id="username" name="username" value="${esc(username)}" autofocus>
  <label for="password">Password</label><input id="password" name="password" type="password">
  <input type="hidden" id="id-hidden-input" name="credentialId">
  <input class="pf-c-button" name="login" id="kc-login" type="submit" value="Sign In">
</form></div></body></html>`;

const app = express();
app.disable('x-powered-by');
app.get(`${BASE}/login-actions/authenticate`, async (req, res, next) => {
  try {
    const { prompt } = await provider.interactionDetails(req, res);
    if (prompt.name !== 'login') { // consent is granted by loadExistingGrant; finish other prompts
      return provider.interactionFinished(req, res, {}, { mergeWithLastSubmission: true });
    }
    res.type('html').send(loginPage(req.originalUrl));
  } catch (e) { next(e); }
});
app.post(`${BASE}/login-actions/authenticate`, express.urlencoded({ extended: false }), async (req, res, next) => {
  try {
    await provider.interactionDetails(req, res);
    const { username = '', password = '' } = req.body;
    const { users } = realm();
    const name = Object.keys(users).find((u) => u === username || users[u].email === username);
    if (!name || users[name].password !== password || users[name].enabled === false) {
      console.log(`login failed for ${JSON.stringify(username)}`);
      return res.status(200).type('html').send(loginPage(req.originalUrl, username, 'Invalid username or password.'));
    }
    console.log(`login ${name}`);
    await provider.interactionFinished(req, res, { login: { accountId: subOf(name) } }, { mergeWithLastSubmission: false });
  } catch (e) { next(e); }
});

// Keycloak-like userinfo: takes the JWT access token, answers from the current user data
function verifyAccessToken(token) {
  const parts = String(token || '').split('.');
  if (parts.length !== 3) return null;
  const [h, p, s] = parts;
  const header = JSON.parse(Buffer.from(h, 'base64url').toString());
  if (header.alg !== 'RS256') return null;
  const ok = crypto.verify('RSA-SHA256', Buffer.from(`${h}.${p}`), PUBLIC_KEY, Buffer.from(s, 'base64url'));
  if (!ok) return null;
  const payload = JSON.parse(Buffer.from(p, 'base64url').toString());
  if (payload.iss !== ISSUER || !(payload.exp > Date.now() / 1000)) return null;
  return payload;
}
async function userinfo(req, res) {
  const auth = req.get('authorization') || '';
  const token = auth.toLowerCase().startsWith('bearer ') ? auth.slice(7).trim() : req.body?.access_token;
  const deny = (desc) => {
    res.set('WWW-Authenticate', `Bearer realm="${REALM}", error="invalid_token", error_description="${desc}"`);
    return res.status(401).json({ error: 'invalid_token', error_description: desc });
  };
  let payload;
  try { payload = verifyAccessToken(token); } catch { payload = null; }
  if (!payload) return deny('Token verification failed');
  if (payload.session_state && !(await provider.Session.findByUid(payload.session_state))) {
    return deny("User session not found or doesn't have client attached on it");
  }
  const [username, u] = userBySub(payload.sub);
  if (!username || u.enabled === false) return deny('User not found or disabled');
  res.set('Cache-Control', 'no-store');
  return res.json(profileClaims(payload.sub, username, u));
}
app.get(`${BASE}/protocol/openid-connect/userinfo`, (req, res, next) => userinfo(req, res).catch(next));
app.post(`${BASE}/protocol/openid-connect/userinfo`, express.urlencoded({ extended: false }),
  (req, res, next) => userinfo(req, res).catch(next));

// Keycloak's realm info document (some clients read public_key from it)
app.get(BASE, (req, res) => {
  const pub = PUBLIC_KEY.export({ type: 'spki', format: 'der' }).toString('base64');
  res.json({ realm: REALM, public_key: pub, 'token-service': `${ISSUER}/protocol/openid-connect`,
             'account-service': `${ISSUER}/account`, 'tokens-not-before': 0 });
});
app.get('/health', (req, res) => res.json({ status: 'UP' }));
app.use(BASE, provider.callback());

app.listen(PORT, '127.0.0.1', () => console.log(`oidc-provider issuer ${ISSUER} listening on 127.0.0.1:${PORT}`));
