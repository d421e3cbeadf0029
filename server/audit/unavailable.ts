// The answer of an HTTP API or a form whose audit record cannot be taken now (the store fails, the backlog
// is full): 503, nothing done (fail closed), try again shortly.
import type { Context } from 'koa';
import { sendPage } from '../views.ts';

function refuseForAudit(ctx: Context): void {
  ctx.status = 503;
  ctx.state.refusedForAudit = true;
  ctx.set('Retry-After', '1');
  ctx.set('Cache-Control', 'no-store');
}

/** Answers 503 temporarily_unavailable: the audit trail cannot take the record of this `what` now. */
export function answerAuditUnavailable(ctx: Context, what: string): void {
  refuseForAudit(ctx);
  ctx.body = { error: 'temporarily_unavailable', error_description: `the audit trail cannot take the record of this ${what} now` };
}

/** The same answer as a page, for a form that would have created a `what`. */
export async function sendAuditUnavailablePage(ctx: Context, what: string, demo: boolean): Promise<void> {
  await sendPage(ctx, 'error', {
    demo, title: 'Try again shortly',
    description: `The audit trail cannot take the record of this ${what} now, so no ${what} was created.`,
    hint: 'Wait a moment, then go back and send the form again.',
  }, 503);
  refuseForAudit(ctx);
}

/** Whether an answer was refused because the audit trail could not take its record (recording that refusal would fail alike). */
export const refusedForAudit = (ctx: Context): boolean => ctx.state.refusedForAudit === true;
