import { startTestServer, type TestServer } from '../support/server.ts';
import { Browser, form, hiddenValue } from '../support/oauth.ts';
describe('scratch', () => {
  let server: TestServer;
  let app: Awaited<ReturnType<TestServer['addClient']>>;
  before(async () => { server = await startTestServer(); app = await server.addClient({ auth: { kind: 'secret' } }); });
  after(() => server.stop());
  it('probes', async () => {
    const browser = new Browser();
    const start = await browser.follow(`${server.issuer}/authorize?${new URLSearchParams({
      response_type: 'code', client_id: app.client_id, redirect_uri: app.redirect_uri, scope: 'openid fhirUser user/*.rs', state: 'some-state',
      aud: server.fhirBase, code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256',
    })}`, server.issuer);
    const uid = /\/interaction\/([^/?]+)/.exec(start.url)![1];
    const csrf = hiddenValue(await start.res.text(), 'csrf');
    const post = async (path: string, data: Record<string, string>) => { const r = await browser.fetch(`${server.issuer}/interaction/${uid}/${path}`, { method: 'POST', body: form(data) }); return [r.status, (await r.text()).replace(/\s+/g, ' ').slice(0, 300)]; };
    console.log(await post('login', { csrf, username: 'dr.smith', password: 'demo-password-1' }));
    for (const p of ['second-factor', 'enrol', 'continue', 'passkey', 'passkey/options', 'login', 'consent']) console.log(p, await post(p, { csrf, otp: '123456', credential: '{}', purpose_of_use: 'BTG', btg_reason: 'x' }));
    for (const [m, u, b, t] of [['POST', '/register', '{bad', 'application/json'], ['POST', '/fhir/Observation', '{bad', 'application/fhir+json'], ['POST', '/token', 'grant_type=authorization_code&code[]=1', 'application/x-www-form-urlencoded'], ['GET', '/interaction/xyz', '', ''], ['POST', '/interaction/xyz/passkey', 'csrf=1', 'application/x-www-form-urlencoded'], ['POST', '/account/passkey/options', 'csrf=x', 'application/x-www-form-urlencoded'], ['GET', '/fhir/Patient?_count=99999999999999999999', '', ''], ['POST', '/introspect', 'token[]=a', 'application/x-www-form-urlencoded']]) {
      const r = await fetch(`${server.issuer}${u}`, { method: m, headers: t ? { 'content-type': t } : {}, body: m === 'GET' ? undefined : b });
      const text = await r.text();
      console.log(m, u, r.status, /at \S+ \(|\.ts:\d+|Error:/.test(text) ? 'STACK?' : '', text.replace(/\s+/g, ' ').slice(0, 200));
    }
  });
});
