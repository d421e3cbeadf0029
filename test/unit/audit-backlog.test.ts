// Introspection records committed after the answer: at most `limit` wait, and a failing store refuses
// records (the caller answers 503) until one is committed again.
import assert from 'node:assert/strict';
import { auditBacklog } from '../../server/audit/backlog.ts';
import type { AuditEvent } from '../../server/audit/types.ts';

const event = { resourceType: 'AuditEvent' } as AuditEvent;

/** A sink whose appends settle when the test says so. */
function manualSink() {
  const pending: { resolve(): void; reject(err: Error): void }[] = [];
  return {
    pending,
    append: () => new Promise<void>((resolve, reject) => pending.push({ resolve, reject })),
  };
}
const tick = () => new Promise((resolve) => setImmediate(resolve));

describe('audit backlog (records committed after the answer)', () => {
  it('takes records without waiting for them, up to the limit, then refuses', async () => {
    const sink = manualSink();
    const backlog = auditBacklog(sink, 2, () => {});
    assert.equal(await backlog.record(event), true);
    assert.equal(await backlog.record(event), true);
    assert.equal(backlog.waiting, 2);
    assert.equal(await backlog.record(event), false, 'full: refused');
    sink.pending[0].resolve();
    await tick();
    assert.equal(backlog.waiting, 1);
    assert.equal(await backlog.record(event), true, 'room again once one is committed');
  });

  it('refuses while the store fails, commits before answering meanwhile, and recovers on the first success', async () => {
    const sink = manualSink();
    const logged: string[] = [];
    const backlog = auditBacklog(sink, 10, (message) => logged.push(message));
    assert.equal(await backlog.record(event), true);
    sink.pending[0].reject(new Error('disk full'));
    await tick();
    assert.equal(logged.length, 1, 'the lost record is logged');
    // Failing: the next record is committed before the answer; a failure refuses it.
    const refused = backlog.record(event);
    await tick();
    sink.pending[1].reject(new Error('disk full'));
    assert.equal(await refused, false);
    const accepted = backlog.record(event);
    await tick();
    assert.equal(backlog.waiting, 0, 'not counted as waiting: the answer waits for it');
    sink.pending[2].resolve();
    assert.equal(await accepted, true);
    assert.equal(await backlog.record(event), true);
    assert.equal(backlog.waiting, 1, 'after a success, records wait again');
  });

  it('with a limit of 0 commits every record before the answer', async () => {
    const sink = manualSink();
    const backlog = auditBacklog(sink, 0, () => {});
    let answered = false;
    const taken = backlog.record(event).then((ok) => { answered = true; return ok; });
    await tick();
    assert.equal(answered, false, 'waits for the commit');
    sink.pending[0].resolve();
    assert.equal(await taken, true);
  });
});
