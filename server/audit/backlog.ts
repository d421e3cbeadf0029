// Records that may be committed after the answer (introspection's ITI-102, and the record of a request
// refused at /token, /introspect or /revoke: every other record is committed before it). At most `limit`
// may wait; when that many wait, or when the store failed the last one, a record is refused: introspection
// then answers 503 (fail closed), a refused request stays the same refusal (nothing was granted). While the store is
// failing, each record is committed before the answer instead, so the first success ends the failing
// state. A limit of 0 commits every record before its answer.
import type { AuditSink } from './store.ts';
import type { AuditEvent } from './types.ts';

export interface AuditBacklog {
  /** Takes the record; false when it cannot be taken (the request must then fail). */
  record(event: AuditEvent): Promise<boolean>;
  /** How many records wait for their commit. */
  readonly waiting: number;
}

export function auditBacklog(sink: AuditSink, limit: number, log: (message: string, err: unknown) => void): AuditBacklog {
  let waiting = 0;
  let failing = false;
  return {
    get waiting() {
      return waiting;
    },
    async record(event) {
      if (failing || limit === 0) {
        try {
          await sink.append(event);
          failing = false;
          return true;
        } catch (err) {
          log('the audit store still fails: a record was refused', err);
          return false;
        }
      }
      if (waiting >= limit) return false;
      waiting++;
      sink.append(event).then(
        () => undefined,
        (err) => {
          failing = true;
          log('a record committed after its answer was lost: the audit store fails', err);
        },
      ).finally(() => waiting--);
      return true;
    },
  };
}
