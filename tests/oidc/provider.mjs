// A real OpenID Connect provider (panva/oidc-provider) for the sign-in tests.
//
// Environment (tests/oidc/provider.py sets it):
//   PORT           where to listen, on 127.0.0.1
//   REDIRECT_URIS  the gateway's callback URL(s), comma separated
//   CLIENT_SECRET  the secret of the confidential client `tally-confidential`
// Clients: `tally` (public: no secret, PKCE S256) and `tally-confidential` (client_secret_basic).
// PKCE is required for both. Accounts: any login name is an account (the built-in development
// login and consent pages accept any password); `olga` is the organiser and carries
// `roles: ["admin"]`, everyone else `roles: ["voter"]`. The roles and name claims are released
// with the `profile` scope and put into the ID token (conformIdTokenClaims off), as providers
// configured with a roles mapper do.
import Provider from "oidc-provider";

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;
const redirectUris = (process.env.REDIRECT_URIS || "").split(",").filter(Boolean);
const organisers = new Set(["olga"]);

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: "tally",
      token_endpoint_auth_method: "none",
      redirect_uris: redirectUris,
      grant_types: ["authorization_code"],
      response_types: ["code"],
    },
    {
      client_id: "tally-confidential",
      client_secret: process.env.CLIENT_SECRET || "tally-test-secret",
      token_endpoint_auth_method: "client_secret_basic",
      redirect_uris: redirectUris,
      grant_types: ["authorization_code"],
      response_types: ["code"],
    },
  ],
  pkce: { required: () => true },
  conformIdTokenClaims: false,
  claims: { openid: ["sub"], profile: ["name", "roles"] },
  scopes: ["openid", "profile"],
  cookies: { keys: ["tally-test-cookie-key"] },
  findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        const name = id.charAt(0).toUpperCase() + id.slice(1);
        return { sub: id, name, roles: organisers.has(id) ? ["admin"] : ["voter"] };
      },
    };
  },
});
provider.proxy = false;

const server = provider.listen(port, "127.0.0.1", () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
