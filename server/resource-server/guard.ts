// The guard: one FHIR request in, one response out. verify -> classify -> decide -> upstream ->
// filter -> audit. Framework-neutral (Koa and others adapt to it); imports nothing from the
// authorization server.
import { patientsOf } from '../fhir/compartment.ts';
import { nestedResources } from '../fhir/nested.ts';
import { namedPatients } from './target-patients.ts';
import { classify, entryRequests } from './interaction.ts';
import { decide, isUnrestricted, mayReadAuditTrail, securityContextOf, viewsFor } from './decide.ts';
import { checkWrite, filterHistoryBundle, filterResource, filterSearchBundle } from './filter.ts';
import { checkNarratives } from './narrative.ts';
import { narrowedSearch } from './narrow.ts';
import { httpUpstream, rewriteLinks, UpstreamError, type Upstream, type UpstreamResponse } from './upstream.ts';
import { CONDITIONAL_HEADERS, precondition, preconditionFailed, UPSTREAM_CONDITIONS, validatorsOf, type Validators } from './conditional.ts';
import { applyOperation, knownOperation, operationsProblem } from './operations.ts';
import { PAGE_PARAM, pageLinks } from './page-links.ts';
import { connectedIncludes, includesOf, refill, type Refilled } from './refill.ts';
import { FHIR_JSON, isRefusal, operationOutcome, refusalResponse, type GuardResponse } from './responses.ts';
import { outcomeText, publicOutcome, type IssueText, type UpstreamErrorReport } from './upstream-outcome.ts';
import { accessTokenOf, InvalidTokenError, VerifierUnavailableError } from './verify-token.ts';
import { boundKey, createDpopCheck, DpopError, dpopChallenge, type DpopCheck } from './dpop.ts';
import type { FhirBundle, FhirBundleEntry, FhirInteraction, FhirRequest, FhirResource, PagePosition, Refusal, TokenContext } from './types.ts';
import type { ResourcePolicy } from '../privacy/pipeline.ts';
import { corsHeaders, preflightHeaders, type OriginCheck } from './cors.ts';
import { requestIdOf } from './request-id.ts';
import { DATA_CSP, HSTS, SECURITY_HEADERS } from '../net/security-headers.ts';

/** A request as it arrives, in any framework. */
export interface GuardRequest {
  method: string;
  /** The path below the FHIR base as it arrives: "/Patient/pat-1", "/metadata", "/" (a leading slash is optional; a "?query" is split off). */
  path: string;
  /** The query string ("name=smith&_count=10", with or without "?") or URLSearchParams. */
  query?: string | URLSearchParams;
  /** Request headers; names in any case, as node:http gives them (repeated headers as arrays). */
  headers: Readonly<Record<string, string | readonly string[] | undefined>>;
  /** The parsed JSON body (a resource, a Bundle, a JSON Patch array), or the form of POST Type/_search as URLSearchParams or a string. */
  body?: unknown;
  remoteAddress?: string;
  /** The body could not be taken (400, 413, 415): refused whatever the token, which is still verified so that the audit says who sent it. */
  bodyRefusal?: Refusal;
}

/** A request as the guard works on it: path without leading slash, parsed query, lower-case headers. */
export interface ReceivedRequest extends FhirRequest {
  headers: Record<string, string | undefined>;
  remoteAddress?: string;
  /** The body could not be taken (400, 413, 415): refused whatever the token, which is still verified so that the audit says who sent it. */
  bodyRefusal?: Refusal;
}

/** What the audit sink learns about each access, allowed or refused. */
export interface AccessRecord {
  request: ReceivedRequest;
  token?: TokenContext;
  interaction?: FhirInteraction;
  status: number;
  /** Resources returned or written ("Type/id"). */
  resources: string[];
  /** Every patient whose data was returned or written (as stored: a de-identified answer's real patients). */
  patients: string[];
  /** The patients each of `resources` names, when it names some (a batch's resources belong to several). */
  resourcePatients?: Record<string, string[]>;
  requestId?: string;
  /** How the data went out, for the audit entities: PSEUDED when the answers were de-identified. */
  securityLabels?: { system: string; code: string; display?: string }[];
  /** The labels (`meta.security`) each of `resources` carried, when it carried some: whom its record may name it to. */
  resourceLabels?: Record<string, { system?: string; code: string; display?: string }[]>;
}

export interface GuardOptions {
  /** The public FHIR base URL: what clients call, and the `aud` of their tokens. */
  base: string;
  /** Token verification, e.g. createGuardVerifier: none by default, as the signature alone cannot tell a revoked token. */
  verify: (token: string) => Promise<TokenContext>;
  /** How the guard reaches the FHIR server; default: httpUpstream to `upstreamBase`. */
  upstream?: Upstream;
  /** The upstream's own base URL, rewritten to `base` in links and fullUrls. */
  upstreamBase: string;
  /** `_include`/`_revinclude` targets the token may not see: strip them (default), or refuse (403) every search with includes the guard could thin (includesRefused). */
  includes?: 'strip' | 'refuse';
  /** Narratives with active content in writes: refuse with 400 (default) or sanitise. */
  narratives?: 'refuse' | 'sanitize';
  /** Operations (`$name`) that may pass; every other operation is refused. */
  allowOperations?: readonly string[];
  /**
   * Called for every request before its answer goes out; when it fails, the guard answers 503. Required:
   * `false` records nothing, for tests and benchmarks (a guard that forgot it would serve unrecorded).
   */
  audit: ((record: AccessRecord) => Promise<void>) | false;
  /** The SMART configuration served at `{base}/.well-known/smart-configuration`; default: the issuer's own, fetched from it. */
  smartConfiguration?: () => Promise<unknown>;
  /** The authorization server (`iss` of the tokens), for the default `smartConfiguration`. */
  issuer?: string;
  /** What a token may see of each resource beyond its scopes (labels, consent, obligations); see server/privacy/pipeline.ts. */
  resourcePolicy?: ResourcePolicy;
  /** Checks DPoP proofs of key-bound tokens (RFC 9449); default: createDpopCheck() with replay detection in this process. */
  dpop?: DpopCheck;
  /** The Provenance of a write (without its target), passed to the upstream with it; see UpstreamRequest.provenance. */
  provenance?: (token: TokenContext, kind: 'create' | 'update' | 'delete') => FhirResource | undefined;
  /** Browser origins that may call the FHIR base (CORS); default none. See allowOrigins in cors.ts. */
  allowedOrigins?: OriginCheck;
  /** Told every unexpected failure, which the client gets as a 500 OperationOutcome without its details; default: console.error. */
  onError?: (err: unknown) => void;
  /**
   * Told every error of the FHIR server the guard passes on, and the outcome entries (warnings) of a page or a
   * successful write's or operation's OperationOutcome whose text the client did not get, with their original text (which the
   * client gets only when the guard hides nothing from its token, see publicOutcome); default: console.warn, one line.
   */
  onUpstreamError?: (report: UpstreamErrorReport) => void;
  /**
   * A further policy after the scopes allowed an interaction: a refusal stops it. It comes before the paging
   * parameters are read: a paging link's request is the interaction as asked (its `_page` among the params).
   */
  authorize?: (token: TokenContext, interaction: FhirInteraction) => Refusal | undefined | Promise<Refusal | undefined>;
  /**
   * The secret (16+ characters) that seals paging links (`?_page=`); every instance behind one base needs
   * the same, else a link given by one is refused by another. Default: random per process.
   */
  pagingKey?: string;
  /**
   * The FHIR server's own paging parameters (offsets, cursors, page tokens), refused from clients (400) besides
   * those of common servers (PAGING_PARAMS in page-links.ts): an offset of the client's could probe where hidden
   * matches lie.
   */
  pagingParams?: readonly string[];
}

