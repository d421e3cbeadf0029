// The accounting of disclosures as files: CSV, JSON report lines, a FHIR Bundle of AuditEvents,
// and a PDF for people (pdfkit, text only). Pure apart from the PDF's buffering.
import { setTimeout as sleep } from 'node:timers/promises';
import { purposeDisplay } from '../hcs/codes.ts';
import type { AuditEvent, DisclosureSummaryRow } from './types.ts';
import { DISCLOSURE_COLUMNS, type DisclosureLine } from './disclosures.ts';

// ---- CSV (RFC 4180) ------------------------------------------------------------------------

/** A cell that a spreadsheet would run as a formula gets a leading apostrophe (OWASP CSV injection). */
function neutralise(value: string): string {
  return /^[=+\-@\t\r]/.test(value) ? `'${value}` : value;
}

/** Quoted also at `;` and tab: spreadsheets in many locales split on them, and the piece after would start a cell unneutralised. */
function csvCell(value: unknown): string {
  const text = neutralise(value === undefined || value === null ? '' : String(value));
  return /[",;\t\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

export const csvHeader = () => `${DISCLOSURE_COLUMNS.join(',')}\r\n`;
export const csvRow = (line: DisclosureLine) => `${DISCLOSURE_COLUMNS.map((c) => csvCell(line[c])).join(',')}\r\n`;

/** The report as CSV: a header with DESIGN's columns in order, one record per line, CRLF line breaks. */
export function toCsv(lines: readonly DisclosureLine[]): string {
  return csvHeader() + lines.map(csvRow).join('');
}

// ---- JSON ----------------------------------------------------------------------------------

export interface JsonOptions {
  /** Also give `recipient_name` when a line has it. Default: the columns only. */
  extras?: boolean;
}

/** The report lines as plain objects with DESIGN's keys, in column order. */
export function reportObjects(lines: readonly DisclosureLine[], options: JsonOptions = {}): Record<string, string | boolean>[] {
  return lines.map((line) => {
    const out: Record<string, string | boolean> = {};
    for (const c of DISCLOSURE_COLUMNS) out[c] = line[c];
    if (options.extras && line.recipient_name !== undefined) out.recipient_name = line.recipient_name;
    return out;
  });
}

/** `--format json`: an array of report lines keyed by the CSV column names. */
export function toJson(lines: readonly DisclosureLine[], options: JsonOptions = {}): string {
  return `${JSON.stringify(reportObjects(lines, options), null, 2)}\n`;
}

// ---- FHIR ----------------------------------------------------------------------------------

export interface FhirBundle {
  resourceType: 'Bundle';
  type: 'collection';
  timestamp: string;
  entry: { fullUrl?: string; resource: AuditEvent }[];
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** `--format fhir`: a Bundle (type collection) of the AuditEvents, as stored. */
export function toFhirBundle(events: readonly AuditEvent[], timestamp: Date = new Date()): FhirBundle {
  return {
    resourceType: 'Bundle',
    type: 'collection',
    timestamp: timestamp.toISOString(),
    entry: events.map((resource) => ({ ...(UUID.test(resource.id) && { fullUrl: `urn:uuid:${resource.id}` }), resource })),
  };
}

// ---- PDF -----------------------------------------------------------------------------------

export interface PdfHeader {
  patientName?: string;
  patientId: string;
  generated: Date;
  /** The filter the report was asked with ("2025-06-01 to 2025-06-30, Growth Chart"), when there is one. */
  filter?: string;
}

// The standard PDF fonts encode text as WinAnsi: Latin-1 plus these; anything else becomes '?'.
const WIN_ANSI_EXTRA = new Set([
  0x20ac, 0x201a, 0x0192, 0x201e, 0x2026, 0x2020, 0x2021, 0x02c6, 0x2030, 0x0160, 0x2039, 0x0152, 0x017d, 0x2018, 0x2019,
  0x201c, 0x201d, 0x2022, 0x2013, 0x2014, 0x02dc, 0x2122, 0x0161, 0x203a, 0x0153, 0x017e, 0x0178,
]);
const winAnsi = (cp: number) => (cp >= 0x20 && cp <= 0x7e) || (cp >= 0xa0 && cp <= 0xff) || WIN_ANSI_EXTRA.has(cp);

/** Text the standard fonts can show: control characters dropped to spaces, accents kept or stripped, the rest '?'. */
export function pdfText(value: string): string {
  let out = '';
  for (const ch of value.normalize('NFC')) {
    const cp = ch.codePointAt(0)!;
    if (winAnsi(cp)) out += ch;
    else if (cp < 0x20 || cp === 0x7f) out += ' ';
    else {
      const base = ch.normalize('NFKD').replace(/\p{M}/gu, '');
      out += base && [...base].every((c) => winAnsi(c.codePointAt(0)!)) ? base : '?';
    }
  }
  return out;
}

/** "treatment (TREAT)" for each code. */
const purposeText = (codes: string) =>
  codes.split(' ').filter(Boolean).map((c) => (purposeDisplay(c) === c ? c : `${purposeDisplay(c)} (${c})`)).join(', ') || 'not stated';

const stamp = (iso: string) => `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`;

function recipientText(r: { recipient_role: string; recipient_organization: string; app: string }): string {
  const who = [r.recipient_role, r.recipient_organization].filter(Boolean).join(', ');
  return r.app ? `${who} using ${r.app}` : who;
}

type Style = { font: 'Helvetica' | 'Helvetica-Bold'; size: number; color: string };
const BODY: Style = { font: 'Helvetica', size: 10, color: 'black' };

/**
 * The report as a tagged (accessible) PDF, written as it goes: title, the patient, the period, the
 * summary per app, then every access (break-the-glass flagged). Each page is numbered as it starts, and
 * every block is kept on one page (no page holds a lone line of one). `lines` may be a database cursor:
 * only the current page is held in memory.
 */
export async function pdfReport(summary: readonly DisclosureSummaryRow[], lines: AsyncIterable<DisclosureLine> | Iterable<DisclosureLine>, header: PdfHeader): Promise<PDFKit.PDFDocument> {
  // PDFKit (about 29 MB of memory with its fonts) is loaded when the first report is asked for, not at start.
  const { default: PDFDocument } = await import('pdfkit');
  const doc = new PDFDocument({
    size: 'A4',
    margin: 50,
    tagged: true,
    lang: 'en',
    displayTitle: true,
    pdfVersion: '1.7',
    info: { Title: `Accounting of disclosures: ${pdfText(header.patientName ?? header.patientId)}`, Creator: 'smart-auth', CreationDate: header.generated },
  });
  const root = doc.struct('Document');
  doc.addStructure(root);
  const width = doc.page.width - doc.page.margins.left - doc.page.margins.right;
  const left = doc.page.margins.left;
  const bottom = () => doc.page.height - doc.page.margins.bottom;
  const who = header.patientName ? `${header.patientName} (${header.patientId})` : header.patientId;

  let style = BODY;
  const setStyle = (next: Partial<Style>) => {
    style = { ...style, ...next };
    doc.font(style.font).fontSize(style.size).fillColor(style.color);
  };
  /** A paragraph (tagged as `tag`); `indent` shifts every line of it, wrapped ones included. */
  const text = (value: string, { indent = 0, tag = 'P' }: { indent?: number; tag?: string } = {}) =>
    doc.text(pdfText(value), left + indent, undefined, { width: width - indent, structParent: root, structType: tag } as PDFKit.Mixins.TextOptions);
  const height = (value: string, indent = 0) => doc.heightOfString(pdfText(value), { width: width - indent });
  /** Starts a new page unless `needed` points still fit on this one. */
  const keep = (needed: number) => {
    if (doc.y + needed > bottom()) doc.addPage();
  };

  // Page numbers, as each page starts (an artifact: not part of the text read out).
  let page = 0;
  const number = () => {
    page += 1;
    const { x, y } = doc;
    const margin = doc.page.margins.bottom;
    doc.page.margins.bottom = 0;
    doc.markContent('Artifact', { type: 'Pagination' });
    doc.font('Helvetica').fontSize(8).fillColor('#444444')
      .text(pdfText(`Accounting of disclosures, ${who} - page ${page}`), left, doc.page.height - 35, { width, align: 'center', lineBreak: false });
    doc.endMarkedContent();
    doc.page.margins.bottom = margin;
    setStyle({});
    Object.assign(doc, { x, y });
  };
  number();
  doc.on('pageAdded', number);

  const heading = (value: string, followedBy: number) => {
    setStyle({ font: 'Helvetica-Bold', size: 13 });
    keep(doc.currentLineHeight(true) * 2 + followedBy);
    doc.moveDown(0.8);
    text(value, { tag: 'H2' });
    setStyle(BODY);
    doc.moveDown(0.3);
  };
  const flagged = (value: string, flag: boolean) => {
    if (flag) setStyle({ color: '#a4161a' });
    text(flag ? `[BREAK THE GLASS] ${value}` : value);
    setStyle({ color: 'black' });
  };

  setStyle({ font: 'Helvetica-Bold', size: 18 });
  text('Accounting of disclosures', { tag: 'H1' });
  setStyle({ font: 'Helvetica', size: 11 });
  doc.moveDown(0.5);
  text(`Patient: ${who}`);
  const total = summary.reduce((n, s) => n + s.count, 0);
  const first = summary.reduce<Date | undefined>((d, s) => (!d || s.first < d ? s.first : d), undefined);
  const last = summary.reduce<Date | undefined>((d, s) => (!d || s.last > d ? s.last : d), undefined);
  text(first && last ? `Period: ${stamp(first.toISOString())} to ${stamp(last.toISOString())}` : 'Period: no accesses recorded');
  if (header.filter) text(`Selected: ${header.filter}`);
  text(`Generated: ${stamp(header.generated.toISOString())}`);
  text(`Accesses: ${total}`);
  setStyle({ size: 9, color: '#444444' });
  doc.moveDown(0.3);
  text('Who was given your records, when, from where and for what purpose. Staff are shown by role and organization. '
    + 'The report names the records (type and id), not their content. Attempts that were refused disclosed nothing and are not listed.');
  setStyle(BODY);

  const summaryBlock = (s: DisclosureSummaryRow) => {
    const title = s.app || 'an app without a name';
    const span = `${s.count} access${s.count === 1 ? '' : 'es'}, ${stamp(s.first.toISOString())} to ${stamp(s.last.toISOString())}`;
    return { needed: height(title) + height(span, 12) + 4, write: () => {
      setStyle({ font: 'Helvetica-Bold' });
      text(title);
      setStyle({ font: 'Helvetica' });
      text(span, { indent: 12 });
      doc.moveDown(0.3);
    } };
  };
  heading('Summary', summary.length ? summaryBlock(summary[0]).needed : 14);
  if (!summary.length) text('No accesses to your records were recorded.');
  for (const s of summary) {
    const block = summaryBlock(s);
    keep(block.needed);
    block.write();
  }

  const lineBlock = (l: DisclosureLine) => {
    const parts = [
      `${stamp(l.date)}  ${l.action}`,
      `By: ${recipientText(l)}${l.recipient_name ? ` (${l.recipient_name})` : ''}; purpose: ${purposeText(l.purpose_of_use)}${l.deidentified ? ' (de-identified)' : ''}`,
      `Records: ${l.resources || 'none'}`,
      `Request ${l.request_id}${l.network_address ? ` from ${l.network_address}` : ''}`,
    ];
    setStyle({ font: 'Helvetica-Bold' });
    const needed = height(parts[0]) + (setStyle({ font: 'Helvetica' }), height(parts[1], 12) + height(parts[2], 12)) + (setStyle({ size: 8 }), height(parts[3], 12)) + 4;
    setStyle(BODY);
    return { needed, write: () => {
      setStyle({ font: 'Helvetica-Bold' });
      flagged(parts[0], l.break_glass);
      setStyle({ font: 'Helvetica' });
      text(parts[1], { indent: 12 });
      text(parts[2], { indent: 12 });
      setStyle({ size: 8, color: '#444444' });
      text(parts[3], { indent: 12 });
      setStyle(BODY);
      doc.moveDown(0.3);
    } };
  };

  (async () => {
    let wrote = false;
    for await (const l of lines) {
      // Backpressure: pdfkit pushes whatever is written; wait while the reader (a slow client) has not taken it.
      while (doc.readableLength > doc.readableHighWaterMark * 8 && !doc.destroyed) await sleep(10);
      if (doc.destroyed) return; // the client went away: stop reading the trail
      const block = lineBlock(l);
      if (!wrote) heading('Every access', block.needed);
      wrote = true;
      keep(block.needed);
      block.write();
    }
    if (!wrote) {
      heading('Every access', 14);
      text('None.');
    }
    root.end();
    doc.end();
  })().catch((err) => doc.destroy(err as Error));
  return doc;
}

/** The whole PDF in memory (for files the CLI writes). */
export async function toPdf(lines: readonly DisclosureLine[], summary: readonly DisclosureSummaryRow[], header: PdfHeader): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of await pdfReport(summary, lines, header)) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}
