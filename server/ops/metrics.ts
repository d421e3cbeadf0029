// Prometheus metrics: what an operator watches. One registry per server (tests start several).
import type { Context, Next } from 'koa';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Db } from '../db.ts';

export interface Metrics {
  registry: Registry;
  requests: Counter<'route' | 'method' | 'status'>;
  tokens: Counter<'grant_type'>;
  guardDecisions: Counter<'interaction' | 'outcome'>;
  auditWrites: Histogram<'result'>;
  /** Koa middleware counting every request by route family, method and status. */
  middleware(ctx: Context, next: Next): Promise<void>;
}

/** Low-cardinality route labels: the endpoint, never ids or query strings. */
export function routeOf(path: string): string {
  if (path.startsWith('/fhir/') || path === '/fhir') return `/fhir/${path.split('/')[2] ?? ''}`.replace(/\/$/, '');
  if (path.startsWith('/interaction/')) return '/interaction';
  if (path.startsWith('/register/')) return '/register/:client_id';
  if (path.startsWith('/.well-known/')) return path;
  const known = ['/authorize', '/token', '/introspect', '/revoke', '/register', '/jwks', '/userinfo', '/launcher', '/apps', '/account', '/health', '/metrics', '/api/launch'];
  return known.find((prefix) => path === prefix || path.startsWith(`${prefix}/`)) ?? 'other';
}

export function createMetrics(db: Db): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const requests = new Counter({ name: 'smart_auth_http_requests_total', help: 'HTTP requests by route, method and status', labelNames: ['route', 'method', 'status'], registers: [registry] });
  const duration = new Histogram({ name: 'smart_auth_http_request_duration_seconds', help: 'HTTP request duration by route', labelNames: ['route'], buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5], registers: [registry] });
  const tokens = new Counter({ name: 'smart_auth_tokens_issued_total', help: 'Access tokens issued by grant type', labelNames: ['grant_type'], registers: [registry] });
  const guardDecisions = new Counter({ name: 'smart_auth_guard_decisions_total', help: 'Guarded FHIR requests by interaction and outcome (allowed, refused, failed)', labelNames: ['interaction', 'outcome'], registers: [registry] });
  const auditWrites = new Histogram({ name: 'smart_auth_audit_write_seconds', help: 'Time to store the audit records of one access durably', labelNames: ['result'], buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1], registers: [registry] });
  // Every SQL statement, those of knex and of the group commit's raw transactions (see db-statements.ts):
  // the benchmarks divide it by their requests.
  const statements = new Counter({ name: 'smart_auth_db_statements_total', help: 'SQL statements sent to the database', registers: [registry] });
  db.on('query', () => statements.inc());
  new Gauge({
    name: 'smart_auth_db_pool_connections', help: 'Database pool connections by state', labelNames: ['state'], registers: [registry],
    collect() {
      const current = (db.client as { pool?: { numUsed(): number; numFree(): number; numPendingAcquires(): number } }).pool;
      if (!current) return;
      this.set({ state: 'used' }, current.numUsed());
      this.set({ state: 'free' }, current.numFree());
      this.set({ state: 'pending' }, current.numPendingAcquires());
    },
  });

  return {
    registry, requests, tokens, guardDecisions, auditWrites,
    async middleware(ctx, next) {
      const end = duration.startTimer({ route: routeOf(ctx.path) });
      try {
        await next();
      } finally {
        end();
        requests.inc({ route: routeOf(ctx.path), method: ctx.method, status: String(ctx.status) });
      }
    },
  };
}
