// Every setting of smart-auth, typed, read once from the environment and validated at start.
// README lists them; keep the two in step.
import { createHash, hkdfSync } from 'node:crypto';
import { existsSync } from 'node:fs';
import type { LogLevel } from './ops/log.ts';
import { loadPolicy, PolicyError, type HcsPolicy } from './hcs/policy.ts';
import { CONFIDENTIALITY_SCALE, isPurposeOfUse, type ConfidentialityCode } from './hcs/codes.ts';
import { MAX_ACCESS_TOKEN_TTL } from './oidc/token-lifetimes.ts';
import { operationsProblem } from './resource-server/operations.ts';
import { pagingParamsProblem } from './resource-server/page-links.ts';

/** PostgreSQL connection pool settings (SQLite always uses one connection). */
export interface PoolSettings {
  /** Connections at most, per instance. */
  max: number;
  /** How long a query waits for a free connection before it fails. */
  acquireTimeoutMs: number;
  /** PostgreSQL statement_timeout of every connection; 0: none. */
  statementTimeoutMs: number;
}

export const DEFAULT_POOL: PoolSettings = { max: 10, acquireTimeoutMs: 10_000, statementTimeoutMs: 30_000 };

/**
 * The longest any server may keep a client's metadata (CLIENT_CACHE_MS): what a change made elsewhere (the CLI)
 * must allow for, whatever the setting of the process making it.
 */
export const MAX_CLIENT_CACHE_MS = 60_000;

export interface Config {
  production: boolean;
  /** Demo mode: demo accounts, the demo EHR launcher, open registration. Never in production. */
  demo: boolean;
  port: number;
  host: string;
  issuer: string;
  fhirBase: string;
  /** Every FHIR base tokens may be issued for (`aud`): the bundled one and any guarded elsewhere. */
  fhirAudiences: string[];
  databaseUrl: string;
  fhirUpstreamUrl: string | undefined;
  cookieSecrets: string[];
  keyEncryptionSecret: string;
  accessTokenAlg: 'ES256' | 'RS256' | 'ES384';
  keyRotationDelay: number;
  keyRefreshInterval: number;
  /** `open`: anyone may register a client at /register; `token`: an initial access token is required. */
  registration: 'open' | 'token';
  accessTokenTtl: number;
  backendTokenTtl: number;
  refreshTokenTtl: number;
  launchTtl: number;
  tenant: string | undefined;
  btgTokenTtl: number;
  /** Days audit records are kept: `audit purge` without --before removes older ones (unset: purge needs --before). */
  auditRetentionDays: number | undefined;
  /** Failed logins of one user within loginFailureWindow seconds that lock the user for loginLockSeconds (shared by every instance). */
  loginMaxFailures: number;
  loginFailureWindow: number;
  loginLockSeconds: number;
  /** Failed logins from one address within the window after which its logins get 429 for loginLockSeconds. */
  loginMaxAddressFailures: number;
  /** Requests per minute per client address at POST /token and POST /revoke together, per instance; beyond: 429. */
  rateLimitTokenPerMinute: number;
  /** The same at POST /introspect, a budget of its own: resource servers call it far more often than apps call /token. */
  rateLimitIntrospectPerMinute: number;
  /** The same at registration (POST /register, /apps, /launcher/register together). */
  rateLimitRegisterPerMinute: number;
  /** Structured JSON logs on stdout from this level up. */
  logLevel: LogLevel;
  /** Trust X-Forwarded-* headers (set when a reverse proxy terminates TLS in front of the server). */
  trustProxy: boolean;
  /** Serve HTTPS directly with this certificate and key (PEM files); TLS 1.2 at least. */
  tls: { certFile: string; keyFile: string } | undefined;
  /** The confidentiality of resources without a label. */
  defaultConfidentiality: ConfidentialityCode;
  /** Purposes of use whose answers the guard de-identifies (with what is-a them). */
  deidentifyPurposes: string[];
  deidentifyDates: 'truncate-year' | 'truncate-month' | 'shift';
  /** Tell a token that hit hidden data that break-the-glass exists (leaks that the data exists). */
  breakGlassHint: boolean;
  /** Break-the-glass only for users with a second factor (who must use it at consent); a user with one is always asked. */
  btgRequireMfa: boolean;
  /** The organization's policy where no patient consent applies. */
  withoutConsent: 'permit' | 'deny';
  /** An external FHIR audit repository every AuditEvent is forwarded to (unset: none). */
  auditForwardUrl: string | undefined;
  /** How long the bundled guard trusts a "not revoked" answer when the revocation came from another instance. */
  revocationCacheMs: number;
  /** How long client metadata read from the database is reused (changes made elsewhere show within it). */
  clientCacheMs: number;
  /** Introspection records that may wait for their commit after the answer; beyond that, 503. */
  introspectionAuditBacklog: number;
  /** PostgreSQL connection pool of this instance. */
  databasePool: PoolSettings;
  /** Seconds the guard waits for the upstream FHIR server. */
  upstreamTimeout: number;
  /** `_include`/`_revinclude` targets a token may not see: strip them, or refuse the search. */
  guardIncludes: 'strip' | 'refuse';
  /** Writes whose narrative holds active content: refuse them, or sanitise the narrative. */
  guardNarratives: 'refuse' | 'sanitize';
  /** FHIR operations (names without $) the guard lets through; every other one is refused. */
  guardOperations: string[];
  /** The upstream FHIR server's paging parameters, refused from clients besides those of common servers. */
  guardPagingParams: string[];
  /** A SMART 2.2 User Access Brands Bundle (JSON) published at /brands; unset: one brand made from ISSUER. */
  brandsFile: string | undefined;
  /** Browser origins allowed CORS at the FHIR base besides those of registered redirect URIs. */
  corsOrigins: string[];
  /** The HCS policy (role x purpose of use, break-the-glass), from POLICY_FILE or the bundled default. */
  policy: HcsPolicy;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** The development secrets; production refuses to start with them. */
export const DEV_COOKIE_SECRET = 'smart-auth-development-cookie-secret-change-me';
export const DEV_KEY_ENCRYPTION_SECRET = 'smart-auth-development-key-encryption-secret';

type Env = Record<string, string | undefined>;

export function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d+$/.test(raw)) throw new ConfigError(`${name} must be a whole number, got "${raw}"`);
  const value = Number(raw);
  if (value < min || value > max) throw new ConfigError(`${name} must be between ${min} and ${max}, got ${value}`);
  return value;
}

