// A patient's accounting of disclosures at /account/disclosures: who accessed their records, when,
// for what purpose, from the audit trail; with CSV and PDF downloads. Needs the /account session
// of a patient user (fhirUser Patient/<id>). Reading the report is itself audited (onRead).
import Router from '@koa/router';
import type { Context } from 'koa';
import type { Config } from '../config.ts';
import type { Db } from '../db.ts';
import type { AuditStore } from '../audit/types.ts';
import { disclosureLines, groupedDisclosures, type DisclosureLine } from '../audit/disclosures.ts';
import { toCsv, toPdf } from '../audit/render.ts';
import { clientNames } from '../oidc/clients.ts';
import { findUser, patientOf, type User } from '../oidc/users.ts';
import { purposeDisplay } from '../hcs/codes.ts';
import { csrfToken } from '../csrf.ts';
import { accountSession, sendPage } from './session.ts';

export type DisclosureFormat = 'html' | 'csv' | 'pdf';

export interface DisclosureDeps {
  config: Config;
  db: Db;
  audit: AuditStore;
  patients?: { get(id: string): Promise<{ name: string } | undefined> };
  /** Called before the report is shown or sent (the lead wires it to the audit trail); a rejection fails the request. */
  onRead?(userId: string, patientId: string, format: DisclosureFormat): void | Promise<void>;
}

const PAGE = '/account/disclosures';

const ONLY_PATIENTS = {
  title: 'Only for patients',
  description: 'This page lists who accessed a patient\'s own records. It is only for patients signed in with their own account.',
  hint: 'Privacy officers export reports with the smart-auth audit export command.',
};

const purposeText = (codes: string) => codes.split(' ').filter(Boolean).map(purposeDisplay).join(', ') || 'not stated';
const stamp = (iso: string) => `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`;
const fileSafe = (value: string) => value.replace(/[^A-Za-z0-9\-.]/g, '_');

export function disclosureRoutes({ config, db, audit, patients, onRead }: DisclosureDeps): Router {
  const router = new Router();

  /** The signed-in patient, or an answer already given (redirect to login, or 403). */
  async function signedInPatient(ctx: Context): Promise<{ user: User; patientId: string } | undefined> {
    const id = accountSession(ctx);
    const user = id ? await findUser(db, id) : undefined;
    if (!user || user.disabled) {
      ctx.status = 303;
      ctx.redirect(`/account/login?return_to=${encodeURIComponent(PAGE)}`);
      return undefined;
    }
    const patientId = patientOf(user);
    if (!patientId) {
      await sendPage(ctx, 'error', { demo: config.demo, ...ONLY_PATIENTS }, 403);
      return undefined;
    }
    return { user, patientId };
  }

  /** The patient's report lines, with app names from the registered clients. */
  async function report(user: User, patientId: string): Promise<DisclosureLine[]> {
    // Successful events about the patient: its accesses, and the break-the-glass alerts of tokens issued for it.
    const events = await audit.search({ patient: patientId, outcome: '0' });
    // Every account that is this patient (fhirUser Patient/<id>) reads as "patient (self)".
    const selfUserIds: string[] = await db('users').where('fhir_user', `Patient/${patientId}`).pluck('id');
    const plain = disclosureLines(events, { patient: patientId, selfUserIds: [...new Set([user.id, ...selfUserIds])] });
    const appNames = await clientNames(db, plain.map((l) => l.app));
    return plain.map((l) => ({ ...l, app: appNames[l.app] ?? l.app }));
  }

  function download(ctx: Context, body: string | Buffer, type: string, patientId: string, extension: string) {
    ctx.status = 200;
    ctx.type = type;
    ctx.set('Cache-Control', 'no-store');
    ctx.set('Content-Disposition', `attachment; filename="disclosures-${fileSafe(patientId)}-${new Date().toISOString().slice(0, 10)}.${extension}"`);
    ctx.body = body;
  }

  router.get(PAGE, async (ctx) => {
    const who = await signedInPatient(ctx);
    if (!who) return;
    const { user, patientId } = who;
    const lines = await report(user, patientId);
    const groups = groupedDisclosures(lines);
    await onRead?.(user.id, patientId, 'html');
    const recipient = (r: { recipient_role: string; recipient_organization: string }) => [r.recipient_role, r.recipient_organization].filter(Boolean).join(', ');
    return sendPage(ctx, 'account-disclosures', {
      title: 'Who accessed your records',
      demo: config.demo,
      csrf: csrfToken(ctx),
      user: { name: user.name ?? user.username },
      patient: { id: patientId, name: (await patients?.get(patientId))?.name },
      groups: [...groups].reverse().map((g) => ({
        day: g.day, recipient: recipient(g), app: g.app, purpose: purposeText(g.purpose_of_use), count: g.count,
        types: g.resource_types.join(', '), actions: g.actions.join(', '), breakGlass: g.break_glass,
      })),
      lines: [...lines].reverse().map((l) => ({
        date: stamp(l.date), recipient: recipient(l), app: l.app, purpose: purposeText(l.purpose_of_use), action: l.action,
        resources: l.resources.split(' ').filter(Boolean), breakGlass: l.break_glass, requestId: l.request_id,
      })),
      breakGlassCount: lines.filter((l) => l.break_glass).length,
    });
  });

  router.get(`${PAGE}.csv`, async (ctx) => {
    const who = await signedInPatient(ctx);
    if (!who) return;
    const lines = await report(who.user, who.patientId);
    await onRead?.(who.user.id, who.patientId, 'csv');
    download(ctx, toCsv(lines), 'text/csv; charset=utf-8', who.patientId, 'csv');
  });

  router.get(`${PAGE}.pdf`, async (ctx) => {
    const who = await signedInPatient(ctx);
    if (!who) return;
    const lines = await report(who.user, who.patientId);
    const pdf = await toPdf(lines, groupedDisclosures(lines), {
      patientName: (await patients?.get(who.patientId))?.name ?? who.user.name ?? undefined,
      patientId: who.patientId,
      generated: new Date(),
    });
    await onRead?.(who.user.id, who.patientId, 'pdf');
    download(ctx, pdf, 'application/pdf', who.patientId, 'pdf');
  });

  return router;
}
