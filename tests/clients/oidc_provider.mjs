// A certified OpenID Connect provider (panva's oidc-provider) for the console's single
// sign-on test, on loopback. Its development login accepts any user name with any
// password; the subject (`sub`) is the user name typed.
//   node oidc_provider.mjs PORT REDIRECT_URI CLIENT_SECRET
import Provider from 'oidc-provider';

const [port, redirect, secret] = process.argv.slice(2);
const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [{
    client_id: 'tessera-console',
    client_secret: secret,
    redirect_uris: [redirect],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  pkce: { required: () => true },
  cookies: { keys: ['tessera-test-cookie-key'] },
  claims: { openid: ['sub'], profile: ['preferred_username'] },
  async findAccount(ctx, id) {
    return { accountId: id, async claims() { return { sub: id, preferred_username: id }; } };
  },
});
provider.listen(Number(port), '127.0.0.1', () => {
  console.log(`oidc provider listening on http://127.0.0.1:${port}`);
});
