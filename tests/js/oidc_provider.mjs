// A real OpenID Connect provider (npm `oidc-provider`, the certified Node.js
// implementation) for the relay's upstream-sign-in tests.
//   node oidc_provider.mjs PORT CLIENT_ID CLIENT_SECRET REDIRECT_URI
// Prints "ready ISSUER" once listening. Its development login page accepts any
// login name with any password; the account's email is the login name, its
// groups are ["analysts", "oidc-users"]. Claims follow the spec's default
// (conformIdTokenClaims): with an access token issued, email and groups come
// from the userinfo endpoint, not the ID token.
import { createRequire } from "node:module";

const require = createRequire(`${process.env.MCP_NODE_MODULES}/`);
const Provider = require("oidc-provider").default ?? require("oidc-provider");

const [port, clientId, clientSecret, redirectUri] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: [redirectUri],
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
    },
  ],
  claims: {
    openid: ["sub"],
    email: ["email", "email_verified"],
    profile: ["name"],
    groups: ["groups"],
  },
  scopes: ["openid", "email", "profile", "groups"],
  pkce: { required: () => true },
  cookies: { keys: ["test-only-cookie-key"] },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          email: id,
          email_verified: !id.startsWith("unverified"),
          name: `Person ${id}`,
          groups: ["analysts", "oidc-users"],
        };
      },
    };
  },
});
provider.on("server_error", (ctx, err) => console.error("server_error", err));
provider.listen(Number(port), "127.0.0.1", () => {
  console.log(`ready ${issuer}`);
});