export function choice<T extends string>(env: Env, name: string, fallback: T, allowed: readonly T[]): T {
  const raw = env[name] || fallback;
  if (!allowed.includes(raw as T)) throw new ConfigError(`${name} must be one of ${allowed.join(', ')}, got "${raw}"`);
  return raw as T;
}

function tlsFiles(env: Env): Config['tls'] {
  const certFile = env.TLS_CERT_FILE;
  const keyFile = env.TLS_KEY_FILE;
  if (!certFile && !keyFile) return undefined;
  if (!certFile || !keyFile) throw new ConfigError('TLS_CERT_FILE and TLS_KEY_FILE go together: set both, or neither');
  for (const [name, file] of [['TLS_CERT_FILE', certFile], ['TLS_KEY_FILE', keyFile]]) {
    if (!existsSync(file)) throw new ConfigError(`${name}: ${file} does not exist`);
  }
  return { certFile, keyFile };
}

export function purposes(env: Env, name: string, fallback: string): string[] {
  const list = (env[name] ?? fallback).split(',').map((s) => s.trim()).filter(Boolean);
  const unknown = list.filter((code) => !isPurposeOfUse(code));
  if (unknown.length) throw new ConfigError(`${name} takes v3-ActReason purpose-of-use codes, got ${unknown.join(', ')}`);
  return list;
}

export function boolean(env: Env, name: string, fallback: boolean): boolean {
  const raw = env[name]?.toLowerCase();
  if (raw === undefined || raw === '') return fallback;
  if (['1', 'true', 'yes', 'on'].includes(raw)) return true;
  if (['0', 'false', 'no', 'off'].includes(raw)) return false;
  throw new ConfigError(`${name} must be true or false, got "${env[name]}"`);
}

export function url(name: string, raw: string): URL {
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new ConfigError(`${name} must be an absolute URL, got "${raw}"`);
  }
  if (!['http:', 'https:'].includes(parsed.protocol)) throw new ConfigError(`${name} must be an http(s) URL, got "${raw}"`);
  if (parsed.search || parsed.hash) throw new ConfigError(`${name} must not have a query or fragment, got "${raw}"`);
  return parsed;
}

