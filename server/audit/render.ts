// The accounting of disclosures as files: CSV, JSON report lines, a FHIR Bundle of AuditEvents,
// and a PDF for people (pdfkit, text only). Pure apart from the PDF's buffering.
import PDFDocument from 'pdfkit';
import { purposeDisplay } from '../hcs/codes.ts';
import type { AuditEvent } from './types.ts';
import { DISCLOSURE_COLUMNS, type DisclosureGroup, type DisclosureLine } from './disclosures.ts';

// ---- CSV (RFC 4180) ------------------------------------------------------------------------

/** A cell that a spreadsheet would run as a formula gets a leading apostrophe (OWASP CSV injection). */
function neutralise(value: string): string {
  return /^[=+\-@\t\r]/.test(value) ? `'${value}` : value;
}

function csvCell(value: unknown): string {
  const text = neutralise(value === undefined || value === null ? '' : String(value));
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/** The report as CSV: a header with DESIGN's columns in order, one record per line, CRLF line breaks. */
export function toCsv(lines: readonly DisclosureLine[]): string {
  const rows = [DISCLOSURE_COLUMNS.join(','), ...lines.map((line) => DISCLOSURE_COLUMNS.map((c) => csvCell(line[c])).join(','))];
  return `${rows.join('\r\n')}\r\n`;
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

/**
 * The report as a PDF: title, the patient, the period, the grouped summary, then every access;
 * break-the-glass accesses are flagged. Text only; pages break as needed and are numbered.
 */
export function toPdf(lines: readonly DisclosureLine[], groups: readonly DisclosureGroup[], header: PdfHeader): Promise<Buffer> {
  const doc = new PDFDocument({
    size: 'A4',
    margin: 50,
    bufferPages: true,
    info: { Title: 'Accounting of disclosures', Creator: 'smart-auth', CreationDate: header.generated },
  });
  const chunks: Buffer[] = [];
  const done = new Promise<Buffer>((resolve, reject) => {
    doc.on('data', (chunk: Buffer) => chunks.push(chunk));
    doc.on('end', () => resolve(Buffer.concat(chunks)));
    doc.on('error', reject);
  });

  const width = doc.page.width - doc.page.margins.left - doc.page.margins.right;
  const left = doc.page.margins.left;
  /** A paragraph; `indent` shifts every line of it, wrapped ones included. */
  const text = (value: string, { indent = 0, ...options }: PDFKit.Mixins.TextOptions = {}) =>
    doc.text(pdfText(value), left + indent, undefined, { width: width - indent, ...options });
  const flagged = (value: string, flag: boolean) => {
    if (!flag) return text(value);
    doc.fillColor('#a4161a');
    text(`[BREAK THE GLASS] ${value}`);
    return doc.fillColor('black');
  };
  const heading = (value: string) => {
    doc.moveDown(0.8);
    doc.font('Helvetica-Bold').fontSize(13);
    text(value);
    doc.font('Helvetica').fontSize(10).moveDown(0.3);
  };
  /** Keeps a short block (a few lines) on one page. */
  const keepTogether = (rows: number) => {
    if (doc.y + rows * 14 > doc.page.height - doc.page.margins.bottom) doc.addPage();
  };

  doc.font('Helvetica-Bold').fontSize(18);
  text('Accounting of disclosures');
  doc.font('Helvetica').fontSize(11).moveDown(0.5);
  text(`Patient: ${header.patientName ? `${header.patientName} (${header.patientId})` : header.patientId}`);
  const dates = lines.map((l) => l.date).sort();
  text(dates.length ? `Period: ${stamp(dates[0])} to ${stamp(dates[dates.length - 1])}` : 'Period: no accesses recorded');
  text(`Generated: ${stamp(header.generated.toISOString())}`);
  const glass = lines.filter((l) => l.break_glass).length;
  text(`Accesses: ${lines.length}${glass ? `, of which ${glass} under break-the-glass (emergency access)` : ''}`);
  doc.moveDown(0.3).fontSize(9).fillColor('#444444');
  text('Who accessed which of your records, when, and for what purpose. Staff are shown by role and organization. '
    + 'The report names the records (type and id), not their content.');
  doc.fillColor('black');

  heading('Summary');
  if (!groups.length) text('No accesses to your records were recorded.');
  for (const g of groups) {
    keepTogether(3);
    doc.font('Helvetica-Bold');
    flagged(`${g.day}  ${recipientText(g)}`, g.break_glass);
    doc.font('Helvetica');
    const span = g.first === g.last ? stamp(g.first).slice(11) : `${stamp(g.first).slice(11, 16)} to ${stamp(g.last).slice(11)}`;
    text(`${g.count} access${g.count === 1 ? '' : 'es'} (${g.actions.join(', ')}), ${span}; purpose: ${purposeText(g.purpose_of_use)}`, { indent: 12 });
    text(`Records: ${g.resource_types.join(', ') || 'none'}${g.resource_count ? ` (${g.resource_count} distinct)` : ''}`, { indent: 12 });
    doc.moveDown(0.3);
  }

  heading('Every access');
  if (!lines.length) text('None.');
  for (const l of lines) {
    keepTogether(4);
    doc.font('Helvetica-Bold');
    flagged(`${stamp(l.date)}  ${l.action}`, l.break_glass);
    doc.font('Helvetica');
    text(`By: ${recipientText(l)}${l.recipient_name ? ` (${l.recipient_name})` : ''}; purpose: ${purposeText(l.purpose_of_use)}`, { indent: 12 });
    text(`Records: ${l.resources || 'none'}`, { indent: 12 });
    doc.fontSize(8).fillColor('#444444');
    text(`Request ${l.request_id}${l.network_address ? ` from ${l.network_address}` : ''}`, { indent: 12 });
    doc.fontSize(10).fillColor('black').moveDown(0.3);
  }

  // Page numbers, written into the bottom margin of every buffered page.
  const range = doc.bufferedPageRange();
  for (let i = range.start; i < range.start + range.count; i++) {
    doc.switchToPage(i);
    const bottom = doc.page.margins.bottom;
    doc.page.margins.bottom = 0;
    doc.fontSize(8).fillColor('#444444')
      .text(pdfText(`Accounting of disclosures, ${header.patientId} - page ${i + 1 - range.start} of ${range.count}`),
        doc.page.margins.left, doc.page.height - 35, { width, align: 'center', lineBreak: false });
    doc.page.margins.bottom = bottom;
  }
  doc.end();
  return done;
}
