// A patient's accounting of disclosures at /account/disclosures: who was given their records, when,
// from where, for what purpose, from the audit trail; paged (newest first), filtered by date and app,
// summarised in the database; CSV and PDF downloads stream any size. Needs the /account session of a
// patient user (fhirUser Patient/<id>). Reading the report is itself audited (onRead); those visits are
// not disclosures to anyone else and are left out of the report.
import { Readable } from 'node:stream';
import Router from '@koa/router';
import type { Context } from 'koa';
import type { Config } from '../config.ts';
import type { Db } from '../db.ts';
import type { AuditStore, DisclosureQuery } from '../audit/types.ts';
import { breakGlassJtisOf, disclosureLines, streamLines, type DisclosureLine, type DisclosureOptions } from '../audit/disclosures.ts';
import { csvHeader, csvRow, pdfReport } from '../audit/render.ts';
import { clientNames } from '../oidc/clients.ts';
import { patientOf, subjectOf, type User } from '../oidc/users.ts';
import { effectiveClearance } from '../hcs/policy.ts';
import { residualFor } from '../hcs/token-claims.ts';
import { recordedLabelsAdmit } from '../privacy/labels.ts';
import { purposeDisplay } from '../hcs/codes.ts';
import { csrfToken } from '../csrf.ts';
import { sendPage, signedInUser } from './session.ts';

export type DisclosureFormat = 'html' | 'csv' | 'pdf';

/** The client id under which reading this report is audited (left out of the report itself). */
export const REPORT_CLIENT = 'account-disclosures';

/** Lines on one page of the report. */
export const PAGE_SIZE = 100;

export interface DisclosureDeps {
  config: Config;
  db: Db;
  audit: AuditStore;
  patients?: { get(id: string): Promise<{ name: string } | undefined> };
  /** Called before the report is shown or sent (the lead wires it to the audit trail); a rejection fails the request. */
  onRead?(userId: string, patientId: string, format: DisclosureFormat, request: ReportReading): void | Promise<void>;
}

/** The request that reads the report, for its record: its X-Request-Id and where it came from. */
export interface ReportReading {
  requestId?: string;
  address?: string;
}

const reading = (ctx: Context): ReportReading => ({ requestId: ctx.state.requestId as string | undefined, address: ctx.ip });

const PAGE = '/account/disclosures';

const ONLY_PATIENTS = {
  title: 'Only for patients',
  description: 'This page lists who accessed a patient\'s own records. It is only for patients signed in with their own account.',
  hint: 'Privacy officers export reports with the smart-auth audit export command.',
};

const purposeText = (codes: string) => codes.split(' ').filter(Boolean).map(purposeDisplay).join(', ') || 'not stated';
const stamp = (iso: string) => `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`;
const fileSafe = (value: string) => value.replace(/[^A-Za-z0-9\-.]/g, '_');

/** What the patient asked for: a period, an app, and where in the pages they are. */
export interface ReportRequest {
  from?: string;
  to?: string;
  app?: string;
  before?: number;
  after?: number;
}

const DAY = /^\d{4}-\d{2}-\d{2}$/;
const CURSOR = /^[1-9]\d{0,14}$/;

/** Reads the query string of the page and the downloads; a message for the patient when it does not make sense. */
export function reportRequest(query: Record<string, unknown>): { request: ReportRequest } | { error: string } {
  const one = (name: string) => (typeof query[name] === 'string' ? (query[name] as string).trim() : '');
  const request: ReportRequest = {};
  for (const name of ['from', 'to'] as const) {
    const value = one(name);
    if (!value) continue;
    if (!DAY.test(value) || Number.isNaN(Date.parse(`${value}T00:00:00Z`))) return { error: 'Write dates as year-month-day, for example 2025-06-30.' };
    request[name] = value;
  }
  if (request.from && request.to && request.from > request.to) return { error: 'The period starts after it ends.' };
  const app = one('app');
  if (app.length > 200) return { error: 'There is no such app.' };
  if (app) request.app = app;
  for (const name of ['before', 'after'] as const) {
    const value = one(name);
    if (!value) continue;
    if (!CURSOR.test(value)) return { error: 'That page does not exist.' };
    request[name] = Number(value);
  }
  return { request };
}

function storeQuery(patient: string, r: ReportRequest): DisclosureQuery {
  return {
    patient,
    ...(r.from && { from: new Date(`${r.from}T00:00:00.000Z`) }),
    ...(r.to && { to: new Date(`${r.to}T23:59:59.999Z`) }),
    ...(r.app !== undefined && { app: r.app }),
    exceptApps: [REPORT_CLIENT],
  };
}

/** The query string that keeps the filters (and moves to a page). */
function queryString(r: ReportRequest, page: { before?: number; after?: number } = {}): string {
  const params = new URLSearchParams();
  if (r.from) params.set('from', r.from);
  if (r.to) params.set('to', r.to);
  if (r.app !== undefined) params.set('app', r.app);
  if (page.before !== undefined) params.set('before', String(page.before));
  if (page.after !== undefined) params.set('after', String(page.after));
  const text = params.toString();
  return text ? `?${text}` : '';
}