/** An http(s) origin ("https://app.example.org"): no path, no user. */
export function origin(name: string, raw: string): string {
  const parsed = url(name, raw);
  if (parsed.pathname !== '/' || parsed.username || parsed.password) throw new ConfigError(`${name} must be an origin (scheme://host[:port]) without a path, got "${raw}"`);
  return parsed.origin;
}

/** A comma-separated list of http(s) origins. */
export function origins(env: Env, name: string): string[] {
  return (env[name] ?? '').split(',').map((s) => s.trim()).filter(Boolean).map((value) => origin(name, value));
}

/** A comma-separated list of search parameter names (letters, digits, `_`, `-`, `.`), never the guard's own `_page`. */
const commaList = (env: Env, name: string) => (env[name] ?? '').split(',').map((s) => s.trim()).filter(Boolean);

/** The FHIR server's paging parameters the guard refuses from clients. */
export function parameterNames(env: Env, name: string): string[] {
  const list = commaList(env, name);
  const problem = pagingParamsProblem(list);
  if (problem) throw new ConfigError(`${name} ${problem}`);
  return list;
}

/** The operations the guard lets through, without their `$`; one it does not know stops the start. */
export function operationNames(env: Env, name: string): string[] {
  const list = commaList(env, name).map((s) => s.replace(/^\$/, ''));
  const problem = operationsProblem(list);
  if (problem) throw new ConfigError(`${name} ${problem}`);
  return list;
}

/** The de-identification key of the guard, derived from KEY_ENCRYPTION_SECRET: a proxy with the same secret gives the same pseudonyms. */
export const deidentificationKeyOf = (secret: string) => createHash('sha256').update(`de-identification:${secret}`).digest('base64url');

/** The key that seals the guard's paging links, derived from KEY_ENCRYPTION_SECRET: instances with the same secret follow each other's links. */
export const pagingKeyOf = (secret: string) => Buffer.from(hkdfSync('sha256', secret, '', 'smart-auth paging links', 32)).toString('base64url');

export const withoutTrailingSlash = (value: string) => value.replace(/\/+$/, '');

function isLoopback(hostname: string): boolean {
  return hostname === 'localhost' || hostname === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(hostname);
}

