// Koa composition: headers, errors, the server's own pages and routes, then node-oidc-provider.
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import Koa, { type Context, type Next } from 'koa';
import Router from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import { deidentificationKeyOf, pagingKeyOf, type Config } from './config.ts';
import { migrate, openDatabase, type Db } from './db.ts';
import { createProviderHost, type ProviderHost } from './oidc/provider-host.ts';
import { bearerIntrospection } from './oidc/bearer-introspection.ts';
import { INTROSPECTION_PATH, ownTokenVerifier, REVOCATION_PATH } from './oidc/introspection.ts';
import { TOKEN_PATH } from './oidc/token/response.ts';
import { userinfoRoutes } from './oidc/userinfo.ts';
import { isAccessTokenRevoked, purgeExpiredRevocations, revocationCheck } from './oidc/revocation.ts';
import { purgeExpiredPayloads } from './oidc/adapter.ts';
import { purgeExpiredEhrLaunches, purgeExpiredGrantContexts } from './oidc/launch-store.ts';
import { createLoginThrottle, type LoginThrottle } from './limits/login-throttle.ts';
import { createRateLimiter, rateLimit } from './limits/rate-limit.ts';
import { createMetrics, type Metrics } from './ops/metrics.ts';
import { createLogger, type Logger } from './ops/log.ts';
import { interactionRoutes } from './interactions/routes.ts';
import { launcherRoutes } from './launcher.ts';
import { sandboxLauncherRoutes } from './sandbox-launcher.ts';
import { purgeExpiredSandboxLaunches } from './sandbox.ts';
import { developerPortalRoutes, registrationFormRefused } from './portal/developer.ts';
import { accountRoutes } from './portal/account.ts';
import { securityRoutes } from './portal/security.ts';
import { upstreamPatientDirectory } from './fhir/patient-directory.ts';
import { configuredUpstream } from './fhir/upstream-of.ts';
import { seedDemoResources } from './fhir/store-db.ts';
import { provenanceTemplate } from './fhir/provenance.ts';
import { createGuardVerifier } from './resource-server/verify-token.ts';
import { boundKey, createDpopCheck } from './resource-server/dpop.ts';
import { createAuditStore, type SignedHead } from './audit/audit-store.ts';
import { headLogFields } from './audit/signed-head.ts';
import { guardMiddleware, type SmartGuardOptions } from './resource-server/koa.ts';
import { createGuard } from './resource-server/guard.ts';
import { requestIdOf } from './resource-server/request-id.ts';
import { refusalsRecorded } from './oidc/refusals.ts';
import { closingHandler } from './net/closing-handler.ts';
import { proxyTrust } from './net/proxy-trust.ts';
import { failureOf } from './net/failures.ts';
import { routedPath } from './net/routed-path.ts';
import { HSTS, PAGE_CSP, SECURITY_HEADERS } from './net/security-headers.ts';
import { userPatients } from './fhir/user-patients.ts';
import { balpAudit, ruleOptions } from './resource-server/rules.ts';
import { allowOrigins } from './resource-server/cors.ts';
import { sharedDatabase } from './resource-server/database.ts';
import { startAuditForwarder } from './audit/forwarder.ts';
import type { AuditEvent, AuditStore } from './audit/types.ts';
import { auditBacklog } from './audit/backlog.ts';
import { accessAuditEvents } from './audit/balp.ts';
import { auditEventUpstream } from './audit/fhir-upstream.ts';
import { disclosureRoutes, REPORT_CLIENT } from './portal/disclosures.ts';
import { checkpointSigner, keyPolicy } from './oidc/keys.ts';
import { createTokenVerifier, InvalidTokenError } from './resource-server/verify-token.ts';
import { SCOPES_SUPPORTED, smartConfiguration } from './smart/discovery.ts';
import { primaryBrandIdentifier } from './smart/brands.ts';
import { loadBrandBundle, sendBrands } from './brands.ts';
import { renderPage } from './views.ts';
import { policyVocabulary } from './hcs/policy.ts';
import { purposeCoding } from './hcs/codes.ts';
import { seedDemoData } from '../db/seed.ts';

