import assert from 'node:assert/strict';
import { activeContent, checkNarratives, sanitizeNarrative } from '../../server/resource-server/narrative.ts';
import type { FhirResource, Refusal } from '../../server/resource-server/types.ts';

const XHTML = 'http://www.w3.org/1999/xhtml';
const div = (inner: string) => `<div xmlns="${XHTML}">${inner}</div>`;

// [name, narrative, what a finding must mention, what must not survive sanitizing]
const ATTACKS: [string, string, RegExp, RegExp][] = [
  ['script element', '<p>a</p><script>alert(1)</script><p>b</p>', /<script>/, /script|alert/i],
  ['uppercase script', '<SCRIPT SRC="https://evil.example/x.js"></SCRIPT>', /<script>/, /script|evil/i],
  ['prefixed script', '<h:script xmlns:h="http://www.w3.org/1999/xhtml">alert(1)</h:script>', /<script>/, /script|alert/i],
  ['unterminated script', '<p>ok</p><script>alert(1)', /<script>/, /script|alert/i],
  ['script with self-closing slash', '<script src="x.js"/><p>kept</p>', /<script>/, /script/i],
  ['iframe', '<iframe src="https://evil.example"></iframe>', /<iframe>/, /iframe|evil/i],
  ['object', '<object data="x.swf"><param name="a" value="b"/></object>', /<object>/, /object|param/i],
  ['embed', '<embed src="x.swf">', /<embed>/, /embed/i],
  ['form', '<form action="https://evil.example"><input name="pw"/></form>', /<form>/, /form|input/i],
  ['base', '<base href="https://evil.example/"/>', /<base>/, /base/i],
  ['meta refresh', '<meta http-equiv="refresh" content="0;url=https://evil.example"/>', /<meta>/, /meta|evil/i],
  ['link', '<link rel="stylesheet" href="https://evil.example/x.css"/>', /<link>/, /link|evil/i],
  ['style element', '<style>body { background: url(javascript:alert(1)) }</style>', /<style>/, /style|alert/i],
  ['svg onload', '<svg onload="alert(1)"><circle r="1"/></svg>', /<svg>/, /svg|alert/i],
  ['event handler', '<img src="x.png" onerror="alert(1)"/>', /onerror/, /onerror|alert/i],
  ['event handler without quotes', '<img src=x.png onerror=alert(1)>', /onerror/, /onerror|alert/i],
  ['uppercase event handler', '<p ONCLICK="alert(1)">x</p>', /ONCLICK/, /onclick|alert/i],
  ['event handler after slash', '<img/src="x.png"/onerror=alert(1)>', /onerror/, /onerror|alert/i],
  ['event handler with spaces around =', '<b onmouseover = "alert(1)">x</b>', /onmouseover/, /onmouseover|alert/i],
  ['javascript: href', '<a href="javascript:alert(1)">x</a>', /javascript: URL in href/, /javascript|alert/i],
  ['javascript: unquoted', '<a href=javascript:alert(1)>x</a>', /javascript: URL/, /javascript|alert/i],
  ['javascript: mixed case, spaces', '<a href="  JaVaScRiPt:alert(1)">x</a>', /javascript: URL/, /javascript|alert/i],
  ['javascript: with a tab inside', '<a href="jav\tascript:alert(1)">x</a>', /javascript: URL/, /ascript|alert/i],
  ['entity-encoded javascript: (hex)', '<a href="jav&#x61;script:alert(1)">x</a>', /javascript: URL/, /script|alert/i],
  ['entity-encoded javascript: (decimal, no semicolons)', '<a href="&#106&#97&#118&#97&#115&#99&#114&#105&#112&#116&#58alert(1)">x</a>', /javascript: URL/, /alert/i],
  ['entity-encoded colon and tab', '<a href="java&Tab;script&colon;alert(1)">x</a>', /javascript: URL/, /alert/i],
  ['double-encoded javascript:', '<a href="jav&amp;#x61;script:alert(1)">x</a>', /javascript: URL/, /alert/i],
  ['vbscript: src', '<img src="vbscript:msgbox(1)"/>', /vbscript: URL in src/, /vbscript|msgbox/i],
  ['data:text/html', '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">x</a>', /data: URL/, /data:|base64/i],
  ['data: svg image', '<img src="data:image/svg+xml,&lt;svg onload=alert(1)&gt;"/>', /data: URL/, /data:|alert/i],
  ['xlink:href javascript:', '<a xlink:href="javascript:alert(1)">x</a>', /javascript: URL in xlink:href/, /javascript|alert/i],
  ['style expression()', '<p style="width: expression(alert(1))">x</p>', /expression\(\)/, /expression|alert/i],
  ['style expression() with CSS escapes and comments', '<p style="width: e\\78 pr/**/ession(alert(1))">x</p>', /expression\(\)/, /ession|alert/i],
  ['style url(javascript:)', "<p style=\"background: url('javascript:alert(1)')\">x</p>", /script url\(\)/, /javascript|alert/i],
  ['raw-text element hiding a tag in an attribute', '<noscript><p title="</noscript><img src=x onerror=alert(1)>"></p></noscript>', /<noscript>/, /noscript|onerror|alert/i],
  ['textarea hiding a tag in an attribute', '<textarea><p title="</textarea><img src=x onerror=alert(1)>"></p></textarea>', /<textarea>/, /textarea|onerror|alert/i],
  ['script behind an HTML comment quirk', '<!--><script>alert(1)</script>-->', /<script>/, /script|alert/i],
  ['script behind a CDATA quirk', '<p><![CDATA[><script>alert(1)</script>]]></p>', /<script>/, /script|alert/i],
  ['script assembled by removing a comment', '<scr<!-- x -->ipt>alert(1)</scr<!-- -->ipt><p onclick="x">y</p>', /onclick/, /script>|alert|onclick/i],
];