export function loadConfig(env: Env = process.env): Config {
  const production = env.NODE_ENV === 'production';
  const demo = boolean(env, 'DEMO', !production);
  const port = integer(env, 'PORT', 3000, 0, 65535);
  const host = env.HOST || '0.0.0.0';

  // An origin: the endpoints and pages are served, and link to each other, at the root of the server.
  const issuer = origin('ISSUER', env.ISSUER || `http://localhost:${port}`);
  const issuerUrl = new URL(issuer);
  const fhirBase = withoutTrailingSlash(url('FHIR_BASE_URL', env.FHIR_BASE_URL || `${issuer}/fhir`).href);

  const otherAudiences = (env.ADDITIONAL_FHIR_BASES ?? '').split(',').map((s) => s.trim()).filter(Boolean)
    .map((value) => withoutTrailingSlash(url('ADDITIONAL_FHIR_BASES', value).href));
  const databaseUrl = checkedDatabaseUrl(env.DATABASE_URL || 'sqlite:./var/smart-auth.sqlite');
  const fhirUpstreamUrl = env.FHIR_UPSTREAM_URL ? withoutTrailingSlash(url('FHIR_UPSTREAM_URL', env.FHIR_UPSTREAM_URL).href) : undefined;

  const cookieSecrets = (env.COOKIE_SECRETS || DEV_COOKIE_SECRET).split(',').map((s) => s.trim()).filter(Boolean);
  if (cookieSecrets.some((s) => s.length < 32)) throw new ConfigError('COOKIE_SECRETS: each secret must be at least 32 characters');


  const keyEncryptionSecret = keyEncryptionSecretOf(env) ?? DEV_KEY_ENCRYPTION_SECRET;
  const accessTokenAlg = (env.ACCESS_TOKEN_ALG || 'ES256') as Config['accessTokenAlg'];
  if (!['ES256', 'RS256', 'ES384'].includes(accessTokenAlg)) throw new ConfigError(`ACCESS_TOKEN_ALG must be ES256, RS256 or ES384, got "${accessTokenAlg}"`);
  const registration = (env.REGISTRATION || (production ? 'token' : 'open')) as Config['registration'];
  if (!['open', 'token'].includes(registration)) throw new ConfigError(`REGISTRATION must be open or token, got "${registration}"`);

  const config: Config = {
    production,
    demo,
    port,
    host,
    issuer,
    fhirBase,
    fhirAudiences: [...new Set([fhirBase, ...otherAudiences])],
    databaseUrl,
    fhirUpstreamUrl,
    cookieSecrets,
    keyEncryptionSecret,
    accessTokenAlg,
    keyRotationDelay: integer(env, 'KEY_ROTATION_DELAY', 3600, 0, 30 * 86400),
    keyRefreshInterval: integer(env, 'KEY_REFRESH_INTERVAL', 30, 1, 3600),
    registration,
    accessTokenTtl: integer(env, 'ACCESS_TOKEN_TTL', 3600, 60, MAX_ACCESS_TOKEN_TTL),
    // SMART Backend Services: tokens SHOULD NOT live longer than five minutes.
    backendTokenTtl: integer(env, 'BACKEND_TOKEN_TTL', 300, 30, 300),
    refreshTokenTtl: integer(env, 'REFRESH_TOKEN_TTL', 90 * 86400, 3600, 366 * 86400),
    launchTtl: integer(env, 'LAUNCH_TTL', 300, 10, 3600),
    tenant: env.TENANT || undefined,
    btgTokenTtl: integer(env, 'BTG_TOKEN_TTL', 900, 60, 3600),
    upstreamTimeout: integer(env, 'UPSTREAM_TIMEOUT', 10, 1, 300),
    revocationCacheMs: integer(env, 'REVOCATION_CACHE_MS', 1000, 0, 60_000),
    clientCacheMs: integer(env, 'CLIENT_CACHE_MS', 1000, 0, MAX_CLIENT_CACHE_MS),
    introspectionAuditBacklog: integer(env, 'INTROSPECTION_AUDIT_BACKLOG', 1000, 0, 100_000),
    databasePool: poolSettings(env),
    trustProxy: boolean(env, 'TRUST_PROXY', false),
    logLevel: choice(env, 'LOG_LEVEL', 'info', ['debug', 'info', 'warn', 'error', 'silent'] as const),
    loginMaxFailures: integer(env, 'LOGIN_MAX_FAILURES', 5, 1, 1000),
    loginFailureWindow: integer(env, 'LOGIN_FAILURE_WINDOW', 900, 1, 86400),
    loginLockSeconds: integer(env, 'LOGIN_LOCK_SECONDS', 900, 1, 86400),
    loginMaxAddressFailures: integer(env, 'LOGIN_MAX_ADDRESS_FAILURES', 20, 1, 1_000_000),
    rateLimitTokenPerMinute: integer(env, 'RATE_LIMIT_TOKEN_PER_MINUTE', 1200, 1, 1_000_000),
    rateLimitIntrospectPerMinute: integer(env, 'RATE_LIMIT_INTROSPECT_PER_MINUTE', 6000, 1, 1_000_000),
    rateLimitRegisterPerMinute: integer(env, 'RATE_LIMIT_REGISTER_PER_MINUTE', 60, 1, 1_000_000),
    tls: tlsFiles(env),
    defaultConfidentiality: choice(env, 'DEFAULT_CONFIDENTIALITY', 'N', CONFIDENTIALITY_SCALE),
    deidentifyPurposes: purposes(env, 'DEIDENTIFY_PURPOSES', 'HRESCH'),
    deidentifyDates: choice(env, 'DEIDENTIFY_DATES', 'truncate-year', ['truncate-year', 'truncate-month', 'shift'] as const),
    breakGlassHint: boolean(env, 'BREAK_GLASS_HINT', false),
    btgRequireMfa: boolean(env, 'BTG_REQUIRE_MFA', !demo),
    withoutConsent: choice(env, 'WITHOUT_CONSENT', 'permit', ['permit', 'deny'] as const),
    auditRetentionDays: env.AUDIT_RETENTION_DAYS ? integer(env, 'AUDIT_RETENTION_DAYS', 0, 1, 100 * 366) : undefined,
    auditForwardUrl: env.AUDIT_FORWARD_URL ? withoutTrailingSlash(url('AUDIT_FORWARD_URL', env.AUDIT_FORWARD_URL).href) : undefined,
    guardIncludes: choice(env, 'GUARD_INCLUDES', 'strip', ['strip', 'refuse'] as const),
    guardNarratives: choice(env, 'GUARD_NARRATIVES', 'refuse', ['refuse', 'sanitize'] as const),
    guardOperations: operationNames(env, 'GUARD_OPERATIONS'),
    guardPagingParams: parameterNames(env, 'GUARD_PAGING_PARAMS'),
    policy: policyFrom(env.POLICY_FILE),
    brandsFile: env.BRANDS_FILE || undefined,
    corsOrigins: origins(env, 'CORS_ORIGINS'),
  };

  if (production) assertProductionSafe(config, issuerUrl);
  return config;
}