const SMART_SECURITY = {
  service: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/restful-security-service', code: 'SMART-on-FHIR' }] }],
};

/** A resource's `meta.security` codings, as an audit entity records them. */
const labelsOf = (resource: FhirResource) => (Array.isArray(resource.meta?.security) ? resource.meta.security : [])
  .filter((c) => typeof c?.code === 'string')
  .map(({ system, code, display }: { system?: unknown; code?: unknown; display?: unknown }) =>
    ({ ...(typeof system === 'string' && { system }), code: code as string, ...(typeof display === 'string' && { display }) }));

const touched = (resources: FhirResource[], patients: string[] = []) => {
  const named = resources.filter((r) => r.id).map((r) => [`${r.resourceType}/${r.id}`, patientsOf(r), labelsOf(r)] as const);
  return {
    resources: named.map(([reference]) => reference),
    patients: [...new Set([...resources.flatMap((r) => patientsOf(r)), ...patients])],
    resourcePatients: Object.fromEntries(named.filter(([, owners]) => owners.length).map(([reference, owners]) => [reference, owners])),
    resourceLabels: Object.fromEntries(named.filter(([, , labels]) => labels.length).map(([reference, , labels]) => [reference, labels])),
  };
};

/** An interaction carried out: the answer, the resources it returned or wrote, and patients it touched beyond theirs. */
interface Performed {
  response: GuardResponse;
  resources: FhirResource[];
  /** The patients of a Binary's securityContext: its data is theirs, though it names none itself. */
  patients?: string[];
  /** A read's version as the token sees it, for a conditional read. */
  validators?: Validators;
}

const matchCount = (bundle: FhirBundle) => (bundle.entry ?? []).filter((e) => e.resource && (e.search?.mode ?? 'match') === 'match').length;

/**
 * `total` only when it is true: the upstream's when the guard filters nothing out of the token's answers,
 * else the page's own count when the page holds every match there is (`read`: the upstream pages it was
 * made of, when they are all of them from the first, so that each of the upstream's matches was seen). The
 * upstream's count of a filtered search counts what the guard hides on other pages too (and `_count=0` asks
 * for nothing else). Whether hidden matches lie on one upstream page or several makes no difference.
 */
function withTotal(filtered: FhirBundle, upstream: FhirBundle, read: readonly FhirBundle[] | undefined, filtering: boolean): FhirBundle {
  const { total: _, ...rest } = filtered;
  if (!filtering) return upstream.total === undefined ? rest : { ...rest, total: upstream.total };
  // A server that counts only once it reaches the last match tells it there.
  const counted = upstream.total ?? read?.at(-1)?.total;
  const seen = read?.reduce((n, page) => n + matchCount(page), 0);
  return counted !== undefined && seen === counted ? { ...rest, total: matchCount(filtered) } : rest;
}

/** The versions in a history Bundle: its entries but the policy's own (the break-the-glass hint). */
const versionCount = (bundle: FhirBundle) => (bundle.entry ?? []).filter((e) => e.search?.mode !== 'outcome').length;

const bundleResources = (bundle: FhirBundle) => (bundle.entry ?? []).flatMap((e) => (e.resource ? [e.resource] : []));

/** The interactions answered in pages. */
const PAGED = new Set(['search-type', 'search-system', 'history-type', 'history-system', 'history-instance', 'operation']);

/** Where the client follows a page link: the path it asked, a POSTed `_search` as the search it is. */
const publicPath = (request: ReceivedRequest) => request.path.replace(/(^|\/)_search$/, '');

/**
 * Upstream pages the guard reads after the first for one answer, to fill a filtered page and to find whether
 * anything the token may see follows it (see refill.ts); when they run out, the answer ends there.
 */
const READ_AHEAD_PAGES = 50;
/** What asks the FHIR server to include other resources in a search's answer. */
const INCLUDE_PARAMS: ReadonlySet<string> = new Set(['_include', '_revinclude']);

/** An upstream page read for a filtered answer: its link (when the guard can follow it again), its items and which of them the token sees. */
interface ReadPage {
  link?: string;
  bundle: FhirBundle;
  items: FhirBundleEntry[];
  inScope: boolean[];
  visible: boolean[];
  hasNext: boolean;
}

