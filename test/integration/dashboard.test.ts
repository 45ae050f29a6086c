import assert from 'node:assert/strict';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type Browser, chromium, type Page } from 'playwright-core';
import { writeDeployJson } from '../helpers/deploy-fixtures.ts';
import { useDeployTestbed } from '../helpers/deploy-testbed.ts';
import { RUN_TAG } from '../helpers/nix.ts';
import { cli } from '../helpers/server.ts';

/** Screenshots of every page, kept as test artifacts (test-artifacts/ is not committed). */
const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts/dashboard/', import.meta.url));

/** The dashboard's script and stylesheet, as the server must serve them. */
const ASSETS = new URL('../../src/server/dashboard/assets/', import.meta.url);

/**
 * The Content-Security-Policy every dashboard response must carry, written out here rather than
 * taken from the code under test: scripts and styles from the server only, nothing inline.
 */
const EXPECTED_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
  "form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/** Debian's Chromium, as .ci/run installs it. */
const CHROMIUM = process.env.CAIRN_TEST_CHROMIUM ?? '/usr/bin/chromium';

/** A plain profile referencing `deps`, whose activation prints `lines` lines, one every `delay` s. */
function system(name: string, deps: string[], options: { lines?: number; delay?: number } = {}) {
  const v = (d: string) => `$dep_${d.replace(/[^A-Za-z0-9]/g, '_')}`;
  const lines = options.lines ?? 1;
  const delay = options.delay ?? 0;
  const body = `i=1; while [ $i -le ${lines} ]; do echo "${name} step $i"; sleep ${delay}; i=$((i+1)); done`;
  return {
    name,
    deps,
    script: `mkdir -p $out/bin; printf '#!/bin/sh\\n%s\\n' '${body}' > $out/bin/activate; chmod +x $out/bin/activate; echo ${deps.map(v).join(' ')} > $out/deps`,
  };
}

/** Waits up to 5 s for `ready` to hold. */
async function waitFor(ready: () => boolean): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!ready() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
}

function leaf(name: string) {
  return { name, script: `mkdir -p $out; echo ${name} ${RUN_TAG} > $out/tag` };
}

