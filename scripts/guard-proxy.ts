// A standalone SMART guard in front of any FHIR R4 server, with the same rules and audit as the bundled /fhir.
//   ISSUER=https://auth.example.org FHIR_BASE_URL=https://fhir.example.org/r4 \
//   FHIR_UPSTREAM_URL=http://internal-fhir:8080/fhir DATABASE_URL=postgres://... node --import tsx scripts/guard-proxy.ts
// Settings: PORT (8080), HOST (0.0.0.0), TRUST_PROXY (false), GUARD_VERIFICATION (local | introspection | local+introspection),
// INTROSPECTION_CLIENT_ID / INTROSPECTION_CLIENT_SECRET (a resource-server client of the issuer),
// GUARD_TOKEN_CACHE (true), GUARD_INTROSPECTION_CACHE (seconds an introspection answer is trusted, 30), GUARD_INCLUDES (strip | refuse), GUARD_NARRATIVES (refuse | sanitize),
// GUARD_OPERATIONS (comma-separated operation names allowed through if the guard knows them, default none), UPSTREAM_TIMEOUT (seconds, 10),
// GUARD_PAGING_PARAMS (comma-separated paging parameters of the upstream, refused from clients besides those of common servers),
// GUARD_PROVENANCE (false; true: every create and update goes upstream as a transaction with its Provenance).
// Audit (one is required): DATABASE_URL (the authorization server's database: its audit chain, and what the
// bundled /fhir learns from it, see sharedDatabase: the registered apps' origins, reread after CLIENT_CACHE_MS
// (1000); users' patients and who may read AuditEvents; revoked tokens and grants, "not revoked" trusted for
// REVOCATION_CACHE_MS (1000); the DPoP proofs seen, so that a replay is refused at every instance),
// AUDIT_FORWARD_URL (a FHIR audit record repository; without DATABASE_URL, the introspection answer tells
// users' patients and who may read AuditEvents, so GUARD_VERIFICATION=local is refused).
// Rules (README, "The guard proxy"): DEFAULT_CONFIDENTIALITY, DEIDENTIFY_PURPOSES, DEIDENTIFY_DATES, KEY_ENCRYPTION_SECRET,
// BREAK_GLASS_HINT, GUARD_CONSENT (true), CONSENT_CACHE_MS (60000), WITHOUT_CONSENT, POLICY_FILE, CORS_ORIGINS.
import { createServer } from 'node:http';
import Koa from 'koa';
import {
  allowOrigins, auditRepository, balpAudit, createDpopCheck, createGuardVerifier, httpUpstream, provenanceTemplate, provenanceUpstream,
  ruleOptions, smartGuard, type GuardVerification,
} from 'smart-auth/resource-server';
import type { SharedDatabase } from 'smart-auth/resource-server/database';
import type { AuditEvent } from '../server/audit/types.ts';
import {
  boolean, checkedDatabaseUrl, choice, ConfigError, deidentificationKeyOf, integer, keyEncryptionSecretOf, origin, operationNames, origins, pagingKeyOf, parameterNames, poolSettings,
  purposes, refuseInProduction, sharedProductionProblems, url, withoutTrailingSlash,
} from '../server/config.ts';
import { CONFIDENTIALITY_SCALE } from '../server/hcs/codes.ts';
import { loadPolicy } from '../server/hcs/policy.ts';
import { closingHandler } from '../server/net/closing-handler.ts';
import { proxyTrust } from '../server/net/proxy-trust.ts';

function fail(message: string): never {
  console.error(`guard-proxy: ${message}`);
  process.exit(1);
}

function setting(name: string, fallback?: string): string {
  const value = process.env[name] ?? fallback;
  if (value === undefined || value === '') fail(`${name} is required`);
  return value;
}

/** What the audit goes to, and what the authorization server's database tells the guard (as the bundled /fhir). */
interface Backing {
  append(events: AuditEvent[]): Promise<void>;
  /** Unset: no database; DPoP proofs seen by this process only; revocation, users' patients and auditors told by introspection only. */
  shared?: SharedDatabase;
  close(): Promise<void>;
}

/** The authorization server's database is loaded only when it is used: the drivers are not needed otherwise. */
async function backing(env: NodeJS.ProcessEnv): Promise<Backing> {
  if (env.DATABASE_URL) {
    const revocationCacheMs = integer(env, 'REVOCATION_CACHE_MS', 1000, 0, 60_000);
    const clientCacheMs = integer(env, 'CLIENT_CACHE_MS', 1000, 0, 60_000);
    const [databaseUrl, pool] = [checkedDatabaseUrl(env.DATABASE_URL), poolSettings(env)];
    const [{ databaseAudit, openDatabase, sharedDatabase }, { startAuditForwarder }, { migrated }] = await Promise.all([
      import('smart-auth/resource-server/database'), import('../server/audit/forwarder.ts'), import('../server/db.ts'),
    ]);
    const db = openDatabase(databaseUrl, pool);
    if (!(await migrated(db))) {
      await db.destroy();
      fail('DATABASE_URL is not smart-auth\'s database, or smart-auth has not yet been started on it (its start migrates it): every access would fail to be recorded');
    }
    const chain = databaseAudit(db);
    // The chain is the record, and the outbox of the repository as at the server: one instance of either forwards it.
    const forwarder = env.AUDIT_FORWARD_URL ? startAuditForwarder(db, { url: env.AUDIT_FORWARD_URL }) : undefined;
    return {
      append: chain.append,
      shared: sharedDatabase(db, { revocationCacheMs, clientCacheMs }),
      close: async () => {
        await forwarder?.stop();
        await db.destroy();
      },
    };
  }
  if (env.AUDIT_FORWARD_URL) return { append: auditRepository(env.AUDIT_FORWARD_URL), close: async () => {} };
  fail('every access is audited: set DATABASE_URL (the authorization server\'s database) or AUDIT_FORWARD_URL (a FHIR audit repository)');
}

