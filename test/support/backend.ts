// A SMART backend service: an asymmetric client that signs its own client assertions.
import { randomUUID } from 'node:crypto';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWTPayload } from 'jose';
import type { TestServer } from './server.ts';
import { tokenRequest } from './oauth.ts';

export const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

export interface BackendClient {
  client_id: string;
  privateKey: CryptoKey;
  kid: string;
  alg: 'RS384' | 'ES384';
  /** A client assertion; `claims` and `header` override the defaults. */
  assertion(options?: { claims?: JWTPayload; header?: Record<string, unknown>; key?: CryptoKey; lifetime?: number }): Promise<string>;
  token(scope: string, options?: Parameters<BackendClient['assertion']>[0]): ReturnType<typeof tokenRequest>;
}

/**
 * `publish`: serves the client's key set and gives its URL, registered as the client's jwks_uri (by
 * default the keys are registered inline).
 */
export async function backendClient(server: TestServer, scope: string, alg: 'RS384' | 'ES384' = 'ES384', { publish, ...extra }: {
  resourceServer?: boolean; organizationId?: string; organizationName?: string; purposes?: string[]; clearance?: string; sensitivity?: string[]; redirectUris?: string[]; grantTypes?: string[];
  publish?: (jwks: { keys: object[] }) => string;
} = {}): Promise<BackendClient> {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
  const kid = `${alg}-${randomUUID()}`;
  const jwks = { keys: [{ ...(await exportJWK(publicKey)), kid, alg }] };
  const { client_id } = await server.addClient({
    name: 'Backend service', redirectUris: [], auth: publish ? { kind: 'jwks-uri', jwksUri: publish(jwks) } : { kind: 'jwks', jwks },
    grantTypes: ['client_credentials'], scope, ...extra,
  });
  const client: BackendClient = {
    client_id, privateKey, kid, alg,
    assertion: ({ claims = {}, header = {}, key = privateKey, lifetime = 240 } = {}) => {
      const now = Math.floor(Date.now() / 1000);
      const payload = { iss: client_id, sub: client_id, aud: `${server.issuer}/token`, jti: randomUUID(), iat: now, exp: now + lifetime, ...claims };
      return new SignJWT(payload).setProtectedHeader({ alg, kid, typ: 'JWT', ...header }).sign(key);
    },
    async token(requested, options) {
      return tokenRequest(server.issuer, {
        grant_type: 'client_credentials', scope: requested, client_assertion_type: ASSERTION_TYPE, client_assertion: await client.assertion(options),
      });
    },
  };
  return client;
}