describe('dashboard in Chromium', () => {
  let browser: Browser;
  // Registered before the testbed's, so that the browser is gone before the server stops.
  after(() => browser?.close());
  const bed = useDeployTestbed();
  let page: Page;
  let paths: Map<string, string>;
  /** Every Content-Security-Policy violation on any page the tests open, as Chromium reports it. */
  const violations: string[] = [];

  const deployFile = (agentPaths: Record<string, string>) =>
    writeDeployJson(bed.world.profiles, { agents: agentPaths });
  const newestDeployment = async (agent: string) => {
    const r = await cli(['deploy', 'list', '--agent', agent, '--json'], bed.world.env);
    return (JSON.parse(r.stdout) as Array<{ id: number; rolloutId: number }>)[0]!;
  };
  const shot = (name: string) => page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });

  before(async () => {
    await mkdir(ARTIFACTS, { recursive: true });
    paths = await bed.world.publish([
      leaf('tool-1.0'),
      leaf('tool-2.0'),
      system('web-1', ['tool-1.0']),
      system('web-2', ['tool-2.0'], { lines: 8, delay: 0.5 }),
      system('db-1', ['tool-1.0']),
    ]);
    for (const name of ['alpha', 'beta']) await bed.agent(name);
    const tagged = await cli(['agent', 'tag', 'alpha', 'canary', 'eu-west'], bed.world.env);
    assert.equal(tagged.code, 0, tagged.stderr);
    const first = await cli(
      ['deploy', 'activate', await deployFile({ alpha: paths.get('web-1')!, beta: paths.get('db-1')! })],
      bed.world.env,
    );
    assert.equal(first.code, 0, first.stdout + first.stderr);
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    // The rollback button asks first; say yes.
    page.on('dialog', (d) => void d.accept());
    // Violations two ways, on every page: Chromium's console errors and the DOM's own events
    // (reported through a binding, which the policy does not govern).
    page.on('console', (m) => {
      if (/Content Security Policy/i.test(m.text())) violations.push(`${page.url()}: ${m.text()}`);
    });
    await page.exposeFunction('cairnCspViolation', (v: string) => violations.push(v));
    await page.addInitScript({
      content: `document.addEventListener('securitypolicyviolation', (e) =>
        cairnCspViolation(location.href + ': ' + e.violatedDirective + ' blocked ' + (e.blockedURI || 'inline')));`,
    });
  });
  it('signs in with a token into an HttpOnly, SameSite=Strict session and shows both agents', async () => {
    await page.goto(`${bed.server.url}/`);
    assert.match(page.url(), /\/login\?next=%2F$/);
    await shot('login');
    await page.fill('#token', 'cairn_not-a-real-token-at-all-aaaaaaaaaaaaaaaaaaa');
    await page.click('button[type=submit]');
    assert.match((await page.textContent('[role=alert]')) ?? '', /Cannot authenticate/);
    await page.fill('#token', bed.server.adminToken);
    await page.click('button[type=submit]');
    await page.waitForSelector('h1:text("Fleet")');
    const cookie = (await page.context().cookies()).find((c) => c.name === 'cairn_session')!;
    assert.equal(cookie.httpOnly, true);
    assert.equal(cookie.sameSite, 'Strict');
    assert.equal(await page.locator('tr[data-agent]').count(), 2);
    assert.equal(await page.locator('tr[data-agent="alpha"] .s-online').count(), 1);
    assert.equal(await page.locator('tr[data-agent="beta"] .s-succeeded').count(), 1);
    assert.deepEqual(await page.locator('tr[data-agent="alpha"] .tag').allTextContents(), [
      'canary',
      'eu-west',
    ]);
    await shot('fleet');
    await page.fill('input[name=q]', 'bet');
    await page.click('form.filters button');
    assert.equal(await page.locator('tr[data-agent]').count(), 1);
    assert.deepEqual(violations, [], 'the pages break the Content-Security-Policy');
  });

  it('refuses a form without the CSRF token and a page without a session', async () => {
    const cookie = (await page.context().cookies()).find((c) => c.name === 'cairn_session')!;
    const res = await fetch(`${bed.server.url}/agents/alpha/rollback`, {
      method: 'POST',
      headers: {
        Cookie: `cairn_session=${cookie.value}`,
        'Content-Type': 'application/x-www-form-urlencoded',
      },
      body: '_csrf=guess',
      redirect: 'manual',
    });
    assert.equal(res.status, 403);
    assert.equal(res.headers.get('content-security-policy'), EXPECTED_CSP);
    const anonymous = await fetch(`${bed.server.url}/agents/alpha`, { redirect: 'manual' });
    assert.equal(anonymous.status, 303);
    assert.equal(anonymous.headers.get('location'), '/login?next=%2Fagents%2Falpha');
    const login = await fetch(new URL(anonymous.headers.get('location')!, bed.server.url));
    assert.equal(login.status, 200);
    assert.equal(login.headers.get('content-security-policy'), EXPECTED_CSP);
  });

  it('serves its script and stylesheet, the files in src/server/dashboard/assets, under its CSP', async () => {
    for (const [name, type] of [
      ['app.js', 'text/javascript; charset=utf-8'],
      ['app.css', 'text/css; charset=utf-8'],
    ] as const) {
      const res = await fetch(`${bed.server.url}/static/${name}`);
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('content-type'), type);
      assert.equal(res.headers.get('content-security-policy'), EXPECTED_CSP);
      assert.equal(await res.text(), await readFile(new URL(name, ASSETS), 'utf8'));
    }
  });

  it('follows a running deployment: new log lines arrive without a reload', async () => {
    const started = await cli(
      ['deploy', 'activate', '--async', await deployFile({ alpha: paths.get('web-2')! })],
      bed.world.env,
    );
    assert.equal(started.code, 0, started.stderr);
    const d = await newestDeployment('alpha');
    await page.goto(`${bed.server.url}/deployments/${d.id}`);
    // A marker that a reload would wipe.
    await page.evaluate(() => {
      (globalThis as unknown as { marker: number }).marker = 1;
    });
    const before = await page.locator('#log .line').count();
    await page.waitForSelector('#log .line:text("web-2 step 6")', { timeout: 30_000 });
    assert.ok((await page.locator('#log .line').count()) > before);
    assert.equal(await page.evaluate(() => (globalThis as unknown as { marker?: number }).marker), 1);
    await shot('deployment-live');
    // At the end the page reloads itself to show the final state, no longer following.
    await page.waitForSelector('#log:not([data-events])', { timeout: 30_000 });
    assert.equal(await page.locator('#state.s-succeeded').count(), 1);
    await page.waitForSelector('table.diff');
    await shot('deployment-done');
  });

  it("shows the diff against the agent's previous deployment with a package's old and new version", async () => {
    const row = page.locator('table.diff tr[data-pname="tool"]');
    assert.equal(await row.count(), 1);
    const cells = await row.locator('td').allTextContents();
    assert.deepEqual(cells.slice(0, 4), ['upgraded', 'tool', '1.0', '2.0']);
    assert.equal(await page.locator('table.diff tr[data-pname="web"] td').first().textContent(), 'upgraded');
    await page.click('a:text("full diff")');
    await page.waitForSelector('h1:text("Closure diff")');
    assert.equal(await page.locator('table.diff tr[data-pname="tool"]').count(), 1);
    await shot('diff');
  });

  it('rolls back from the deployment page and the agent switches back', async () => {
    const d = await newestDeployment('alpha');
    await page.goto(`${bed.server.url}/deployments/${d.id}`);
    await page.click('button:text("Roll alpha back")');
    await page.waitForURL(/\/deployments\/\d+$/);
    assert.notEqual(page.url(), `${bed.server.url}/deployments/${d.id}`);
    await page.waitForSelector('#log:not([data-events])', { timeout: 30_000 });
    assert.equal(await page.locator('#state.s-succeeded').count(), 1);
    await shot('rollback');
    await page.click('a:text("alpha")');
    await page.waitForSelector('#current-path');
    assert.equal((await page.textContent('#current-path'))?.trim(), paths.get('web-1'));
    assert.equal(await page.locator('svg.chart circle').count(), 3);
    assert.deepEqual(await page.locator('#tags .tag').allTextContents(), ['canary', 'eu-west']);
    await shot('agent');
    const rb = await newestDeployment('alpha');
    await page.goto(`${bed.server.url}/rollouts/${rb.rolloutId}`);
    assert.equal(await page.locator('tr[data-deployment] .s-succeeded').count(), 1);
    await shot('rollout');
  });

  it('notices a page that breaks the Content-Security-Policy', async () => {
    // The check below must be able to fail: a page with an inline script and style, under the
    // same policy, served in place of a dashboard URL.
    const probe = `${bed.server.url}/csp-probe`;
    const earlier = violations.length;
    await page.route(probe, (route) =>
      route.fulfill({
        status: 200,
        headers: { 'content-type': 'text/html', 'content-security-policy': EXPECTED_CSP },
        body: '<!doctype html><p style="color: red">probe</p><script>document.title = "ran"</script>',
      }),
    );
    try {
      await page.goto(probe);
      await page.waitForLoadState('load');
      await waitFor(() => violations.length >= earlier + 2);
      assert.notEqual(await page.title(), 'ran');
      assert.ok(
        violations.slice(earlier).some((v) => /script-src/.test(v)),
        `no script-src violation in ${violations.slice(earlier)}`,
      );
    } finally {
      await page.unroute(probe);
      // The probe's own; those of the pages opened before stay for the next test.
      violations.splice(earlier);
    }
  });

  it('serves every page with the strict Content-Security-Policy, and no page breaks it', async () => {
    const d = await newestDeployment('alpha');
    const list = await cli(['deploy', 'list', '--agent', 'alpha', '--json'], bed.world.env);
    const ids = (JSON.parse(list.stdout) as Array<{ id: number }>).map((x) => x.id);
    assert.ok(ids.length >= 3, list.stdout);
    const pages: Array<[string, number]> = [
      ['/', 200],
      ['/?q=al&status=succeeded', 200],
      ['/agents/alpha', 200],
      ['/agents/beta', 200],
      [`/deployments/${d.id}`, 200],
      [`/deployments/${ids.at(-1)}`, 200],
      [`/rollouts/${d.rolloutId}`, 200],
      [`/diff?to=${d.id}`, 200],
      [`/diff?from=${ids.at(-1)}&to=${ids[1]}`, 200],
      ['/deployments/999999', 404],
      ['/agents/nobody', 404],
      ['/login', 200],
    ];
    for (const [path, status] of pages) {
      const res = await page.goto(`${bed.server.url}${path}`);
      assert.ok(res, path);
      assert.equal(res.status(), status, path);
      assert.equal(res.headers()['content-security-policy'], EXPECTED_CSP, path);
      await page.waitForLoadState('load');
      // Scripts run after load (the live log, the confirm dialogs): give them a moment.
      await page.waitForTimeout(200);
    }
    for (const asset of ['/static/app.js', '/static/app.css']) {
      const res = await fetch(`${bed.server.url}${asset}`);
      assert.equal(res.status, 200, asset);
      assert.equal(res.headers.get('content-security-policy'), EXPECTED_CSP, asset);
    }
    // This covers the pages the tests above opened too: the live log, the rollback, the diff.
    assert.deepEqual(violations, [], 'the pages break the Content-Security-Policy');
  });

  it('signs out: the session no longer opens pages', async () => {
    await page.goto(`${bed.server.url}/`);
    await page.click('button:text("Sign out")');
    await page.waitForURL(/\/login$/);
    await page.goto(`${bed.server.url}/`);
    assert.match(page.url(), /\/login/);
  });
});