function policyFrom(file: string | undefined): HcsPolicy {
  try {
    return loadPolicy(file || undefined);
  } catch (err) {
    if (err instanceof PolicyError) throw new ConfigError(err.message);
    throw err;
  }
}

function assertProductionSafe(config: Config, issuerUrl: URL): void {
  const problems: string[] = [];
  if (config.demo) problems.push('DEMO must be off (demo accounts and the demo launcher are for development only)');
  if (config.cookieSecrets.includes(DEV_COOKIE_SECRET)) problems.push('COOKIE_SECRETS must be set to your own secret(s)');
  refuseInProduction([...problems, ...sharedProductionProblems(issuerUrl, config.keyEncryptionSecret)]);
}

/** DATABASE_URL as the server and the guard proxy take it: SQLite or PostgreSQL (the password never in the message). */
export function checkedDatabaseUrl(databaseUrl: string): string {
  if (!/^(sqlite:|postgres(ql)?:\/\/)/.test(databaseUrl)) {
    throw new ConfigError(`DATABASE_URL must start with sqlite: or postgres://, got "${databaseUrl.replace(/\/\/[^@]*@/, '//***@')}"`);
  }
  return databaseUrl;
}

/** The connection pool of this instance (the server's or the guard proxy's). */
export function poolSettings(env: Env): PoolSettings {
  return {
    max: integer(env, 'DATABASE_POOL_MAX', DEFAULT_POOL.max, 1, 1000),
    acquireTimeoutMs: integer(env, 'DATABASE_ACQUIRE_TIMEOUT_MS', DEFAULT_POOL.acquireTimeoutMs, 100, 600_000),
    statementTimeoutMs: integer(env, 'DATABASE_STATEMENT_TIMEOUT_MS', DEFAULT_POOL.statementTimeoutMs, 0, 3_600_000),
  };
}

/** KEY_ENCRYPTION_SECRET, undefined when unset; one too short is refused (the server's and the guard proxy's alike). */
export function keyEncryptionSecretOf(env: Env): string | undefined {
  const secret = env.KEY_ENCRYPTION_SECRET || undefined;
  if (secret !== undefined && secret.length < 32) throw new ConfigError('KEY_ENCRYPTION_SECRET must be at least 32 characters');
  return secret;
}

/**
 * What production refuses in the settings the server and the guard proxy share: the development secret
 * (it keys the signing keys' encryption and the pseudonyms), and an issuer whose tokens and keys would
 * come over plain http.
 */
export function sharedProductionProblems(issuerUrl: URL, keyEncryptionSecret: string | undefined): string[] {
  const problems: string[] = [];
  if (keyEncryptionSecret === DEV_KEY_ENCRYPTION_SECRET) problems.push('KEY_ENCRYPTION_SECRET must be set: it encrypts the signing keys in the database and keys the pseudonyms');
  if (issuerUrl.protocol !== 'https:' && !isLoopback(issuerUrl.hostname)) problems.push('ISSUER must be an https URL');
  return problems;
}

export function refuseInProduction(problems: string[]): void {
  if (problems.length) throw new ConfigError(`refusing to start with NODE_ENV=production:\n  - ${problems.join('\n  - ')}`);
}
