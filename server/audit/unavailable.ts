// The answer of an HTTP API whose audit record cannot be taken now (the store fails, the backlog is full):
// 503, nothing done (fail closed), try again shortly.
import type { Context } from 'koa';

/** Answers 503 temporarily_unavailable: the audit trail cannot take the record of this `what` now. */
export function answerAuditUnavailable(ctx: Context, what: string): void {
  ctx.status = 503;
  ctx.state.refusedForAudit = true;
  ctx.set('Retry-After', '1');
  ctx.set('Cache-Control', 'no-store');
  ctx.body = { error: 'temporarily_unavailable', error_description: `the audit trail cannot take the record of this ${what} now` };
}

/** Whether an answer was refused because the audit trail could not take its record (recording that refusal would fail alike). */
export const refusedForAudit = (ctx: Context): boolean => ctx.state.refusedForAudit === true;
