// The guard's paging links: sealed upstream links that only the access token they were given to may follow,
// at the path they were given for, until they expire; and no raw paging offset from the client.
import assert from 'node:assert/strict';
import { pageLinks } from '../../server/resource-server/page-links.ts';
import { tokenContext } from '../../server/resource-server/verify-token.ts';
import { isRefusal } from '../../server/resource-server/responses.ts';
import { pagingKeyOf } from '../../server/config.ts';

const BASE = 'https://fhir.example.org/r4';
const NOW = 1_900_000_000_000;
const token = (jti: string, client = 'app', exp = NOW / 1000 + 7200) =>
  tokenContext({ iss: 'https://auth.example.org', client_id: client, sub: 'u', jti, exp, scope: 'user/*.rs' }, BASE);
const LINK = 'Observation?patient=Patient%2Fpat-2&_count=1&_getpagesoffset=7';
const AT = { link: LINK, skip: 0 };

describe('page links', () => {
  const links = pageLinks(pagingKeyOf('a key encryption secret of 32 characters'));
  const page = (sealed: string) => new URLSearchParams({ _page: sealed });

  it('give back the upstream link, to its own token at its own path only, and nothing of it to read', async () => {
    const sealed = await links.seal(AT, 'Observation', token('j1'), NOW);
    assert.ok(!sealed.includes('getpagesoffset') && !Buffer.from(sealed.split('.')[3], 'base64url').toString('latin1').includes('offset'));
    assert.deepEqual(await links.open(page(sealed), 'Observation', token('j1'), NOW), AT);
    const refusal = async (params: URLSearchParams, path: string, t = token('j1'), now = NOW) => {
      const opened = await links.open(params, path, t, now);
      assert.ok(isRefusal(opened) && opened.status === 400 && opened.code === 'invalid', JSON.stringify(opened));
      return opened.message;
    };
    assert.match(await refusal(page(sealed), 'Observation', token('j2')), /another access token/);
    assert.match(await refusal(page(sealed), 'Observation', token('j1', 'other-app')), /another access token/);
    assert.match(await refusal(page(sealed), 'Condition'), /another search/);
    assert.match(await refusal(page(sealed), 'Observation', token('j1'), NOW + 3601_000), /expired/, 'an hour at most');
    const shortLived = await links.seal(AT, 'Observation', token('j3', 'app', NOW / 1000 + 60), NOW);
    assert.match(await refusal(page(shortLived), 'Observation', token('j3', 'app', NOW / 1000 + 60), NOW + 61_000), /expired/, 'never longer than its token');
    assert.match(await refusal(page(`${sealed}x`), 'Observation'), /not valid/);
    assert.match(await refusal(page('not-a-jwe'), 'Observation'), /not valid/);
    assert.match(await refusal(new URLSearchParams({ _page: sealed, _count: '50' }), 'Observation'), /alone/);
    const elsewhere = pageLinks(pagingKeyOf('another key encryption secret, 32 chars'));
    assert.match(await refusal(page(await elsewhere.seal(AT, 'Observation', token('j1'), NOW)), 'Observation'), /not valid/, 'sealed with another secret');
  });

  it('carry where a page starts inside an upstream page, which the client can neither read nor change', async () => {
    const sealed = await links.seal({ link: LINK, skip: 3 }, 'Observation', token('j1'), NOW);
    assert.deepEqual(await links.open(page(sealed), 'Observation', token('j1'), NOW), { link: LINK, skip: 3 });
    const parts = sealed.split('.');
    for (const at of [0, 10, parts[3].length - 1]) {
      const changed = [...parts];
      changed[3] = parts[3].slice(0, at) + (parts[3][at] === 'A' ? 'B' : 'A') + parts[3].slice(at + 1);
      const opened = await links.open(page(changed.join('.')), 'Observation', token('j1'), NOW);
      assert.ok(isRefusal(opened) && /not valid/.test(opened.message), `ciphertext changed at ${at}`);
    }
  });

  it('are followed at another instance with the same secret (a restart), not with a random key', async () => {
    const sealed = await links.seal(AT, 'Observation', token('j1'), NOW);
    assert.deepEqual(await pageLinks(pagingKeyOf('a key encryption secret of 32 characters')).open(page(sealed), 'Observation', token('j1'), NOW), AT);
    assert.ok(isRefusal(await pageLinks().open(page(sealed), 'Observation', token('j1'), NOW)));
    assert.throws(() => pageLinks('short'), /16 characters/);
  });

  it('refuse the paging offsets, cursors and page numbers of FHIR servers from the client, and leave other searches alone', async () => {
    const vendors = ['_getpagesoffset', '_getpages', '_offset', '_cursor', 'ct', '_page_token', '_pageToken', 'page', '_skip', '_start', '_skip:exact'];
    for (const name of vendors) {
      const opened = await links.open(new URLSearchParams({ code: 'x', [name]: '3' }), 'Observation', token('j1'), NOW);
      assert.ok(isRefusal(opened) && opened.status === 400 && opened.message.includes(name), name);
    }
    assert.equal(await links.open(new URLSearchParams({ code: 'x', _count: '3' }), 'Observation', token('j1'), NOW), undefined);
  });

  it('refuse the paging parameters named for the FHIR server behind the guard too, never the guard\'s own', async () => {
    const own = pageLinks(undefined, ['next_token']);
    const opened = await own.open(new URLSearchParams({ code: 'x', next_token: 'abc' }), 'Observation', token('j1'), NOW);
    assert.ok(isRefusal(opened) && opened.status === 400 && opened.message.includes('next_token'));
    assert.ok(isRefusal(await own.open(new URLSearchParams({ _offset: '1' }), 'Observation', token('j1'), NOW)), 'besides the known ones');
    assert.equal(await links.open(new URLSearchParams({ next_token: 'abc' }), 'Observation', token('j1'), NOW), undefined, 'unless named');
    assert.throws(() => pageLinks(undefined, ['_page']), /_page/);
  });
});
