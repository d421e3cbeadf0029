// A standalone SMART guard in front of any FHIR R4 server, using only smart-auth/resource-server.
//   ISSUER=https://auth.example.org FHIR_BASE_URL=https://fhir.example.org/r4 \
//   FHIR_UPSTREAM_URL=http://internal-fhir:8080/fhir node --import tsx scripts/guard-proxy.ts
// Settings: PORT (8080), HOST (0.0.0.0), GUARD_VERIFICATION (local | introspection | local+introspection),
// INTROSPECTION_CLIENT_ID / INTROSPECTION_CLIENT_SECRET (a resource-server client of the issuer),
// GUARD_TOKEN_CACHE (true), GUARD_INTROSPECTION_CACHE (seconds an introspection answer is trusted, 30), GUARD_INCLUDES (strip | refuse), GUARD_NARRATIVES (refuse | sanitize),
// GUARD_OPERATIONS (comma-separated operation names allowed through, default none), UPSTREAM_TIMEOUT (seconds, 10),
// GUARD_PROVENANCE (false; true: every create and update goes upstream as a transaction with its Provenance).
import Koa from 'koa';
import { createGuardVerifier, httpUpstream, provenanceTemplate, provenanceUpstream, smartGuard, type GuardVerification } from 'smart-auth/resource-server';

function setting(name: string, fallback?: string): string {
  const value = process.env[name] ?? fallback;
  if (value === undefined || value === '') {
    console.error(`guard-proxy: ${name} is required`);
    process.exit(1);
  }
  return value;
}

function oneOf<T extends string>(name: string, fallback: T, allowed: readonly T[]): T {
  const value = setting(name, fallback) as T;
  if (!allowed.includes(value)) {
    console.error(`guard-proxy: ${name} must be one of ${allowed.join(', ')}, got "${value}"`);
    process.exit(1);
  }
  return value;
}

const issuer = setting('ISSUER').replace(/\/$/, '');
const base = setting('FHIR_BASE_URL').replace(/\/$/, '');
const upstreamBase = setting('FHIR_UPSTREAM_URL').replace(/\/$/, '');
const mode = oneOf('GUARD_VERIFICATION', 'local', ['local', 'introspection', 'local+introspection'] as const);
const clientId = process.env.INTROSPECTION_CLIENT_ID;
const clientSecret = process.env.INTROSPECTION_CLIENT_SECRET;
if (mode !== 'local' && (!clientId || !clientSecret)) {
  console.error(`guard-proxy: GUARD_VERIFICATION=${mode} needs INTROSPECTION_CLIENT_ID and INTROSPECTION_CLIENT_SECRET`);
  process.exit(1);
}

const verification: GuardVerification = {
  issuer,
  audience: base,
  mode,
  cache: oneOf('GUARD_TOKEN_CACHE', 'true', ['true', 'false'] as const) === 'true',
  introspectionCacheSeconds: Number(setting('GUARD_INTROSPECTION_CACHE', '30')),
  ...(clientId && clientSecret && { introspection: { endpoint: `${issuer}/introspect`, credentials: { clientId, clientSecret } } }),
};

const provenance = oneOf('GUARD_PROVENANCE', 'false', ['true', 'false'] as const) === 'true';
const upstream = httpUpstream({ baseUrl: upstreamBase, timeoutMs: Number(setting('UPSTREAM_TIMEOUT', '10')) * 1000 });

const app = new Koa({ proxy: true });
app.use(smartGuard({
  base,
  prefix: new URL(base).pathname,
  verify: createGuardVerifier(verification),
  upstream: provenance ? provenanceUpstream(upstream) : upstream,
  ...(provenance && { provenance: (token, kind) => provenanceTemplate(token, kind, new Date()) }),
  upstreamBase,
  includes: oneOf('GUARD_INCLUDES', 'strip', ['strip', 'refuse'] as const),
  narratives: oneOf('GUARD_NARRATIVES', 'refuse', ['refuse', 'sanitize'] as const),
  allowOperations: (process.env.GUARD_OPERATIONS ?? '').split(',').map((s) => s.trim()).filter(Boolean),
  smartConfiguration: async () => (await fetch(`${issuer}/.well-known/smart-configuration`)).json(),
}));

const port = Number(setting('PORT', '8080'));
const server = app.listen(port, setting('HOST', '0.0.0.0'), () => {
  console.log(`smart-auth guard listening on ${port}: ${base} -> ${upstreamBase} (issuer ${issuer}, ${mode} verification)`);
});
process.once('SIGTERM', () => server.close(() => process.exit(0)));