export function disclosureRoutes({ config, db, audit, patients, onRead }: DisclosureDeps): Router {
  const router = new Router();

  /** The signed-in patient, or an answer already given (redirect to login, or 403). */
  async function signedInPatient(ctx: Context): Promise<{ user: User; patientId: string } | undefined> {
    const user = (await signedInUser(ctx, db, config))?.user;
    if (!user) {
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

  /** Whether the patient's own clearance (as her tokens carry it) lets her read a resource with the labels an event recorded. */
  function readableBy(user: User): DisclosureOptions['readable'] {
    const residual = residualFor(effectiveClearance(config.policy, subjectOf(user), undefined), config.policy.labels);
    const labelOptions = { defaultConfidentiality: config.defaultConfidentiality, vocabulary: config.policy.labels };
    return (labels) => recordedLabelsAdmit(labels, { residual }, labelOptions);
  }

  /** Everything a report needs besides its lines: the request, the summary, app names, how to make lines. */
  async function prepare(ctx: Context, user: User, patientId: string) {
    const parsed = reportRequest(ctx.query);
    if ('error' in parsed) {
      await sendPage(ctx, 'error', { demo: config.demo, title: 'This report cannot be shown', description: parsed.error, hint: `Start again at ${PAGE}.` }, 400);
      return undefined;
    }
    const { request } = parsed;
    const query = storeQuery(patientId, request);
    const { app: _app, ...allApps } = query;
    const [summary, everyApp, alerts] = await Promise.all([
      audit.disclosureSummary(query),
      audit.disclosureSummary(allApps),
      audit.search({ patient: patientId, type: '110113' }),
    ]);
    const appNames = await clientNames(db, everyApp.map((s) => s.app));
    // Every account that is this patient (fhirUser Patient/<id>) reads as "patient (self)".
    const selfUserIds: string[] = await db('users').where('fhir_user', `Patient/${patientId}`).pluck('id');
    const options: DisclosureOptions = {
      patient: patientId, selfUserIds: [...new Set([user.id, ...selfUserIds])], breakGlassJtis: breakGlassJtisOf(alerts), readable: readableBy(user),
    };
    const named = (line: DisclosureLine): DisclosureLine => ({ ...line, app: appNames[line.app] ?? line.app });
    const appName = (app: string) => appNames[app] || app || 'an app without a name';
    const filterText = [request.from && `from ${request.from}`, request.to && `to ${request.to}`, request.app !== undefined && appName(request.app)].filter(Boolean).join(', ');
    return { request, query, summary, everyApp, options, named, appName, filterText };
  }

  function download(ctx: Context, body: Readable, type: string, patientId: string, extension: string) {
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
    const report = await prepare(ctx, user, patientId);
    if (!report) return;
    const { request, query, summary, everyApp, options, named, appName } = report;
    const page = await audit.disclosurePage({ ...query, before: request.before, after: request.after, limit: PAGE_SIZE });
    const lines = disclosureLines(page.events, options).reverse().map(named);
    await onRead?.(user.id, patientId, 'html', reading(ctx));
    const recipient = (r: { recipient_role: string; recipient_organization: string }) =>
      (r.recipient_role === 'patient (self)' ? 'you' : [r.recipient_role, r.recipient_organization].filter(Boolean).join(', '));
    return sendPage(ctx, 'account-disclosures', {
      title: 'Who accessed your records',
      demo: config.demo,
      csrf: csrfToken(ctx),
      user: { name: user.name ?? user.username },
      patient: { id: patientId, name: (await patients?.get(patientId))?.name },
      filter: { from: request.from ?? '', to: request.to ?? '', app: request.app },
      apps: everyApp.map((s) => ({ value: s.app, label: appName(s.app) })),
      total: summary.reduce((n, s) => n + s.count, 0),
      summary: summary.map((s) => ({ app: appName(s.app), count: s.count, first: stamp(s.first.toISOString()), last: stamp(s.last.toISOString()) })),
      lines: lines.map((l) => ({
        date: stamp(l.date), recipient: recipient(l), app: l.app, purpose: purposeText(l.purpose_of_use), deidentified: l.deidentified, action: l.action,
        resources: l.resources.split(' ').filter(Boolean), breakGlass: l.break_glass, where: l.network_address,
      })),
      newer: page.newer !== undefined ? `${PAGE}${queryString(request, { after: page.newer })}` : undefined,
      older: page.older !== undefined ? `${PAGE}${queryString(request, { before: page.older })}` : undefined,
      downloads: { csv: `${PAGE}.csv${queryString(request)}`, pdf: `${PAGE}.pdf${queryString(request)}` },
      breakGlassCount: lines.filter((l) => l.break_glass).length,
      deidentifiedCount: lines.filter((l) => l.deidentified).length,
    });
  });

  router.get(`${PAGE}.csv`, async (ctx) => {
    const who = await signedInPatient(ctx);
    if (!who) return;
    const report = await prepare(ctx, who.user, who.patientId);
    if (!report) return;
    await onRead?.(who.user.id, who.patientId, 'csv', reading(ctx));
    const lines = streamLines(audit.disclosureEvents(report.query), report.options);
    download(ctx, Readable.from((async function* csv() {
      yield csvHeader();
      for await (const line of lines) yield csvRow(report.named(line));
    })()), 'text/csv; charset=utf-8', who.patientId, 'csv');
  });

  router.get(`${PAGE}.pdf`, async (ctx) => {
    const who = await signedInPatient(ctx);
    if (!who) return;
    const report = await prepare(ctx, who.user, who.patientId);
    if (!report) return;
    await onRead?.(who.user.id, who.patientId, 'pdf', reading(ctx));
    const lines = streamLines(audit.disclosureEvents(report.query), report.options);
    const pdf = await pdfReport(report.summary.map((s) => ({ ...s, app: report.appName(s.app) })), (async function* named() {
      for await (const line of lines) yield report.named(line);
    })(), {
      patientName: (await patients?.get(who.patientId))?.name ?? who.user.name ?? undefined,
      patientId: who.patientId,
      generated: new Date(),
      ...(report.filterText && { filter: report.filterText }),
    });
    download(ctx, pdf as unknown as Readable, 'application/pdf', who.patientId, 'pdf');
  });

  return router;
}