describe('resource-server/narrative', () => {
  describe('activeContent and sanitizeNarrative', () => {
    for (const [name, inner, finding, gone] of ATTACKS) {
      it(`finds and removes: ${name}`, () => {
        const found = activeContent(div(inner));
        assert.ok(found.some((f) => finding.test(f)), `findings: ${JSON.stringify(found)}`);
        const clean = sanitizeNarrative(div(inner));
        assert.deepEqual(activeContent(clean), [], clean);
        assert.doesNotMatch(clean.replace(`xmlns="${XHTML}"`, ''), gone, clean);
        assert.ok(clean.startsWith(`<div xmlns="${XHTML}"`), clean);
        assert.ok(clean.endsWith('</div>'), clean);
      });
    }

    it('keeps what is around the removed content', () => {
      assert.equal(sanitizeNarrative(div('<p>a</p><script>alert(1)</script><p>b</p>')), div('<p>a</p><p>b</p>'));
      assert.equal(sanitizeNarrative(div('<img src="x.png" alt="X" onerror="alert(1)"/>')), div('<img src="x.png" alt="X"/>'));
      assert.equal(sanitizeNarrative(div('<a href="javascript:alert(1)" title="t">x</a>')), div('<a title="t">x</a>'));
      assert.equal(sanitizeNarrative(div('<script src="x.js"/><p>kept</p>')), div('<p>kept</p>'));
      assert.equal(sanitizeNarrative(div('<object><object>x</object>y</object><p>z</p>')), div('<p>z</p>'), 'nested elements of the same name');
      assert.equal(sanitizeNarrative(div('<meta charset="utf-8"><p>z</p>')), div('<p>z</p>'), 'void elements do not swallow the rest');
    });

    it('keeps the root div attributes, and wraps a narrative that has no single root div', () => {
      assert.equal(sanitizeNarrative(`<div xmlns="${XHTML}" class="n" onclick="x()"><p>a</p></div>`), `<div xmlns="${XHTML}" class="n"><p>a</p></div>`);
      assert.equal(sanitizeNarrative('<p>a</p><script>x</script>'), div('<p>a</p>'));
      assert.equal(sanitizeNarrative('<div>a</div><div>b</div>'), div('<div>a</div><div>b</div>'));
      assert.equal(sanitizeNarrative('plain text'), div('plain text'));
      assert.equal(sanitizeNarrative('<div>no namespace</div>'), div('no namespace'));
    });

    it('re-quotes attributes and escapes stray markup characters', () => {
      assert.equal(sanitizeNarrative(div("<p class=a title='say \"hi\"' onclick=x>1 < 2</p>")), div('<p class="a" title="say &quot;hi&quot;">1 &lt; 2</p>'));
    });

    it('leaves a plain narrative untouched', () => {
      const plain = div(
        '<h1>Hemoglobin A1c</h1><p class="x" style="color: red; font-weight: bold">Value: <b>7.2 %</b> (ref &lt; 5.7)</p>'
        + '<table border="1"><tr><th>When</th><td>2026-01-10</td></tr></table>'
        + '<a href="https://example.org/info?x=1&amp;y=2">more</a> <a href="#top">top</a> <a href="mailto:a@b.example">mail</a>'
        + '<img src="data:image/png;base64,iVBORw0KGgo=" alt="chart"/><br/><!-- generated --><ul><li>one</li></ul>'
        + '<p title="javascript is off">text that says javascript:alert(1) and &lt;script&gt; is only text</p>',
      );
      assert.deepEqual(activeContent(plain), []);
      assert.equal(sanitizeNarrative(plain), plain);
    });

    it('does not take text or attribute contents for tags', () => {
      assert.deepEqual(activeContent(div('<p title="<script>alert(1)</script>">a &lt;iframe&gt; b</p>')), []);
      assert.deepEqual(activeContent(div('<p>1 <3 and 2> 1</p>')), []);
    });

    it('flags a namespaced event handler and lists each finding once', () => {
      const found = activeContent(div('<script>a</script><script>b</script><p xlink:onclick="x">c</p>'));
      assert.equal(found.filter((f) => f === '<script> element').length, 1);
      assert.ok(found.some((f) => /xlink:onclick/.test(f)));
    });
  });

  describe('checkNarratives', () => {
    const unsafe = div('<p>x</p><img src="x" onerror="alert(1)"/>');
    const safe = div('<p>fine</p>');
    const observation = (narrative: string, extra: object = {}): FhirResource => ({
      resourceType: 'Observation', status: 'final', code: { text: 'x' }, text: { status: 'generated', div: narrative }, ...extra,
    });

    it('passes resources whose narratives are safe, unchanged', () => {
      const resource = observation(safe, { contained: [{ resourceType: 'Practitioner', id: 'p', text: { status: 'generated', div: safe } }] });
      for (const policy of ['refuse', 'sanitize'] as const) {
        const result = checkNarratives(resource, policy);
        assert.ok('resource' in result);
        assert.equal(result.resource, resource);
      }
      const none: FhirResource = { resourceType: 'Patient', id: 'p' };
      assert.ok('resource' in checkNarratives(none, 'refuse'));
    });

    it('refuses active content with 400 invalid, naming where it is', () => {
      const result = checkNarratives(observation(unsafe), 'refuse') as Refusal;
      assert.deepEqual([result.status, result.code], [400, 'invalid']);
      assert.match(result.message, /^narrative contains active content: text\.div: event handler attribute onerror on <img>/);
    });

    it('looks into contained resources, Bundle entries and Composition sections', () => {
      const contained = observation(safe, { contained: [{ resourceType: 'Patient', id: 'p', text: { status: 'generated', div: unsafe } }] });
      assert.match((checkNarratives(contained, 'refuse') as Refusal).message, /contained\[0\]\.text\.div/);
      const bundle: FhirResource = {
        resourceType: 'Bundle', type: 'transaction',
        entry: [{ resource: observation(safe), request: { method: 'POST', url: 'Observation' } }, { resource: observation(unsafe), request: { method: 'POST', url: 'Observation' } }],
      };
      assert.match((checkNarratives(bundle, 'refuse') as Refusal).message, /entry\[1\]\.resource\.text\.div/);
      const composition: FhirResource = { resourceType: 'Composition', section: [{ title: 'a', text: { status: 'generated', div: safe }, section: [{ text: { status: 'generated', div: unsafe } }] }] };
      assert.match((checkNarratives(composition, 'refuse') as Refusal).message, /section\[0\]\.section\[0\]\.text\.div/);
    });

    it('sanitizes a copy, leaving the input and its safe parts alone', () => {
      const resource = observation(unsafe, {
        subject: { reference: 'Patient/pat-1' },
        contained: [{ resourceType: 'Practitioner', id: 'p', text: { status: 'generated', div: safe } }, { resourceType: 'Patient', id: 'q', text: { status: 'generated', div: unsafe } }],
      });
      const before = structuredClone(resource);
      const result = checkNarratives(resource, 'sanitize');
      assert.ok('resource' in result);
      assert.deepEqual(resource, before, 'input not mutated');
      const out = result.resource as FhirResource & { text: { div: string; status: string }; contained: { text: { div: string } }[] };
      assert.equal(out.text.div, div('<p>x</p><img src="x"/>'));
      assert.equal(out.text.status, 'generated');
      assert.equal(out.contained[0].text.div, safe);
      assert.equal(out.contained[1].text.div, div('<p>x</p><img src="x"/>'));
      assert.deepEqual(out.subject, resource.subject);
      assert.deepEqual({ ...out, text: undefined, contained: undefined }, { ...before, text: undefined, contained: undefined });
    });

    it('ignores a `text` that is not a Narrative', () => {
      const resource: FhirResource = { resourceType: 'Observation', code: { text: '<script>alert(1)</script>' }, note: [{ text: '<script>' }] };
      assert.equal((checkNarratives(resource, 'sanitize') as { resource: FhirResource }).resource, resource);
    });
  });
});