/** The files under /static the pages load (allowed by the pages' CSP as 'self'). */
const STATIC_FILES = new Map<string, { type: string; body: Buffer }>(([['style.css', 'text/css'], ['passkey.js', 'text/javascript'], ['logout.js', 'text/javascript']] as const)
  .map(([name, type]) => [name, { type, body: readFileSync(new URL(`./static/${name}`, import.meta.url)) }]));
const SMART_STYLE = {
  color_background: '#f4f6f9', color_error: '#a4161a', color_highlight: '#0a5ea8', color_modal_backdrop: '',
  color_success: '#2b7a0b', color_text: '#1d2733', dim_border_radius: '8px', dim_font_size: '16px',
  dim_spacing_size: '16px', font_family_body: 'system-ui, sans-serif', font_family_heading: 'system-ui, sans-serif',
};

function securityHeaders(ctx: Context, next: Next) {
  ctx.set('Content-Security-Policy', PAGE_CSP);
  ctx.set(SECURITY_HEADERS);
  if (ctx.secure) ctx.set('Strict-Transport-Security', HSTS);
  return next();
}

/**
 * Under an https ISSUER browsers reach the server over https only, whatever the connection to this process
 * (behind a TLS proxy not trusted with TRUST_PROXY it looks like plain http): every request counts as https,
 * so cookies, this server's and oidc-provider's, are Secure and HSTS is sent.
 */
function httpsIssuer(issuer: string) {
  const https = new URL(issuer).protocol === 'https:';
  return (ctx: Context, next: Next) => {
    if (https) Object.defineProperty(ctx.request, 'protocol', { get: () => 'https', configurable: true });
    return next();
  };
}

/** oidc-provider's own body limit: it answers a larger body with 400, where clients should get 413. */
const PROVIDER_BODY_LIMIT = 56 * 1024;

/** For the requests oidc-provider answers (the middleware sits right in front of it): 413 by Content-Length. */
function providerBodyLimit(ctx: Context, next: Next) {
  if ((ctx.request.length ?? 0) <= PROVIDER_BODY_LIMIT) return next();
  ctx.status = 413;
  ctx.set('Cache-Control', 'no-store');
  ctx.body = { error: 'invalid_request', error_description: `the request body is larger than ${PROVIDER_BODY_LIMIT / 1024} KiB` };
}

/** Every request has an id: the client's X-Request-Id when it is sane, else a new one; returned and recorded. */
function requestId(ctx: Context, next: Next) {
  const id = requestIdOf(ctx.get('x-request-id'));
  ctx.state.requestId = id;
  ctx.request.headers['x-request-id'] = id;
  ctx.set('X-Request-Id', id);
  return next();
}

/**
 * The routers, in order, for every request but those at `paths`, which none of them serves (oidc-provider's
 * token endpoints): a router matches each request it sees against all its routes, and these requests are
 * the hot paths.
 */
function routersExceptAt(paths: string[], routers: Router[]) {
  const skipped = new Set(paths.map(routedPath));
  const chain = routers.map((router) => router.routes());
  return (ctx: Parameters<(typeof chain)[number]>[0], next: Next) => {
    if (skipped.has(routedPath(ctx.path))) return next();
    const from = (i: number): Promise<unknown> => (i < chain.length ? chain[i](ctx, () => from(i + 1)) : next());
    return from(0);
  };
}

/** Turns every unexpected failure into a page or JSON without internals; expired interactions get a page. */
const errorBoundary = (logger: Logger) => async function errorBoundary(ctx: Context, next: Next) {
  try {
    await next();
  } catch (err) {
    const { status, error, description } = failureOf(ctx, err, logger.log);
    ctx.status = status;
    if (ctx.accepts('html', 'json') === 'html') {
      ctx.type = 'html';
      ctx.body = await renderPage('error', { title: 'Something went wrong', description });
    } else {
      ctx.body = { error, error_description: description };
    }
  }
};