async function main() {
  const env = process.env;
  // The authorization server's issuer is an origin (its settings refuse a path), so is this one.
  const issuer = origin('ISSUER', setting('ISSUER'));
  const issuerUrl = new URL(issuer);
  const base = withoutTrailingSlash(url('FHIR_BASE_URL', setting('FHIR_BASE_URL')).href);
  const upstreamBase = withoutTrailingSlash(url('FHIR_UPSTREAM_URL', setting('FHIR_UPSTREAM_URL')).href);
  const keyEncryptionSecret = keyEncryptionSecretOf(env);
  // The same refusals as the server's, for what the two share.
  if (env.NODE_ENV === 'production') refuseInProduction(sharedProductionProblems(issuerUrl, keyEncryptionSecret));
  const mode = choice(env, 'GUARD_VERIFICATION', 'local', ['local', 'introspection', 'local+introspection'] as const);
  const clientId = env.INTROSPECTION_CLIENT_ID;
  const clientSecret = env.INTROSPECTION_CLIENT_SECRET;
  if (mode !== 'local' && (!clientId || !clientSecret)) fail(`GUARD_VERIFICATION=${mode} needs INTROSPECTION_CLIENT_ID and INTROSPECTION_CLIENT_SECRET`);
  const store = await backing(env);
  if (mode === 'local' && !store.shared) {
    fail('GUARD_VERIFICATION=local cannot know revoked tokens without DATABASE_URL: use local+introspection or introspection, or set DATABASE_URL');
  }

  const verification: GuardVerification = {
    issuer,
    audience: base,
    mode,
    cache: boolean(env, 'GUARD_TOKEN_CACHE', true),
    introspectionCacheSeconds: integer(env, 'GUARD_INTROSPECTION_CACHE', 30, 0, 3600),
    ...(clientId && clientSecret && { introspection: { endpoint: `${issuer}/introspect`, credentials: { clientId, clientSecret } } }),
    userPatients: store.shared?.userPatients,
    auditor: store.shared?.auditor,
    isRevoked: store.shared?.isRevoked,
  };
  const upstream = httpUpstream({ baseUrl: upstreamBase, timeoutMs: integer(env, 'UPSTREAM_TIMEOUT', 10, 1, 300) * 1000 });
  const provenance = boolean(env, 'GUARD_PROVENANCE', false);

  const app = new Koa(proxyTrust(boolean(env, 'TRUST_PROXY', false)));
  app.use(smartGuard({
    base,
    issuer,
    prefix: new URL(base).pathname,
    verify: createGuardVerifier(verification),
    upstream: provenance ? provenanceUpstream(upstream) : upstream,
    ...(provenance && { provenance: (token, kind) => provenanceTemplate(token, kind, new Date()) }),
    dpop: createDpopCheck({ replay: store.shared?.dpopReplay }),
    upstreamBase,
    ...(keyEncryptionSecret && { pagingKey: pagingKeyOf(keyEncryptionSecret) }),
    includes: choice(env, 'GUARD_INCLUDES', 'strip', ['strip', 'refuse'] as const),
    narratives: choice(env, 'GUARD_NARRATIVES', 'refuse', ['refuse', 'sanitize'] as const),
    allowOperations: operationNames(env, 'GUARD_OPERATIONS'),
    pagingParams: parameterNames(env, 'GUARD_PAGING_PARAMS'),
    allowedOrigins: allowOrigins(origins(env, 'CORS_ORIGINS'), store.shared?.origins),
    ...ruleOptions(upstream, {
      defaultConfidentiality: choice(env, 'DEFAULT_CONFIDENTIALITY', 'N', CONFIDENTIALITY_SCALE),
      deidentifyPurposes: purposes(env, 'DEIDENTIFY_PURPOSES', 'HRESCH'),
      deidentifyDates: choice(env, 'DEIDENTIFY_DATES', 'truncate-year', ['truncate-year', 'truncate-month', 'shift'] as const),
      deidentificationKey: keyEncryptionSecret && deidentificationKeyOf(keyEncryptionSecret),
      breakGlassHint: boolean(env, 'BREAK_GLASS_HINT', false),
      consent: boolean(env, 'GUARD_CONSENT', true),
      consentCacheMs: integer(env, 'CONSENT_CACHE_MS', 60_000, 0, 3_600_000),
      withoutConsent: choice(env, 'WITHOUT_CONSENT', 'permit', ['permit', 'deny'] as const),
      purposePolicy: loadPolicy(env.POLICY_FILE || undefined),
    }),
    audit: balpAudit(base, store.append),
  }));

  const port = integer(env, 'PORT', 8080, 0, 65535);
  const { handler, closing } = closingHandler(app.callback());
  const server = createServer(handler).listen(port, setting('HOST', '0.0.0.0'), () => {
    console.log(`smart-auth guard listening on ${port}: ${base} -> ${upstreamBase} (issuer ${issuer}, ${mode} verification)`);
  });
  // The requests taken are answered (and their records committed) before the audit store closes.
  const stop = () => {
    closing();
    server.close(() => store.close().finally(() => process.exit(0)));
    server.closeIdleConnections();
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

main().catch((err) => fail(err instanceof ConfigError ? err.message : String(err?.message ?? err)));
