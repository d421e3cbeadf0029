// Forwarding the audit trail to an external FHIR audit repository (an IHE ATNA/BALP record
// repository): every AuditEvent, in chain order, with `PUT {repository}/AuditEvent/{id}` so a retry
// never duplicates one. The chain is the durable outbox: a cursor row says how far it has been sent,
// so a repository that is down, or a restart, loses nothing. One instance at a time holds the lease.
import { randomUUID } from 'node:crypto';
import type { Db } from '../db.ts';
import type { SignedHead } from './audit-store.ts';
import { headBinary } from './signed-head.ts';

export interface ForwarderOptions {
  /** The repository's FHIR base URL. */
  url: string;
  batchSize?: number;
  /** Pause between rounds when everything has been sent (ms). */
  idleMs?: number;
  /** Longest pause after failures (ms); pauses double from 500 ms up to this. */
  maxBackoffMs?: number;
  timeoutMs?: number;
  log?: (message: string) => void;
}

export interface Forwarder {
  /** Sends what is pending now; resolves when the repository has all of it (or rejects on failure). */
  flush(): Promise<number>;
  /** A newly signed chain head: sent as `PUT Binary/audit-head-{seq}` after the pending events (the newest one, until it arrives). */
  head(head: SignedHead): void;
  stop(): Promise<void>;
}

const LEASE_MS = 30_000;

export function startAuditForwarder(db: Db, options: ForwarderOptions): Forwarder {
  const owner = randomUUID();
  const base = options.url.replace(/\/$/, '');
  const batchSize = options.batchSize ?? 100;
  const log = options.log ?? ((message: string) => console.error(`smart-auth audit forwarding: ${message}`));
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let backoff = 0;
  let running: Promise<number> | undefined;
  let pendingHead: SignedHead | undefined;

  /** Takes or renews the lease; false when another instance forwards. */
  async function lease(): Promise<boolean> {
    const now = Date.now();
    const taken = await db('audit_forwarding').where('id', 1)
      .andWhere((q) => q.whereNull('lease_until').orWhere('lease_until', '<', now).orWhere('lease_owner', owner))
      .update({ lease_owner: owner, lease_until: now + LEASE_MS });
    return taken === 1;
  }

  async function send(id: string, event: string, type = 'AuditEvent'): Promise<void> {
    const res = await fetch(`${base}/${type}/${encodeURIComponent(id)}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/fhir+json', accept: 'application/fhir+json' },
      body: event,
      signal: AbortSignal.timeout(options.timeoutMs ?? 10_000),
    });
    await res.arrayBuffer();
    if (!res.ok) throw new Error(`the repository answered ${res.status} for ${type}/${id}`);
  }

  async function sendHead(): Promise<void> {
    const head = pendingHead;
    if (!head) return;
    const binary = headBinary(head);
    await send(binary.id, JSON.stringify(binary), 'Binary');
    if (pendingHead === head) pendingHead = undefined;
  }

  /** One round: sends pending events in order, moving the cursor after each; returns how many were sent. */
  async function round(): Promise<number> {
    if (!(await lease())) return 0;
    let sent = 0;
    for (;;) {
      const cursor = Number((await db('audit_forwarding').where('id', 1).first('seq'))?.seq ?? 0);
      const rows: { seq: number | string; id: string; event: string }[] = await db('audit_events')
        .where('seq', '>', cursor).orderBy('seq').limit(batchSize).select('seq', 'id', 'event');
      if (!rows.length) {
        await sendHead();
        return sent;
      }
      for (const row of rows) {
        if (stopped) return sent;
        await send(row.id, row.event);
        await db('audit_forwarding').where({ id: 1, lease_owner: owner }).update({ seq: Number(row.seq), updated_at: Date.now(), lease_until: Date.now() + LEASE_MS });
        sent++;
      }
    }
  }

  function run(): Promise<number> {
    running ??= round().finally(() => { running = undefined; });
    return running;
  }

  function schedule(delay: number) {
    if (stopped) return;
    timer = setTimeout(() => {
      run().then(() => {
        backoff = 0;
        schedule(options.idleMs ?? 1000);
      }, (err) => {
        backoff = Math.min(backoff ? backoff * 2 : 500, options.maxBackoffMs ?? 60_000);
        log(`${(err as Error).message}; retrying in ${backoff} ms`);
        schedule(backoff);
      });
    }, delay);
    timer.unref();
  }
  schedule(0);

  return {
    flush: run,
    head(head) {
      if (!pendingHead || head.seq >= pendingHead.seq) pendingHead = head;
    },
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running?.catch(() => undefined);
      // The head signed at shutdown, if this instance forwards and the repository takes it now.
      if (await lease().catch(() => false)) await sendHead().catch((err) => log(`the last signed head was not sent: ${(err as Error).message}`));
      await db('audit_forwarding').where({ id: 1, lease_owner: owner }).update({ lease_owner: null, lease_until: null });
    },
  };
}