function loginThrottleOf(config: Config, db: Db): LoginThrottle {
  return createLoginThrottle(db, {
    maxFailures: config.loginMaxFailures,
    windowSeconds: config.loginFailureWindow,
    lockSeconds: config.loginLockSeconds,
    maxAddressFailures: config.loginMaxAddressFailures,
  });
}

/** Removes the rows whose time is over (startServer runs it every 10 minutes). */
export async function purgeExpiredRows(config: Config, db: Db): Promise<void> {
  await Promise.all([
    purgeExpiredPayloads(db), purgeExpiredRevocations(db), loginThrottleOf(config, db).purge(),
    purgeExpiredEhrLaunches(db), purgeExpiredSandboxLaunches(db), purgeExpiredGrantContexts(db),
  ]);
}

export interface AppContext {
  logger: Logger;
  config: Config;
  db: Db;
  host: ProviderHost;
  audit: AuditStore;
  /** Called with every signed chain head (besides its log line): where else to keep it. */
  auditHeads: Set<(head: SignedHead) => void>;
  metrics: Metrics;
  app: Koa;
}

export async function createApp(config: Config, db: Db): Promise<AppContext> {
  const logger = createLogger(config.logLevel);
  const metrics = createMetrics(db);
  // Every signed chain head is also written outside the database: a log line, and wherever auditHeads send it.
  const auditHeads = new Set<(head: SignedHead) => void>();
  const audit = createAuditStore(db, {
    ...checkpointSigner(db, keyPolicy(config)),
    log: (message, err) => logger.log('error', message, { err }),
    onCheckpoint: (head) => {
      logger.log('info', 'audit checkpoint', headLogFields(head));
      for (const send of auditHeads) send(head);
    },
  });
  // One entrance to the audit chain for the whole server, the token endpoints included.
  const auditSink = { append: (event: AuditEvent) => audit.append([event]) };
  // One revocation cache for introspection and /fhir.
  const isRevoked = revocationCheck(db, config.revocationCacheMs);
  // Records committed after their answer, within one bound: introspections, and refused requests at /token, /introspect and /revoke.
  const afterAnswer = auditBacklog(auditSink, config.introspectionAuditBacklog, (message, err) => logger.log('error', message, { err }));
  const host = await createProviderHost(config, db, {
    onTokenIssued: (grantType) => metrics.tokens.inc({ grant_type: grantType }), log: logger.log, audit: auditSink, isRevoked, introspections: afterAnswer,
  });
  const verifySignature = createTokenVerifier({ issuer: config.issuer, audience: config.fhirBase, keys: host.verificationKeys });
  // Tokens of this server for its own pages and APIs (launch API), revocation included.
  const verifyAccessToken = async (token: string) => {
    const claims = await verifySignature(token);
    if (boundKey(claims)) throw new InvalidTokenError('a DPoP-bound access token is accepted only with a DPoP proof, at /fhir');
    if (await isAccessTokenRevoked(db, claims)) throw new InvalidTokenError('the access token has been revoked');
    return claims;
  };
  // What the proxy and the package take from the database too; revocation with introspection's cache.
  const shared = sharedDatabase(db, { revoked: isRevoked, clientCacheMs: config.clientCacheMs });
  const fhirServer = configuredUpstream(config, db);
  const upstream = auditEventUpstream(audit, fhirServer.upstreamBase, fhirServer.upstream);
  const { upstreamBase } = fhirServer;
  const patients = upstreamPatientDirectory(upstream);
  // The same rules and audit as the module and the proxy (consents are read from the FHIR server itself).
  const guardRules = ruleOptions(fhirServer.upstream, {
    defaultConfidentiality: config.defaultConfidentiality,
    deidentifyPurposes: config.deidentifyPurposes,
    deidentificationKey: deidentificationKeyOf(config.keyEncryptionSecret),
    deidentifyDates: config.deidentifyDates,
    breakGlassHint: config.breakGlassHint,
    withoutConsent: config.withoutConsent,
    purposePolicy: config.policy,
  });
  const appendAccess = balpAudit(config.fhirBase, (events) => audit.append(events));

  const app = new Koa({ keys: config.cookieSecrets, ...proxyTrust(config.trustProxy) });
  // Per-user lockout in the database (every instance sees it); per-address limits too.
  const loginThrottle = loginThrottleOf(config, db);
  const router = new Router();

  const endpoints = {
    issuer: config.issuer,
    authorization: `${config.issuer}/authorize`,
    token: `${config.issuer}/token`,
    jwks: `${config.issuer}/jwks`,
    introspection: `${config.issuer}/introspect`,
    revocation: `${config.issuer}/revoke`,
    registration: `${config.issuer}/register`,
    management: `${config.issuer}/account/apps`,
  };
  const vocabulary = policyVocabulary(config.policy);
  const brands = loadBrandBundle(config);
  const discovery = smartConfiguration(endpoints, SCOPES_SUPPORTED, {
    purposes_of_use_supported: vocabulary.purposes.map(purposeCoding),
    subject_roles_supported: vocabulary.roles,
  }, { user_access_brand_bundle: `${config.issuer}/brands`, user_access_brand_identifier: primaryBrandIdentifier(brands, config.fhirBase) });
  const sendDiscovery = (ctx: Context) => {
    ctx.set('Access-Control-Allow-Origin', '*');
    ctx.type = 'application/json';
    ctx.body = discovery;
  };
  router.get('/.well-known/smart-configuration', sendDiscovery);
  router.get('/brands', sendBrands(brands));

  // SMART requires POST at the authorization endpoint; oidc-provider v9 takes GET only (POST would
  // need SameSite=None session cookies). A 303 turns the form into the same GET request.
  router.post('/authorize', bodyParser({ enableTypes: ['form'], formLimit: '1mb' }), (ctx) => {
    const params = new URLSearchParams(ctx.request.body as Record<string, string>);
    ctx.status = 303;
    ctx.redirect(`/authorize?${params}`);
  });

  router.get('/metrics', async (ctx) => {
    ctx.set('Cache-Control', 'no-store');
    ctx.type = metrics.registry.contentType;
    ctx.body = await metrics.registry.metrics();
  });
  // Liveness: the process answers. Readiness: the database answers and the signing keys are loaded.
  router.get('/health/live', (ctx) => {
    ctx.set('Cache-Control', 'no-store');
    ctx.body = { status: 'ok' };
  });
  router.get('/health/ready', async (ctx) => {
    ctx.set('Cache-Control', 'no-store');
    const checks = {
      database: await db.raw('select 1').then(() => true, () => false),
      keys: host.publishedKeys > 0,
    };
    const ready = checks.database && checks.keys;
    ctx.status = ready ? 200 : 503;
    ctx.body = { status: ready ? 'ready' : 'not ready', checks };
  });
  router.get('/smart-style/v1.json', (ctx) => {
    ctx.set('Access-Control-Allow-Origin', '*');
    ctx.set('Cache-Control', 'public, max-age=86400');
    ctx.body = SMART_STYLE;
  });
  router.get('/static/:name', (ctx) => {
    const file = STATIC_FILES.get(ctx.params.name);
    if (!file) return;
    ctx.type = file.type;
    ctx.set('Cache-Control', 'public, max-age=3600');
    ctx.body = file.body;
  });
  router.get('/', async (ctx) => {
    ctx.type = 'html';
    ctx.body = await renderPage('home', { title: 'smart-auth', demo: config.demo, issuer: config.issuer, fhirBase: config.fhirBase });
  });

  // Seen DPoP proofs are kept in the database, so a proof replayed at another instance (or endpoint) is refused too.
  const dpop = createDpopCheck({ replay: shared.dpopReplay });
  const guardOptions: SmartGuardOptions = {
    base: config.fhirBase,
    prefix: new URL(config.fhirBase).pathname,
    verify: createGuardVerifier({
      issuer: config.issuer,
      audience: config.fhirBase,
      mode: 'local',
      keys: host.verificationKeys,
      // In the same process as the authorization server: revocation is a database lookup, not introspection.
      isRevoked: shared.isRevoked,
      userPatients: shared.userPatients,
      auditor: shared.auditor,
    }),
    dpop,
    upstream,
    upstreamBase,
    pagingKey: pagingKeyOf(config.keyEncryptionSecret),
    includes: config.guardIncludes,
    // The bundled store keeps a Provenance of every change in the change's transaction (an HTTP upstream ignores it).
    provenance: config.fhirUpstreamUrl ? undefined : (token, kind) => provenanceTemplate(token, kind, new Date()),
    narratives: config.guardNarratives,
    allowOperations: config.guardOperations,
    pagingParams: config.guardPagingParams,
    smartConfiguration: async () => discovery,
    allowedOrigins: allowOrigins(config.corsOrigins, shared.origins),
    ...guardRules,
    onError: (err) => logger.log('error', 'unexpected failure at the FHIR guard', { err }),
    // The FHIR server's own text of an error it answered, which the client gets only in part (see upstream-outcome.ts).
    onUpstreamError: ({ requestId, ...report }) => logger.log('warn', report.status >= 400 ? 'the FHIR server answered an error' : 'the FHIR server warned', { request_id: requestId, ...report }),
    // Every access, allowed or refused, is in the trail before its answer goes out; if it cannot be, 503.
    audit: async (record) => {
      metrics.guardDecisions.inc({ interaction: record.interaction?.kind ?? 'none', outcome: record.status < 400 ? 'allowed' : record.status < 500 ? 'refused' : 'failed' });
      const end = metrics.auditWrites.startTimer();
      try {
        await appendAccess(record);
        end({ result: 'stored' });
      } catch (err) {
        end({ result: 'failed' });
        throw err;
      }
    },
  };
  const fhirGuard = createGuard(guardOptions);
  const tokenSigner = checkpointSigner(db, keyPolicy(config));
  const patientsAt = userPatients({
    config, guard: fhirGuard, signAccessToken: (claims) => tokenSigner.sign(claims, 'at+jwt'), warn: (message, fields) => logger.log('warn', message, fields),
  });

  app.use(httpsIssuer(config.issuer));
  app.use(requestId);
  app.use(logger.requests);
  app.use(metrics.middleware);
  app.use(errorBoundary(logger));
  app.use(securityHeaders);
  // Request rate limits per client address, in memory: per instance (N instances allow N x the limit).
  // Apps call /token and /revoke (one budget); resource servers call /introspect far more often (its own).
  app.use(rateLimit({ paths: [TOKEN_PATH, REVOCATION_PATH], limiter: createRateLimiter({ limit: config.rateLimitTokenPerMinute, windowSeconds: 60 }) }));
  app.use(rateLimit({ paths: [INTROSPECTION_PATH], limiter: createRateLimiter({ limit: config.rateLimitIntrospectPerMinute, windowSeconds: 60 }) }));
  // Behind the rate limits: a request they refuse (429) is not recorded, every other refusal at these endpoints is.
  app.use(refusalsRecorded({ db, issuer: config.issuer, backlog: afterAnswer, log: logger.log }));
  // One registration budget per address, whichever way it registers: the API answers in JSON, the forms
  // (the developer portal's, the demo launcher's) with a page.
  const registrations = createRateLimiter({ limit: config.rateLimitRegisterPerMinute, windowSeconds: 60 });
  app.use(rateLimit({ paths: ['/register'], limiter: registrations }));
  app.use(rateLimit({ paths: ['/apps', '/launcher/register'], limiter: registrations, refuse: registrationFormRefused(config.demo) }));
  // POST /introspect with a bearer token; with client credentials it goes on to oidc-provider.
  app.use(bearerIntrospection({ config, db, host, isRevoked, introspections: afterAnswer }).routes());
  app.use(routersExceptAt([TOKEN_PATH, INTROSPECTION_PATH, REVOCATION_PATH], [
    router,
    interactionRoutes({ config, db, host, patients, patientsAt, loginThrottle }),
    launcherRoutes({ config, db, host, patients, guard: fhirGuard, verifyAccessToken, audit: auditSink }),
    ...(config.demo ? [sandboxLauncherRoutes({ config, db, host, patients, verifyAccessToken })] : []),
    developerPortalRoutes({ config, db, host }),
    accountRoutes({ config, db, host, patients, loginThrottle }),
    securityRoutes({ config, db, loginThrottle }),
    disclosureRoutes({
      config, db, audit, patients,
      // Reading one's own accounting of disclosures is itself an access to the trail.
      onRead: (userId, patientId, format, request) => audit.append(accessAuditEvents({
        recorded: new Date(), requestId: request.requestId ?? randomUUID(), status: 200, method: 'GET', url: `AuditEvent?patient=${patientId}&_format=${format}`,
        interaction: 'search-type', type: 'AuditEvent', resources: [], patients: [patientId], server: { base: config.fhirBase },
        client: { id: REPORT_CLIENT, issuer: config.issuer, address: request.address }, user: { issuer: config.issuer, sub: userId, roles: [] },
        purposeOfUse: [purposeCoding('PATRQT')],
      })),
    }),
    userinfoRoutes({
      db, issuer: config.issuer, fhirBase: config.fhirBase, isRevoked, dpop, origins: shared.origins,
      verifyOwn: ownTokenVerifier({ issuer: config.issuer, keys: host.verificationKeys }), provider: () => host.provider,
    }),
  ]));
  app.use(guardMiddleware(fhirGuard, guardOptions));
  app.use(providerBodyLimit);
  app.use(host.middleware);
  return { logger, config, db, host, audit, auditHeads, metrics, app };
}