export function createGuard(guardOptions: GuardOptions) {
  const options = withDefaults(guardOptions);
  const includes = options.includes ?? 'strip';
  const checkDpop = options.dpop ?? createDpopCheck();
  const smartConfiguration = options.smartConfiguration ?? (options.issuer ? issuerConfiguration(options.issuer) : undefined);
  const narratives = options.narratives ?? 'refuse';
  const pages = pageLinks(options.pagingKey, options.pagingParams);
  const onError = options.onError ?? ((err: unknown) => console.error('smart-auth guard: unexpected failure', err));
  const onUpstreamError = options.onUpstreamError ?? ((report: UpstreamErrorReport) => console.warn(`smart-auth guard: the FHIR server answered ${report.status}`, JSON.stringify(report)));
  // The headers of every answer, as the authorization server's own.
  const secured = { ...SECURITY_HEADERS, 'content-security-policy': DATA_CSP, ...(options.base.startsWith('https:') && { 'strict-transport-security': HSTS }) };
  // No condition: the upstream's 304 or 412 would come before the rules (the guard answers them, see conditional.ts).
  // `allowedWrite`: a write that passed every rule and the guard's own check of its conditions takes If-Match along.
  const passHeaders = (headers: Record<string, string | undefined>, allowedWrite = false) => Object.fromEntries(
    ['prefer', 'x-request-id', ...(allowedWrite ? UPSTREAM_CONDITIONS : [])].filter((h) => headers[h]).map((h) => [h, headers[h]!]),
  );

  /** What is stored at `path`, read for the rules: never with the client's conditions (a 304 would hide it). */
  const readStored = (request: ReceivedRequest, path: string) =>
    options.upstream.send({ method: 'GET', path, headers: passHeaders({ 'x-request-id': request.headers['x-request-id'] }) });

  /** `allowedWrite`: a write that passed every rule and its conditions, with its Provenance if any. */
  async function send(request: ReceivedRequest, method: string, path: string, body?: unknown, allowedWrite?: { provenance?: FhirResource }): Promise<UpstreamResponse> {
    const provenance = allowedWrite?.provenance;
    return options.upstream.send({ method, path, headers: passHeaders(request.headers, Boolean(allowedWrite)), body, ...(provenance && { provenance }) });
  }

  const rewrite = (body: unknown) => rewriteLinks(body, options.upstreamBase, options.base);

  function answer(status: number, body: unknown, upstream?: UpstreamResponse): GuardResponse {
    // One person's data must not be served to another from a shared cache.
    const headers: Record<string, string> = { 'content-type': FHIR_JSON, 'cache-control': 'private, no-store' };
    for (const name of ['etag', 'last-modified']) {
      const value = upstream?.headers.get(name);
      if (value) headers[name] = value;
    }
    const location = upstream?.headers.get('location');
    if (location) headers.location = location.replace(options.upstreamBase, options.base);
    return { status, headers, body: rewrite(body) };
  }

  /** A resource the token may not see does not exist, as far as it can tell. */
  const notFound = (interaction: FhirInteraction): Refusal =>
    ({ status: 404, code: 'not-found', message: `${interaction.type}/${interaction.id ?? ''} is not known` });

  /** Hidden by the resource policy: 404 like anything else that does not exist, or the break-the-glass hint. */
  function hidden(token: TokenContext, interaction: FhirInteraction): Refusal | Performed {
    const hint = options.resourcePolicy?.hiddenOutcome(token);
    return hint ? { response: answer(404, hint), resources: [] } : notFound(interaction);
  }
  const admit = async (token: TokenContext, resource: FhirResource) =>
    (options.resourcePolicy ? options.resourcePolicy.admit(token, resource) : resource);

  /** Whether the token may learn which ids the resource policy hides from it (see checkWrite); without a policy only the views hide. */
  const mayLearnHiddenIds = (token: TokenContext) =>
    !options.resourcePolicy || options.resourcePolicy.mayLearnHiddenIds?.(token) === true;

  /** `decided`: what the policy already told of some of its resources (see ResourcePolicy.bundle). */
  const finish = async (token: TokenContext, bundle: FhirBundle, decided?: ReadonlyMap<FhirResource, boolean>) =>
    (options.resourcePolicy ? options.resourcePolicy.bundle(token, bundle, decided) : bundle);

  /**
   * Whether the guard hides nothing from the token: no resource policy or further authorization, a scope
   * that reads every type of every patient unrestricted, and the audit trail. Labels and consent can hide data from any token.
   */
  const seesEverything = (token: TokenContext | undefined) =>
    Boolean(token) && !options.resourcePolicy && !options.authorize && viewsFor(token!, '*', 'read').some(isUnrestricted) && mayReadAuditTrail(token!);

  /**
   * An error of the FHIR server: never a body other than an OperationOutcome (a resource is not filtered
   * here), and the OperationOutcome's free text only for a token that sees everything: it names and quotes
   * other resources. Whoever runs the guard is told the original (onUpstreamError).
   */
  function passUpstreamError(request: ReceivedRequest, token: TokenContext | undefined, upstream: UpstreamResponse): GuardResponse {
    reportUpstream(request, upstream.status, outcomeText(upstream.body));
    const whole = seesEverything(token) && (upstream.body as FhirResource | undefined)?.resourceType === 'OperationOutcome';
    return answer(upstream.status, whole ? upstream.body : publicOutcome(upstream.body, upstream.status), upstream);
  }

  const reportUpstream = (request: ReceivedRequest, status: number, issues: IssueText[] | undefined) =>
    onUpstreamError({ status, method: request.method, path: request.path, requestId: request.headers['x-request-id'], issues });

  /**
   * A page's outcome entries (HAPI FHIR puts its warnings there) name and quote other resources as an error
   * does, and are passed on as one (passUpstreamError): whole only to a token that sees everything, else their
   * coded part, and whoever runs the guard is told the text the client did not get.
   */
  function publicOutcomes(request: ReceivedRequest, token: TokenContext, page: FhirBundle): FhirBundle {
    const outcomes = (page.entry ?? []).filter((e) => e.search?.mode === 'outcome');
    if (!outcomes.length || seesEverything(token)) return page;
    reportUpstream(request, 200, outcomes.flatMap((e) => outcomeText(e.resource) ?? []));
    return { ...page, entry: page.entry!.map((e) => (outcomes.includes(e) ? { ...e, resource: publicOutcome(e.resource, 200) } : e)) };
  }

  /**
   * A successful answer that is an OperationOutcome, as a page's outcome entries: a write's (Prefer:
   * return=OperationOutcome, its warnings) or an operation's ($validate's, which quotes what the validated
   * resource references).
   */
  function publicAnswered(request: ReceivedRequest, token: TokenContext, upstream: UpstreamResponse): unknown {
    if ((upstream.body as FhirResource | undefined)?.resourceType !== 'OperationOutcome' || seesEverything(token)) return upstream.body;
    reportUpstream(request, upstream.status, outcomeText(upstream.body));
    return publicOutcome(upstream.body, upstream.status);
  }

  async function read(request: ReceivedRequest, token: TokenContext, interaction: FhirInteraction): Promise<Performed | Refusal> {
    const instance = `${interaction.type}/${interaction.id}`;
    const path = interaction.kind === 'vread' ? `${instance}/_history/${interaction.versionId}` : interaction.kind === 'history-instance' ? interaction.page?.link ?? `${instance}/_history` : instance;
    const upstream = await send(request, 'GET', path);
    if (upstream.status === 404 || upstream.status === 410) return notFound(interaction);
    if (upstream.status >= 400) return { response: passUpstreamError(request, token, upstream), resources: [] };
    if (interaction.kind !== 'read' && !(await currentAdmitted(request, token, interaction))) return hidden(token, interaction);
    if (interaction.kind === 'history-instance') {
      // A resource none of whose versions the token may see does not exist for it: an empty history would say it does.
      const shown = await shownPage(request, token, interaction, upstream.body as FhirBundle, startOf(interaction), historyScope(token, 'history-instance'));
      if (versionCount(shown.bundle) === 0 && shown.items > 0) return shown.inScope === 0 ? notFound(interaction) : hidden(token, interaction);
      return pageAnswer(shown.bundle, upstream);
    }
    const kind = interaction.kind as 'read' | 'vread';
    const context = await securityContext(request, token, kind, upstream.body as FhirResource);
    const inScope = filterResource(upstream.body as FhirResource, token, kind, context);
    if (!inScope) return notFound(interaction);
    const visible = await admit(token, inScope);
    // The context stands in for the Binary's sensitivity too: its labels and the patient's consent apply.
    if (!visible || (context && !(await admit(token, context)))) return hidden(token, interaction);
    const stored = upstream.body as FhirResource;
    const response = answer(200, visible, upstream);
    // De-identification shifts dates: the real lastUpdated is neither told (Last-Modified) nor probed (If-Modified-Since).
    const trueDate = visible.meta?.lastUpdated === stored.meta?.lastUpdated;
    if (!trueDate) delete response.headers['last-modified'];
    const validators = validatorsOf(stored, response.headers.etag);
    if (!trueDate) delete validators.lastUpdated;
    if (validators.etag) response.headers.etag = validators.etag;
    return { response, resources: [visible], patients: context && patientsOf(context), validators };
  }

  /**
   * Whether the resource policy admits the current version, for a vread or a history: labels only go up, so
   * an older version, from before a label was raised, is as sensitive as the current one. A deleted resource
   * has no current version, and then each version is checked on its own.
   */
  async function currentAdmitted(request: ReceivedRequest, token: TokenContext, interaction: FhirInteraction): Promise<boolean> {
    if (!options.resourcePolicy) return true;
    const current = await readStored(request, `${interaction.type}/${interaction.id}`);
    if (current.status === 404 || current.status === 410) return true;
    return current.status === 200 && Boolean(await admit(token, current.body as FhirResource));
  }

  /**
   * What a Binary's securityContext names, read from upstream when the token is bound to patients and
   * the context is not a Patient (which needs no read): the Binary is visible only if that resource is.
   */
  async function securityContext(request: ReceivedRequest, token: TokenContext, kind: 'read' | 'vread', resource: FhirResource): Promise<FhirResource | undefined> {
    const target = securityContextOf(resource);
    if (!target || target.type === 'Patient' || viewsFor(token, 'Binary', kind).every((view) => view.patients === undefined)) return undefined;
    // Not the client's conditional headers: a 304 would hide the Binary.
    const upstream = await readStored(request, `${target.type}/${target.id}`);
    return upstream.status === 200 ? upstream.body as FhirResource : undefined;
  }

  /** The part of an upstream page in the token's scope: a search's (with its includes) or a history's, whose items are all but outcomes. */
  interface Scope { history: boolean; inScope: (page: FhirBundle) => FhirBundle }
  const searchScope = (token: TokenContext): Scope => ({ history: false, inScope: (page) => filterSearchBundle(page, token) });
  const historyScope = (token: TokenContext, kind: 'history-instance' | 'history-type' | 'history-system'): Scope =>
    ({ history: true, inScope: (page) => filterHistoryBundle(page, token, kind) });
  const itemsOf = (bundle: FhirBundle, scope: Scope) =>
    (bundle.entry ?? []).filter((e) => (scope.history ? e.search?.mode !== 'outcome' : (e.search?.mode ?? 'match') === 'match'));

  /** What one page shows, and of the upstream items it went through how many there were and how many the token's views hold. */
  interface Shown { bundle: FhirBundle; items: number; inScope: number }

  /**
   * A page as the client gets it (a search's, a history's, an operation's), from the upstream `page` that
   * starts at `start` (its link is undefined for a new search), with `total` only when true and paging links
   * sealed (page-links.ts). A filtered page is refilled (refill.ts): it shows as many items as an upstream page
   * holds, taken from the following upstream pages when the rules hide some, and keeps no link that counts
   * hidden ones: `next` resumes right after its last item and only when an item the token may see follows,
   * `last` and `previous` are dropped.
   */
  async function shownPage(
    request: ReceivedRequest, token: TokenContext, interaction: FhirInteraction, upstreamPage: FhirBundle, start: { link?: string; skip: number }, scope: Scope,
  ): Promise<Shown> {
    const page = publicOutcomes(request, token, upstreamPage);
    if (!filtersAnswers(token, interaction) && start.skip === 0) return wholePage(request, token, page, scope);
    // The search as the client made it, on every page: the policy checks its matches against it (ResourcePolicy.visible).
    const search = interaction.page ? interaction.page.search ?? '' : interaction.params.toString();
    const read = (bundle: FhirBundle, link: string | undefined) => readPage(token, bundle, link, scope, new URLSearchParams(search));
    const seen = [await read(page, start.link ?? belowUpstream(linkOf(page, 'self')))];
    let decided: Refilled | 'more';
    while ((decided = refill(seen, start.skip, seen.length <= READ_AHEAD_PAGES)) === 'more') {
      const link = nextPage(seen.at(-1)!.bundle)!;
      const upstream = await send(request, 'GET', link);
      if (upstream.status !== 200) throw new UpstreamError(502, `the FHIR server answered ${upstream.status} for a following page`);
      seen.push(await read(upstream.body as FhirBundle, link));
    }
    const composed = composedPage(seen, decided.taken, scope);
    const inScope = scope.inScope(composed);
    // The policy's decisions on the items read stand: each item is evaluated once.
    const told = new Map(seen.flatMap(({ items, inScope: held, visible }) => items.flatMap((e, i) => (held[i] && e.resource ? [[e.resource, visible[i]] as const] : []))));
    // Every upstream page from the first was read, and this page holds every item the token sees of them.
    const everything = !interaction.page && start.skip === 0 && !decided.next && !seen.at(-1)!.hasNext;
    const { link: _, ...totalled } = withTotal(connectedIncludes(await finish(token, inScope, told)), page, everything ? seen.map((p) => p.bundle) : undefined, true);
    const resume = decided.next && seen[decided.next.page].link;
    const first = belowUpstream(linkOf(page, 'first'));
    const link = await sealed(request, token, [
      ...(seen[0].link ? [{ relation: 'self', position: { link: seen[0].link, skip: start.skip, search } }] : []),
      ...(first ? [{ relation: 'first', position: { link: first, skip: 0, search } }] : []),
      ...(resume ? [{ relation: 'next', position: { link: resume, skip: decided.next!.item, search } }] : []),
    ]);
    const went = decided.taken.flatMap(({ page: at, from, to }) => seen[at].inScope.slice(from, to));
    return { bundle: link.length ? { ...totalled, link } : totalled, items: went.length, inScope: went.filter(Boolean).length };
  }

  /** An upstream page as it is, for a token whose answers the guard filters nothing out of: every link kept (sealed), the upstream's total. */
  async function wholePage(request: ReceivedRequest, token: TokenContext, page: FhirBundle, scope: Scope): Promise<Shown> {
    const inScope = scope.inScope(page);
    const { link: _, ...totalled } = withTotal(await finish(token, inScope), page, [page], false);
    const link = await sealed(request, token, (page.link ?? []).flatMap(({ relation, url }) => {
      const position = belowUpstream(url);
      return position === undefined ? [] : [{ relation, position: { link: position, skip: 0 } }];
    }));
    return { bundle: link.length ? { ...totalled, link } : totalled, items: itemsOf(page, scope).length, inScope: itemsOf(inScope, scope).length };
  }

  /** An upstream page for a filtered answer of `search`: which of its items the token's views hold and which the resource policy shows. */
  async function readPage(token: TokenContext, bundle: FhirBundle, link: string | undefined, scope: Scope, search: URLSearchParams): Promise<ReadPage> {
    const items = itemsOf(bundle, scope);
    // The items alone: whether the page's includes may be shown is decided for the page shown.
    const held = new Set(scope.inScope({ ...bundle, entry: items }).entry ?? []);
    const visible = await Promise.all(items.map(async (e) =>
      held.has(e) && (!options.resourcePolicy || Boolean(e.resource && (await options.resourcePolicy.visible(token, e.resource, search))))));
    return { link, bundle, items, inScope: items.map((e) => held.has(e)), visible, hasNext: nextPage(bundle) !== undefined };
  }

  /**
   * The upstream entries of a refilled page, before the rules: the items taken from each page read (the
   * hidden ones among them too, which the rules then leave out as on any page), the includes that belong to
   * the items shown of their page, and the first page's outcomes.
   */
  function composedPage(seen: ReadPage[], taken: Refilled['taken'], scope: Scope): FhirBundle {
    const items: FhirBundleEntry[] = [];
    const included = new Map<string, FhirBundleEntry>();
    for (const { page, from, to } of taken) {
      const { bundle, items: all, visible } = seen[page];
      items.push(...all.slice(from, to));
      const shown = all.slice(from, to).flatMap((e, i) => (visible[from + i] && e.resource ? [e.resource] : []));
      const includes = (bundle.entry ?? []).filter((e) => !scope.history && e.search?.mode === 'include');
      for (const entry of includesOf(includes, shown)) included.set(`${entry.resource!.resourceType}/${entry.resource!.id}`, entry);
    }
    const outcomes = (seen[0].bundle.entry ?? []).filter((e) => e.search?.mode === 'outcome');
    return { ...seen[0].bundle, entry: [...items, ...included.values(), ...outcomes] };
  }

  /** Paging links as the guard's, followed at the path the client asked (a POSTed `_search` by GET). */
  async function sealed(request: ReceivedRequest, token: TokenContext, links: { relation: string; position: PagePosition }[]) {
    const path = publicPath(request);
    const at = path ? `${options.base}/${path}` : options.base;
    return Promise.all(links.map(({ relation, position }) => pages.seal(position, path, token).then((page) => ({ relation, url: `${at}?${PAGE_PARAM}=${page}` }))));
  }

  /** Whether the guard may take resources out of the token's answers (scopes bound or restricted, or the resource policy). */
  const filtersAnswers = (token: TokenContext, interaction: FhirInteraction) =>
    Boolean(options.resourcePolicy) || !viewsFor(token, interaction.type ?? '*', interaction.kind).every(isUnrestricted);

  /**
   * A page shown: the answer, and its resources for the audit. Not the FHIR server's ETag or Last-Modified:
   * they are of its own answer, whose hidden matches they may count in (the newest match's date).
   */
  const pageAnswer = (shown: FhirBundle, upstream: UpstreamResponse): Performed =>
    ({ response: answer(upstream.status, shown), resources: bundleResources(shown) });
  /**
   * The query to send: element subsetting upstream could drop the subject or category a view checks, or
   * the labels and patient references the resource policy reads, so whole resources are asked for then
   * (FHIR lets a server return more than was asked).
   */
  function unsubsetted(token: TokenContext, interaction: FhirInteraction, query: URLSearchParams): string {
    const params = new URLSearchParams(query);
    if (filtersAnswers(token, interaction)) {
      params.delete('_elements');
      params.delete('_summary');
    }
    return params.toString();
  }

  async function search(request: ReceivedRequest, token: TokenContext, interaction: FhirInteraction): Promise<Performed | Refusal> {
    const history = interaction.kind === 'history-type' || interaction.kind === 'history-system';
    const path = history ? (interaction.type ? `${interaction.type}/_history` : '_history') : interaction.type ?? '';
    const views = viewsFor(token, interaction.type ?? '*', interaction.kind);
    const query = unsubsetted(token, interaction, history ? new URLSearchParams(interaction.params) : narrowedSearch(interaction.type, interaction.params, views));
    const upstream = await send(request, 'GET', interaction.page?.link ?? (query ? `${path}?${query}` : path));
    if (upstream.status >= 400) return { response: passUpstreamError(request, token, upstream), resources: [] };
    const scope = history ? historyScope(token, interaction.kind as 'history-type' | 'history-system') : searchScope(token);
    const shown = await shownPage(request, token, interaction, upstream.body as FhirBundle, startOf(interaction), scope);
    return pageAnswer(shown.bundle, upstream);
  }

  /** Where the page asked starts: a linked page's position, or the start of a new search's first page. */
  const startOf = (interaction: FhirInteraction) => interaction.page ?? { skip: 0 };

  /** An upstream link below the upstream base ("Observation?…", or "?_getpages=…" at the base itself); undefined when it points elsewhere. */
  function belowUpstream(url: string | undefined): string | undefined {
    const base = options.upstreamBase;
    if (url?.startsWith(`${base}/`)) return url.slice(base.length + 1);
    return url?.startsWith(`${base}?`) ? url.slice(base.length) : undefined;
  }

  const linkOf = (bundle: FhirBundle, relation: string) => bundle.link?.find((l) => l.relation === relation)?.url;
  /** The upstream's next page, below its base; none when the link points elsewhere. */
  const nextPage = (bundle: FhirBundle) => belowUpstream(linkOf(bundle, 'next'));

  /**
   * Everything a write is checked against before it is sent: its narrative, the stored version (read
   * from upstream), the token's views and the resource policy. The resource to send, or a refusal.
   * `effect`: for a write that names no new version (a writing operation), the version it would leave.
   */
  async function checkedWrite(
    request: ReceivedRequest, token: TokenContext, interaction: FhirInteraction, effect?: (stored: FhirResource) => FhirResource | Refusal,
  ): Promise<{ resource?: FhirResource; existing?: FhirResource } | Refusal> {
    let resource = interaction.resource;
    if (resource) {
      const checked = checkNarratives(resource, narratives);
      if (isRefusal(checked)) return checked;
      resource = checked.resource as FhirResource;
    }
    if (interaction.kind === 'patch' && !viewsFor(token, String(interaction.type), 'patch').some(isUnrestricted)) {
      // The result of a patch is only known after it is applied: a bounded token could move data out of its patient.
      return { status: 403, code: 'forbidden', message: 'PATCH is not available to a token limited to patients or categories; use PUT' };
    }
    let existing: FhirResource | undefined;
    let stored: Validators | undefined;
    if (interaction.kind !== 'create') {
      // The stored version as it is: the client's conditions are checked against it below, after the rules.
      const current = await readStored(request, `${interaction.type}/${interaction.id}`);
      const gone = current.status === 404 || current.status === 410;
      if (current.status === 200) {
        existing = current.body as FhirResource;
        stored = validatorsOf(existing, current.headers.get('etag'));
      } else if (!gone) return unreadable(interaction, current.status);
      else if (interaction.kind !== 'update' || effect) return notFound(interaction);
      else {
        // An update that (re)creates: a deleted resource's last version stands as the stored one (labels only go up).
        const last = await lastVersion(request, interaction);
        if (isRefusal(last)) return last;
        existing = last;
      }
      // A write on data the token may not see is refused as if the data did not exist.
      if (existing && !(await admit(token, existing))) return notFound(interaction);
    }
    if (effect && existing) {
      const after = effect(existing);
      if (isRefusal(after)) return after;
      resource = after;
    }
    const kind = interaction.kind as 'create' | 'update' | 'patch' | 'delete';
    const problem = checkWrite(token, kind, resource, existing, mayLearnHiddenIds(token));
    if (problem) return problem;
    const prepared = options.resourcePolicy?.prepareWrite?.(token, { kind, resource, existing, patch: request.body }) ?? { resource };
    if (isRefusal(prepared)) return prepared;
    // The conditions last: a 412 only for a stored version the token may see and change.
    if (kind !== 'create' && precondition(request.method, request.headers, stored) !== 'pass') return preconditionFailed;
    return { ...prepared, existing };
  }

  const unreadable = (interaction: FhirInteraction, status: number): Refusal =>
    ({ status: 502, code: 'exception', message: `the stored ${interaction.type}/${interaction.id} could not be read (the FHIR server answered ${status})` });

  /** The newest version in the resource's history (FHIR lists it first), for a resource with no current one: deleted, or never created. */
  async function lastVersion(request: ReceivedRequest, interaction: FhirInteraction): Promise<FhirResource | undefined | Refusal> {
    const history = await readStored(request, `${interaction.type}/${interaction.id}/_history`);
    if (history.status === 404 || history.status === 410) return undefined;
    if (history.status !== 200) return unreadable(interaction, history.status);
    return (history.body as FhirBundle).entry?.find((e) => e.resource)?.resource;
  }

  async function write(request: ReceivedRequest, token: TokenContext, interaction: FhirInteraction): Promise<Performed | Refusal> {
    const checked = await checkedWrite(request, token, interaction);
    if (isRefusal(checked)) return checked;
    const { resource, existing } = checked;
    const method = { create: 'POST', update: 'PUT', patch: 'PATCH', delete: 'DELETE' }[interaction.kind as 'create'];
    const path = interaction.kind === 'create' ? String(interaction.type) : `${interaction.type}/${interaction.id}`;
    const provenance = interaction.kind === 'patch' ? undefined : options.provenance?.(token, interaction.kind as 'create' | 'update' | 'delete');
    const upstream = await send(request, method, path, interaction.kind === 'patch' ? request.body : resource, { provenance });
    if (upstream.status >= 400) return { response: passUpstreamError(request, token, upstream), resources: [] };
    const written = storedBy(upstream, resource);
    // The stored version too: a Consent moved to another patient, or deleted, no longer applies to its old one.
    for (const item of existing ? [...written, existing] : written) options.resourcePolicy?.written(item);
    return { response: answer(upstream.status, publicAnswered(request, token, upstream), upstream), resources: written };
  }

  /**
   * What a successful write stored, for its record and the policy: the FHIR server's answer when it is the
   * resource (return=representation); else (return=minimal, or an OperationOutcome for return=OperationOutcome)
   * the resource sent, with the id of the Location header when it had none (a create).
   */
  function storedBy(upstream: UpstreamResponse, sent: FhirResource | undefined): FhirResource[] {
    const answered = upstream.body as FhirResource | undefined;
    if (answered && typeof answered === 'object' && typeof answered.resourceType === 'string' && answered.resourceType !== 'OperationOutcome') return [answered];
    if (!sent) return [];
    const located = /\/([A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[^/]+)?$/.exec(upstream.headers.get('location') ?? '');
    return [sent.id === undefined && located?.[1] === sent.resourceType ? { ...sent, id: located[2] } : sent];
  }

  /** Whether the token may make the interaction at all: its scopes, then the authorize hook. A refusal, or undefined. */
  async function authorized(token: TokenContext, interaction: FhirInteraction): Promise<Refusal | undefined> {
    const decision = decide(token, interaction, { allowOperations: options.allowOperations });
    if (decision.effect === 'deny') return decision.refusal;
    return options.authorize?.(token, interaction);
  }

  /**
   * `includes: 'refuse'`: a search with `_include` or `_revinclude` (any modifier) is refused before the FHIR server
   * is asked, unless the guard hides nothing from the token. Refusing only when a hidden resource came back would
   * tell that it exists, where a missing one is not included either; so every include the rules could thin is refused.
   */
  function includesRefused(token: TokenContext, params: URLSearchParams): Refusal | undefined {
    if (includes !== 'refuse' || seesEverything(token)) return undefined;
    const name = [...params.keys()].find((key) => INCLUDE_PARAMS.has(key.split(':')[0]));
    return name === undefined ? undefined
      : { status: 403, code: 'forbidden', message: `the search parameter ${name} is not allowed: this server refuses includes whenever its rules could leave some out` };
  }

  /** The rules for an authorized interaction beyond its scopes: the include policy, the resource policy's search refusals and its translation. */
  function policed(token: TokenContext, interaction: FhirInteraction): FhirInteraction | Refusal {
    const searched = ['search-type', 'search-system', 'history-type', 'history-system', 'operation'].includes(interaction.kind);
    const unsafe = searched ? includesRefused(token, interaction.params) ?? options.resourcePolicy?.searchRefusal?.(token, interaction.params, interaction.type) : undefined;
    if (unsafe) return unsafe;
    return options.resourcePolicy?.translateRequest?.(token, interaction) ?? interaction;
  }

  /** Every rule that decides an interaction before anything is read or written. The interaction to carry out, or a refusal. */
  async function admitted(token: TokenContext, interaction: FhirInteraction): Promise<FhirInteraction | Refusal> {
    return (await authorized(token, interaction)) ?? policed(token, interaction);
  }

  /**
   * One interaction, decided and carried out; batch and transaction entries come through here too. Its paging
   * parameters are checked after the token's authorization, so that a token refused the interaction learns
   * nothing from them (the same 403 with or without).
   */
  async function perform(request: ReceivedRequest, token: TokenContext, asked: FhirInteraction): Promise<Performed | Refusal> {
    const refused = await authorized(token, asked);
    if (refused) return refused;
    const interaction = await paged(request, token, asked);
    if (isRefusal(interaction)) return interaction;
    const translated = policed(token, interaction);
    if (isRefusal(translated)) return translated;
    if (translated === interaction) return carryOut(request, token, interaction);
    // Read back from pseudonyms: a failure must not name the real ids the client was never to learn.
    const result = await carryOut(request, token, translated);
    if (isRefusal(result)) return result.code === 'not-found' ? notFound(interaction) : { ...result, message: `the ${interaction.kind} could not be carried out` };
    const { status } = result.response;
    if (status === 404) return hidden(token, interaction);
    return status < 400 ? result : { response: answer(status, operationOutcome('error', 'exception', `the FHIR server answered ${status}`)), resources: [] };
  }

  /**
   * A request for a page the guard linked: the interaction with that upstream link and without parameters
   * (they were checked when the search was made; the rules apply again to every page); a refusal for raw
   * paging parameters and for a page link not given to this token for this path.
   */
  async function paged(request: ReceivedRequest, token: TokenContext, interaction: FhirInteraction): Promise<FhirInteraction | Refusal> {
    if (!PAGED.has(interaction.kind)) return interaction;
    const page = await pages.open(interaction.params, publicPath(request), token);
    if (page === undefined) return interaction;
    return isRefusal(page) ? page : { ...interaction, params: new URLSearchParams(), page };
  }

  async function carryOut(request: ReceivedRequest, token: TokenContext, interaction: FhirInteraction): Promise<Performed | Refusal> {
    switch (interaction.kind) {
      case 'read': case 'vread': case 'history-instance':
        return read(request, token, interaction);
      case 'search-type': case 'search-system': case 'history-type': case 'history-system':
        return search(request, token, interaction);
      case 'create': case 'update': case 'patch': case 'delete':
        return write(request, token, interaction);
      case 'batch': case 'transaction':
        return bundle(request, token, interaction);
      case 'operation':
        return operation(request, token, interaction);
      default:
        return { status: 405, code: 'not-supported', message: `${interaction.kind} is not supported` };
    }
  }

  /** An allowed operation: its answer goes through the same filters as a read or a search. */
  async function operation(request: ReceivedRequest, token: TokenContext, interaction: FhirInteraction): Promise<Performed | Refusal> {
    if (knownOperation(interaction.operation ?? '')?.effect === 'write') return writingOperation(request, token, interaction);
    if (interaction.id) {
      const instance = await read({ ...request, path: `${interaction.type}/${interaction.id}` }, token, { ...interaction, kind: 'read' });
      if (isRefusal(instance)) return instance;
    }
    const query = unsubsetted(token, interaction, new URLSearchParams(request.query));
    const upstream = interaction.page
      ? await send(request, 'GET', interaction.page.link)
      : await send(request, request.method, query ? `${request.path}?${query}` : request.path, request.body);
    if (upstream.status >= 400) return { response: passUpstreamError(request, token, upstream), resources: [] };
    const body = upstream.body as FhirResource | undefined;
    if (body?.resourceType === 'Bundle') {
      const shown = await shownPage(request, token, interaction, body as FhirBundle, startOf(interaction), searchScope(token));
      return pageAnswer(shown.bundle, upstream);
    }
    if (body?.resourceType && body.resourceType !== 'OperationOutcome' && body.resourceType !== 'Parameters') {
      const inScope = filterResource(body, token, 'read');
      const visible = inScope && (await admit(token, inScope));
      if (!visible) return notFound(interaction);
      return { response: answer(upstream.status, visible, upstream), resources: [visible] };
    }
    // Parameters are no data of their own (a $stats answer holds Observations): each resource in them is judged on its own.
    const held = body?.resourceType === 'Parameters' ? nestedResources(body) : [];
    for (const inner of held) if (!(await shownOnItsOwn(token, inner))) return notFound(interaction);
    return { response: answer(upstream.status, publicAnswered(request, token, upstream), upstream), resources: held };
  }

  /** Whether the token would be shown the resource by a read of it: its read views, then the resource policy. */
  const shownOnItsOwn = async (token: TokenContext, resource: FhirResource) =>
    Boolean(filterResource(resource, token, 'read')) && (!options.resourcePolicy || (await options.resourcePolicy.visible(token, resource)));

  /**
   * A writing operation is checked as the update it amounts to: the stored resource as the operation would
   * leave it must pass every rule an update does (compartments, Consent writes, labels only go up).
   */
  async function writingOperation(request: ReceivedRequest, token: TokenContext, interaction: FhirInteraction): Promise<Performed | Refusal> {
    const name = interaction.operation ?? '';
    const update: FhirInteraction = { kind: 'update', type: interaction.type, id: interaction.id, params: new URLSearchParams() };
    const checked = await checkedWrite(request, token, update, (stored) => applyOperation(name, stored, request.body));
    if (isRefusal(checked)) return checked;
    const query = request.query.toString();
    const upstream = await send(request, 'POST', query ? `${request.path}?${query}` : request.path, request.body);
    if (upstream.status >= 400) return { response: passUpstreamError(request, token, upstream), resources: [] };
    if (checked.existing) options.resourcePolicy?.written(checked.existing);
    return { response: answer(upstream.status, publicAnswered(request, token, upstream), upstream), resources: checked.resource ? [checked.resource] : [] };
  }

  /** Batch: every entry decided and carried out on its own. Transaction: all entries allowed, or none runs. */
  async function bundle(request: ReceivedRequest, token: TokenContext, interaction: FhirInteraction): Promise<Performed | Refusal> {
    // Each entry with its own conditions (ifMatch, …), never the conditions sent with the Bundle.
    const outer = Object.fromEntries(Object.entries(request.headers).filter(([name]) => !CONDITIONAL_HEADERS.includes(name)));
    // An entry without a resource has no body: never the Bundle's, which would reach an operation as its input.
    const entries: ReceivedRequest[] = entryRequests(request.body as FhirBundle).map((entry) => ({ ...request, body: undefined, ...entry, headers: { ...outer, ...entry.headers } }));
    const classified = entries.map((entry) => classify(entry));
    if (interaction.kind === 'transaction') {
      for (const entry of classified) {
        if (isRefusal(entry)) return entry;
        if (entry.kind !== 'create' && entry.kind !== 'update' && entry.kind !== 'read' && entry.kind !== 'search-type') {
          return { status: 403, code: 'forbidden', message: `${entry.kind} is not allowed inside a transaction through the guard` };
        }
        const allowed = await admitted(token, entry);
        if (isRefusal(allowed)) return allowed;
      }
      // All or nothing: every write is checked (stored versions included) before the first one runs.
      for (const [i, entry] of (classified as FhirInteraction[]).entries()) {
        if (entry.kind !== 'create' && entry.kind !== 'update') continue;
        const checked = await checkedWrite(entries[i], token, entry);
        if (isRefusal(checked)) return checked;
      }
    }
    const responses: FhirBundleEntry[] = [];
    const resources: FhirResource[] = [];
    const patients: string[] = [];
    for (const [i, entry] of classified.entries()) {
      const result = isRefusal(entry) ? entry : conditioned(entries[i], await perform(entries[i], token, entry));
      if (isRefusal(result)) {
        responses.push({ response: { status: String(result.status), outcome: operationOutcome('error', result.code, result.message) as FhirResource } });
        continue;
      }
      resources.push(...result.resources);
      patients.push(...(result.patients ?? []));
      responses.push({
        ...(result.response.body && typeof result.response.body === 'object' && 'resourceType' in (result.response.body as object) ? { resource: result.response.body as FhirResource } : {}),
        response: { status: String(result.response.status), ...(result.response.headers.etag && { etag: result.response.headers.etag }), ...(result.response.headers.location && { location: result.response.headers.location }) },
      });
    }
    const type = interaction.kind === 'transaction' ? 'transaction-response' : 'batch-response';
    return { response: { status: 200, headers: { 'content-type': FHIR_JSON }, body: { resourceType: 'Bundle', type, entry: responses } }, resources, patients };
  }

  /**
   * The access as the audit records it: the stored resources and patients behind what the obligations
   * showed (pseudonyms), and the labels of the disclosure (see ResourcePolicy.audited).
   */
  const audited = (token: TokenContext | undefined, resources: FhirResource[], patients: string[]) =>
    (token && options.resourcePolicy?.audited?.(token, { resources, patients })) || { resources, patients, labels: [] };

  async function capabilities(request: ReceivedRequest): Promise<GuardResponse> {
    const upstream = await send(request, 'GET', 'metadata');
    if (upstream.status >= 400) return passUpstreamError(request, undefined, upstream);
    const statement = upstream.body as { rest?: { security?: unknown }[] };
    const rest = (statement.rest ?? [{}]).map((r, i) => (i === 0 ? { ...r, security: SMART_SECURITY } : r));
    // What the guard answers in, whatever the FHIR server behind it speaks (see classify: another _format is 406).
    return { ...answer(200, { ...statement, format: ['json'], rest }, upstream), headers: { 'content-type': FHIR_JSON, 'access-control-allow-origin': '*' } };
  }

  /** What one request answered, and what it showed: the resources and patients as the client saw them. */
  interface Handled { response: GuardResponse; record: AccessRecord; shown: { resources: FhirResource[]; patients: string[] } }

  async function handle(request: ReceivedRequest): Promise<Handled> {
    const record: AccessRecord = { request, status: 0, resources: [], patients: [], requestId: request.headers['x-request-id'] };
    const done = (response: GuardResponse, resources: FhirResource[] = [], patients: string[] = []): Handled => {
      record.status = response.status;
      return { response, record, shown: { resources, patients } };
    };
    if (request.method === 'GET' && request.path === '.well-known/smart-configuration' && smartConfiguration) {
      return done({ status: 200, headers: { 'content-type': 'application/json', 'access-control-allow-origin': '*' }, body: await smartConfiguration() });
    }
    if (request.method === 'GET' && request.path === 'metadata') return done(await capabilities(request));

    const sent = accessTokenOf(request.headers.authorization);
    if (request.bodyRefusal) {
      if (sent) record.token = await options.verify(sent.token).catch(() => undefined);
      return done(refusalResponse(request.bodyRefusal, options.base, Boolean(sent)));
    }
    if (!sent) return done(refusalResponse({ status: 401, code: 'login', message: 'an access token is required' }, options.base, false));
    try {
      const token = await options.verify(sent.token);
      await checkDpop({
        ...sent, accessToken: sent.token, jkt: boundKey(token.claims), proof: request.headers.dpop, method: request.method,
        url: `${options.base}/${request.path.replace(/^\/+/, '')}`,
      });
      record.token = token;
    } catch (err) {
      if (err instanceof DpopError) {
        const refused = refusalResponse({ status: 401, code: 'login', message: err.message }, options.base, true);
        return done({ ...refused, headers: { ...refused.headers, 'www-authenticate': dpopChallenge(err.error, err.message) } });
      }
      if (err instanceof InvalidTokenError) return done(refusalResponse({ status: 401, code: 'login', message: err.message }, options.base, true));
      if (err instanceof VerifierUnavailableError) {
        onError(err); // the client is told to come back; whoever runs the guard, why (issuer down, wrong credentials)
        return done(refusalResponse({ status: 503, code: 'transient', message: 'the access token cannot be checked right now' }, options.base, true));
      }
      throw err;
    }
    const interaction = classify(request);
    if (isRefusal(interaction)) return done(refusalResponse(interaction, options.base, true));
    record.interaction = interaction;
    const result = conditioned(request, await perform(request, record.token, interaction));
    if (isRefusal(result)) return done(refusalResponse(result, options.base, true));
    return done(result.response, result.resources, result.patients);
  }

  /**
   * A conditional read is answered here, after every rule: 304 or 412 only for a resource the token sees,
   * by the version it sees; anything else is answered as without the conditions.
   */
  function conditioned(request: ReceivedRequest, result: Performed | Refusal): Performed | Refusal {
    if (isRefusal(result) || !result.validators || result.response.status !== 200) return result;
    const outcome = precondition(request.method, request.headers, result.validators);
    if (outcome === 'failed') return preconditionFailed;
    if (outcome === 'pass') return result;
    const { 'content-type': _, ...headers } = result.response.headers;
    return { ...result, response: { status: 304, headers } };
  }

  /**
   * The patients a refused request was about: those it names, and, for a verified token, the patients of
   * the stored resource it targets (a hidden Observation of another patient is still that patient's).
   */
  async function refusedPatients(record: AccessRecord): Promise<string[]> {
    const { token, interaction } = record;
    // For de-identified answers the request names pseudonyms: the patients and the target as stored.
    const named = audited(token, [], namedPatients(record.request)).patients;
    const translated = token && interaction ? options.resourcePolicy?.translateRequest?.(token, interaction) : undefined;
    const target = translated && !isRefusal(translated) ? translated : interaction;
    if (!token || !target?.type || !target.id || target.type === 'Patient') return named;
    const stored = await readStored(record.request, `${target.type}/${target.id}`)
      .catch(() => undefined);
    return stored?.status === 200 && stored.body ? [...new Set([...named, ...patientsOf(stored.body as FhirResource)])] : named;
  }

  /** A request that failed on the way: answered and recorded all the same. */
  const failed = (request: ReceivedRequest, refusal: Refusal): Handled => ({
    response: refusalResponse(refusal, options.base, true),
    record: { request, status: refusal.status, resources: [], patients: [], requestId: request.headers['x-request-id'] },
    shown: { resources: [], patients: [] },
  });

  /** Answers one request; fails closed: an upstream failure is a 502, anything unexpected a 500, an audit failure a 503. */
  async function answerRequest(request: ReceivedRequest): Promise<GuardResponse> {
    let outcome: Handled;
    try {
      outcome = await handle(request);
    } catch (err) {
      if (err instanceof UpstreamError) {
        outcome = failed(request, { status: 502, code: 'exception', message: err.message });
      } else {
        // Nothing about the failure goes to the client (whatever framework runs the guard); whoever runs it learns it.
        onError(err);
        outcome = failed(request, { status: 500, code: 'exception', message: 'the request could not be processed' });
      }
    }
    if (options.audit) {
      try {
        // The stored resources and real patients behind what was shown: when they cannot be told, nothing goes out.
        const { labels, ...stored } = audited(outcome.record.token, outcome.shown.resources, outcome.shown.patients);
        Object.assign(outcome.record, touched(stored.resources, stored.patients), labels.length ? { securityLabels: labels } : {});
        if (outcome.record.status >= 400 && !outcome.record.patients.length) outcome.record.patients = await refusedPatients(outcome.record);
        await options.audit(outcome.record);
      } catch {
        return refusalResponse({ status: 503, code: 'exception', message: 'the access could not be recorded, so it is refused' }, options.base, true);
      }
    }
    return outcome.response;
  }

  return {
    async handle(arriving: GuardRequest): Promise<GuardResponse> {
      const request = received(arriving);
      const origin = request.headers.origin;
      // The id the audit records, sent upstream and returned, whatever the client sent.
      const id = requestIdOf(request.headers['x-request-id']);
      request.headers['x-request-id'] = id;
      // A CORS preflight carries no token and reads nothing: answered here, not audited.
      if (request.method === 'OPTIONS') return { status: 204, headers: { ...secured, ...(await preflightHeaders(origin, options.allowedOrigins)), 'x-request-id': id } };
      const response = await answerRequest(request);
      return { ...response, headers: { ...secured, ...response.headers, ...(await corsHeaders(origin, options.allowedOrigins)), 'x-request-id': id } };
    },
  };
}

/** A choice left out takes its default; one the guard does not know would be followed as neither. */
export function oneOf(name: string, value: string | undefined, allowed: readonly string[]): void {
  if (value !== undefined && !allowed.includes(value)) throw new TypeError(`${name} must be one of ${allowed.join(', ')}, got "${value}"`);
}

function withDefaults(options: GuardOptions): GuardOptions & Required<Pick<GuardOptions, 'upstream'>> {
  // Plain JavaScript callers get no type error.
  if (!options.verify) throw new TypeError('the guard needs `verify`: createGuardVerifier({ issuer, audience: base, mode, … }) with a way to see revoked tokens');
  if (typeof options.audit !== 'function' && options.audit !== false) {
    throw new TypeError('the guard needs `audit`: a sink that records every access (balpAudit(base, auditRepository(url)), or smart-auth\'s database), or `false` to record none, which is not for production');
  }
  const operations = operationsProblem(options.allowOperations ?? []);
  if (operations) throw new TypeError(`allowOperations ${operations}`);
  oneOf('includes', options.includes, ['strip', 'refuse']);
  oneOf('narratives', options.narratives, ['refuse', 'sanitize']);
  return {
    ...options,
    upstream: options.upstream ?? httpUpstream({ baseUrl: options.upstreamBase }),
  };
}

/** The issuer's SMART configuration, read from it and kept for five minutes; unreachable: 502. */
function issuerConfiguration(issuer: string): () => Promise<unknown> {
  let cached: { at: number; document: unknown } | undefined;
  return async () => {
    if (cached && Date.now() - cached.at < 300_000) return cached.document;
    const url = `${issuer.replace(/\/+$/, '')}/.well-known/smart-configuration`;
    let document: unknown;
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
      if (!res.ok) throw new Error(`answered ${res.status}`);
      document = await res.json();
    } catch (err) {
      throw new UpstreamError(502, 'the authorization server\'s SMART configuration cannot be read', { cause: err });
    }
    cached = { at: Date.now(), document };
    return document;
  };
}

/** The request as the guard works on it. */
export function received(request: GuardRequest): ReceivedRequest {
  const [path, inPath] = request.path.split(/\?(.*)/s, 2);
  const query = new URLSearchParams(request.query ?? inPath ?? '');
  const headers: Record<string, string | undefined> = {};
  for (const [name, value] of Object.entries(request.headers)) {
    if (value !== undefined) headers[name.toLowerCase()] = typeof value === 'string' ? value : value.join(', ');
  }
  return {
    method: request.method.toUpperCase(),
    path: path.replace(/^\/+/, '').replace(/\/+$/, ''),
    query,
    headers,
    body: request.body,
    remoteAddress: request.remoteAddress,
    ...(request.bodyRefusal && { bodyRefusal: request.bodyRefusal }),
  };
}

export type Guard = ReturnType<typeof createGuard>;
