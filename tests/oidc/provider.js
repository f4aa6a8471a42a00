// A real OpenID Connect provider for tests/test_openid.py (oidc-provider).
//
// Environment: OIDC_PORT (it listens on 127.0.0.1), OIDC_REDIRECT_URIS (the
// kintofs token endpoints its clients may send codes to, space separated).
// One user: log in as "alice" (any password) on the development login form.
// Client "kintofs" gets access tokens valid for an hour, client
// "kintofs-short" for 2 seconds (to see expired tokens refused).
// Stdout: a "listening" line once ready, then one JSON line per userinfo
// request, so that tests can count how often kintofs asked.
import Provider from 'oidc-provider';

const port = Number(process.env.OIDC_PORT);
const redirectUris = process.env.OIDC_REDIRECT_URIS.split(' ');
const SHORT_LIVED_CLIENT = 'kintofs-short';

const USERS = {
  alice: { sub: 'alice', email: 'alice@example.test', email_verified: true, name: 'Alice' },
};

const client = (clientId) => ({
  client_id: clientId,
  client_secret: `${clientId}-secret`,
  redirect_uris: redirectUris,
  // Kinto sends client_id and client_secret in the form body.
  token_endpoint_auth_method: 'client_secret_post',
  grant_types: ['authorization_code'],
  response_types: ['code'],
});

const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [client('kintofs'), client(SHORT_LIVED_CLIENT)],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  cookies: { keys: ['kintofs-tests-only'] },
  pkce: { required: () => false }, // Kinto's login sends no code_challenge
  clockTolerance: 0, // an expired token is refused at once, not 15 s later
  ttl: {
    AccessToken: (ctx, token, tokenClient) =>
      (tokenClient && tokenClient.clientId === SHORT_LIVED_CLIENT ? 2 : 3600),
  },
  async findAccount(ctx, id) {
    const user = USERS[id];
    if (!user) {
      return undefined;
    }
    return { accountId: id, claims: async () => user };
  },
});

provider.use(async (ctx, next) => {
  await next();
  if (ctx.path === '/me') {
    console.log(JSON.stringify({ userinfo: ctx.status }));
  }
});

provider.listen(port, '127.0.0.1', () => {
  console.log('listening');
});