export interface RunningServer extends AppContext {
  url: string;
  server: Server;
  close(): Promise<void>;
}

/** Opens the database, migrates, seeds the demo data in demo mode, and listens. */
export async function startServer(config: Config): Promise<RunningServer> {
  const db = openDatabase(config.databaseUrl, config.databasePool);
  await migrate(db);
  if (config.demo) await seedDemoData(db);
  if (!config.fhirUpstreamUrl) await seedDemoResources(db);
  const context = await createApp(config, db);
  const forwarder = config.auditForwardUrl
    ? startAuditForwarder(db, { url: config.auditForwardUrl, log: (message) => context.logger.log('warn', `audit forwarding: ${message}`) })
    : undefined;
  if (forwarder) context.auditHeads.add((head) => forwarder.head(head));
  const purge = setInterval(() => {
    purgeExpiredRows(config, db).catch((err) => context.logger.log('error', 'purging expired rows failed', { err }));
  }, 10 * 60 * 1000);
  purge.unref();
  const { handler, closing } = closingHandler(context.app.callback());
  const server = config.tls
    ? createHttpsServer({ cert: readFileSync(config.tls.certFile), key: readFileSync(config.tls.keyFile), minVersion: 'TLSv1.2' }, handler)
    : createHttpServer(handler);
  server.listen(config.port, config.host);
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  const { port } = server.address() as AddressInfo;
  return {
    ...context,
    server,
    url: `${config.tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    async close() {
      clearInterval(purge);
      closing();
      context.host.close();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      await closed;
      await context.audit.close();
      await forwarder?.stop();
      await db.destroy();
    },
  };
}
