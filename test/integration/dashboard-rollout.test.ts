import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { Browser, Page } from 'playwright-core';
import { launchChromium } from '../helpers/chromium.ts';
import { plainPackage, profileTarget, writeDeployJson } from '../helpers/deploy-fixtures.ts';
import { useDeployTestbed } from '../helpers/deploy-testbed.ts';
import { RUN_TAG } from '../helpers/nix.ts';
import { adminApi, cli } from '../helpers/server.ts';

/** Screenshots, kept as test artifacts (test-artifacts/ is not committed). */
const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts/dashboard/', import.meta.url));

const AGENTS = ['r1', 'r2', 'r3'];
/** Half the agents at once, then the rest only when someone promotes. */
const POLICY = { batches: ['50%', { size: '100%', advance: 'manual' }], bake: '0' };

describe('dashboard: a staged rollout in Chromium', () => {
  let browser: Browser;
  // Registered before the testbed's, so that the browser is gone before the server stops.
  after(() => browser?.close());
  const bed = useDeployTestbed();
  let page: Page;
  let paths: Map<string, string>;
  /** Every Content-Security-Policy violation on any page the tests open. */
  const violations: string[] = [];
  /** The staged rollouts the tests make: the promoted one, the paused one. */
  let promoted: number;
  let paused: number;

  /** Starts a staged rollout of `version` to every agent without following it; its id. */
  const stage = async (version: string) => {
    const file = await writeDeployJson(bed.world.profiles, {
      agents: Object.fromEntries(AGENTS.map((n) => [n, paths.get(`${version}-${RUN_TAG}`)!])),
      rollout: POLICY,
    });
    const r = await cli(['deploy', 'activate', '--async', file], bed.world.env);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    return Number(r.stdout.trim().split('\n')[0]);
  };
  const staged = async (id: number) =>
    ((await adminApi(bed.server, 'GET', `/rollouts/${id}`)) as { staged: { state: string } }).staged;
  const shot = (name: string) => page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
  /** Signs in with `token` in a new browser context. */
  const signIn = async (token: string): Promise<Page> => {
    const p = await (await browser.newContext()).newPage();
    p.on('dialog', (d) => void d.accept());
    p.on('console', (m) => {
      if (/Content Security Policy/i.test(m.text())) violations.push(`${p.url()}: ${m.text()}`);
    });
    await p.goto(`${bed.server.url}/`);
    await p.fill('#token', token);
    await p.click('button[type=submit]');
    await p.waitForSelector('h1:text("Fleet")');
    return p;
  };
  /** A form POST as a browser of `p` would send it, with `fields` (add `_csrf` yourself). */
  const post = async (p: Page, path: string, fields: Record<string, string>) => {
    const cookie = (await p.context().cookies()).find((c) => c.name === 'cairn_session')!;
    return await fetch(`${bed.server.url}${path}`, {
      method: 'POST',
      headers: {
        Cookie: `cairn_session=${cookie.value}`,
        'Content-Type': 'application/x-www-form-urlencoded',
      },
      body: new URLSearchParams(fields).toString(),
      redirect: 'manual',
    });
  };
  const csrfOf = async (p: Page) => (await p.locator('input[name=_csrf]').first().getAttribute('value'))!;
  /** The steering buttons on the page, by label. */
  const buttons = (p: Page) =>
    p.locator('[role=group][aria-label^="Steer rollout"] form button').allTextContents();

  before(async () => {
    await mkdir(ARTIFACTS, { recursive: true });
    paths = await bed.world.publish(['v1', 'v2', 'v3'].map((v) => plainPackage(`${v}-${RUN_TAG}`)));
    for (const n of AGENTS) await bed.agent(n);
    browser = await launchChromium();
    page = await signIn(bed.server.adminToken);
  });

  it('shows the batches, their gates, the threshold and why it waits, and follows the rollout live', async () => {
    promoted = await stage('v1');
    await page.goto(`${bed.server.url}/rollouts/${promoted}`);
    // A marker that a reload would wipe: what follows arrives over the page's event stream.
    await page.evaluate(() => {
      (globalThis as unknown as { marker: number }).marker = 1;
    });
    await page.waitForSelector('#rollout-waiting:has-text("waits for promote")', { timeout: 60_000 });
    assert.equal(await page.evaluate(() => (globalThis as unknown as { marker?: number }).marker), 1);
    assert.match(
      (await page.textContent('#rollout-waiting')) ?? '',
      /batch 2 of 2 \(100%\) waits for promote \(manual gate\)/,
    );
    assert.equal(await page.locator('#rollout-state.s-running').count(), 1);
    // Steered elsewhere (the API), the page follows without a reload: its region has no timer,
    // only the event stream.
    assert.equal(await page.locator('#rollout[data-events]:not([data-refresh])').count(), 1);
    await adminApi(bed.server, 'POST', `/rollouts/${promoted}/pause`);
    await page.waitForSelector('#rollout-state.s-paused', { timeout: 10_000 });
    await adminApi(bed.server, 'POST', `/rollouts/${promoted}/resume`);
    await page.waitForSelector('#rollout-waiting:has-text("waits for promote")', { timeout: 10_000 });
    assert.equal(await page.evaluate(() => (globalThis as unknown as { marker?: number }).marker), 1);
    const rows = page.locator('#batches tbody tr');
    assert.equal(await rows.count(), 2);
    const first = await rows.nth(0).locator('td').allTextContents();
    const second = await rows.nth(1).locator('td').allTextContents();
    assert.deepEqual([first[1], first[2], first[4]], ['50%', 'auto', 'done']);
    assert.deepEqual(
      [second[1], second[2]?.trim(), second[4]],
      ['100%', 'manual (waits for promote)', 'waiting'],
    );
    assert.equal(Number(first[3]) + Number(second[3]), AGENTS.length);
    // Each agent with its batch and where it stands: the first batch done, the second not sent.
    const agents = await page
      .locator('tr[data-agent]')
      .evaluateAll((trs) =>
        trs.map((tr) => [
          tr.querySelector('td:nth-child(2)')!.textContent,
          tr.querySelector('[data-rollout-state]')!.getAttribute('data-rollout-state'),
        ]),
      );
    assert.equal(agents.length, AGENTS.length);
    for (const [batch, state] of agents) assert.equal(state, batch === '1' ? 'succeeded' : 'pending');
    assert.equal((await page.textContent('#threshold-failed'))?.trim(), '0');
    assert.match(
      (await page.textContent('#threshold')) ?? '',
      /10% of the decided agents failed, once 5 are decided/,
    );
    assert.match(
      (await page.textContent('#threshold')) ?? '',
      /bake 0, agent timeout 15m, batch deadline 1h/,
    );
    assert.equal((await page.textContent('#deferred'))?.trim().split(' ')[0], '0');
    // One batch is left, so no "Promote all"; nothing to resume.
    assert.deepEqual(await buttons(page), ['Pause', 'Promote', 'Abort', 'Abort and revert']);
    assert.equal(await page.locator('[role=group][aria-label^="Steer rollout"]').count(), 1);
    await shot('rollout-staged-waiting');
  });

  it('plans the batch that waits on its machines, with dry-activate, and changes nothing', async () => {
    await page.goto(`${bed.server.url}/rollouts/${promoted}`);
    const waiting = await page
      .locator('tr[data-agent]')
      .evaluateAll((trs) =>
        trs
          .filter(
            (tr) =>
              tr.querySelector('[data-rollout-state]')!.getAttribute('data-rollout-state') === 'pending',
          )
          .map((tr) => tr.getAttribute('data-agent')!),
      );
    assert.ok(waiting.length > 0);
    const before = await Promise.all(
      waiting.map((n) => profileTarget(join(bed.world.profiles, n)).catch(() => null)),
    );
    await page.check('#plan-form input[name=dryActivate]');
    await page.click('#plan-form button');
    await page.waitForSelector('h1:text("Plan for rollout")', { timeout: 60_000 });
    assert.match(
      (await page.textContent('main')) ?? '',
      /What batch 2 of 2 \(\d+ agent\(s\), not opened yet\) would do/,
    );
    // One row per agent of the waiting batch, each as its own machine answered.
    const rows = await page.locator('#plan > tbody > tr').evaluateAll((trs) =>
      trs.map((tr) => ({
        agent: tr.getAttribute('data-agent'),
        cells: [...tr.querySelectorAll(':scope > td')].map((td) =>
          td.textContent?.replace(/\s+/g, ' ').trim(),
        ),
      })),
    );
    assert.deepEqual(
      rows.map((r) => r.agent),
      [...waiting].sort(),
    );
    for (const { cells } of rows) {
      assert.equal(cells[1], 'answered');
      // The path is in this machine's store already (the agents share the test's store).
      assert.match(cells[3] ?? '', /^0 path\(s\), 0 B unpacked, 0 B compressed \(the machine's own count\)/);
      assert.match(cells[4] ?? '', /free$/);
      assert.match(cells[5] ?? '', /no dry-activate/i);
    }
    assert.match((await page.textContent('#plan-verdict')) ?? '', /Every machine answered/);
    await shot('rollout-plan');
    // Nothing changed: the same profiles, and the batch still waits for promote.
    const after = await Promise.all(
      waiting.map((n) => profileTarget(join(bed.world.profiles, n)).catch(() => null)),
    );
    assert.deepEqual(after, before);
    assert.equal((await staged(promoted)).state, 'running');
    await page.goto(`${bed.server.url}/rollouts/${promoted}`);
    await page.waitForSelector('#rollout-waiting:has-text("waits for promote")');
    // The form is checked like every other: no CSRF token, or an unknown field, is refused.
    assert.equal((await post(page, `/rollouts/${promoted}/plan`, {})).status, 403);
    const unknown = await post(page, `/rollouts/${promoted}/plan`, {
      _csrf: await csrfOf(page),
      everything: 'true',
    });
    assert.equal(unknown.status, 400);
  });

  it('promotes with the button: the next batch opens and the rollout succeeds, audited as rollout.promote', async () => {
    await page.click('button:text-is("Promote")');
    await page.waitForURL(`${bed.server.url}/rollouts/${promoted}`);
    await page.waitForSelector('#rollout-state.s-succeeded', { timeout: 60_000 });
    assert.deepEqual(
      await page
        .locator('[data-rollout-state]')
        .evaluateAll((tds) => tds.map((td) => td.getAttribute('data-rollout-state'))),
      AGENTS.map(() => 'succeeded'),
    );
    assert.deepEqual(await page.locator('#batches tbody .badge').allTextContents(), ['done', 'done']);
    assert.equal(await page.locator('#rollout-waiting').count(), 0);
    assert.deepEqual(await buttons(page), [], 'a rollout that is over has no buttons');
    // Over: the page no longer follows it, and its stream says so at once.
    assert.equal(await page.locator('#rollout[data-events]').count(), 0);
    const cookie = (await page.context().cookies()).find((c) => c.name === 'cairn_session')!;
    const stream = await fetch(`${bed.server.url}/rollouts/${promoted}/events`, {
      headers: { Cookie: `cairn_session=${cookie.value}` },
    });
    assert.equal(stream.headers.get('content-type'), 'text/event-stream');
    assert.match(await stream.text(), /event: end/);
    const { entries } = (await adminApi(bed.server, 'GET', '/audit?limit=10')) as {
      entries: Array<{ action: string; target: string; address: string | null; detail: unknown }>;
    };
    const entry = entries.find((e) => e.action === 'rollout.promote');
    assert.ok(entry, JSON.stringify(entries));
    assert.equal(entry.target, String(promoted));
    assert.deepEqual(entry.detail, { op: 'promote', full: false });
    assert.ok(entry.address);
    await shot('rollout-staged-succeeded');
  });

  it('pauses with the button and shows why; a stale form gets the page back with a readable error', async () => {
    paused = await stage('v2');
    await page.goto(`${bed.server.url}/rollouts/${paused}`);
    await page.waitForSelector('#rollout-waiting:has-text("waits for promote")', { timeout: 60_000 });
    await page.click('button:text-is("Pause")');
    await page.waitForSelector('#rollout-state.s-paused');
    assert.match((await page.textContent('#rollout-reason')) ?? '', /Paused: paused by /);
    assert.match((await page.textContent('#rollout-waiting')) ?? '', /nothing is dispatched/);
    assert.deepEqual(await buttons(page), ['Resume', 'Abort', 'Abort and revert']);
    assert.equal((await staged(paused)).state, 'paused');
    await shot('rollout-staged-paused');
    // A second pause, as from a page drawn before the first: 409, the page again, saying why,
    // which stays while the page follows the rollout.
    const res = await post(page, `/rollouts/${paused}/pause`, { _csrf: await csrfOf(page) });
    assert.equal(res.status, 409);
    assert.match(await res.text(), /id="rollout-state">paused</);
    await page.locator('form[action$="/resume"]').evaluate((el) => {
      const form = el as unknown as { action: string; submit(): void };
      form.action = form.action.replace(/resume$/, 'pause');
      form.submit();
    });
    await page.waitForURL(`${bed.server.url}/rollouts/${paused}/pause`);
    await page.waitForTimeout(1000);
    assert.equal(
      (await page.textContent('[role=alert]#rollout-error'))?.trim(),
      `Cannot pause rollout ${paused}: it is paused`,
    );
    assert.deepEqual(await buttons(page), ['Resume', 'Abort', 'Abort and revert']);
  });

  it('shows no buttons to a token that may not deploy to every agent, and refuses its forged form', async () => {
    const made = await cli(['token', 'create', '--scope', 'activate:r1', '--name', 'r1-only'], bed.world.env);
    assert.equal(made.code, 0, made.stderr);
    const viewer = await signIn(made.stdout.trim());
    try {
      await viewer.goto(`${bed.server.url}/rollouts/${paused}`);
      assert.equal(await viewer.locator('#rollout-state.s-paused').count(), 1);
      assert.equal(await viewer.locator('#batches tbody tr').count(), 2);
      assert.deepEqual(await buttons(viewer), []);
      const res = await post(viewer, `/rollouts/${paused}/resume`, { _csrf: await csrfOf(viewer) });
      assert.equal(res.status, 403);
      assert.match(await res.text(), /may not deploy to/);
      assert.equal((await staged(paused)).state, 'paused');
    } finally {
      await viewer.context().close();
    }
  });

  it('refuses a form without the CSRF token, with a field it does not know, or for no such operation', async () => {
    const csrf = await csrfOf(page);
    const cases: Array<[string, Record<string, string>, number]> = [
      [`/rollouts/${paused}/resume`, {}, 403],
      [`/rollouts/${paused}/resume`, { _csrf: 'stale' }, 403],
      [`/rollouts/${paused}/abort`, { _csrf: csrf, revert: 'yes' }, 400],
      [`/rollouts/${paused}/resume`, { _csrf: csrf, full: 'true' }, 400],
      [`/rollouts/${paused}/explode`, { _csrf: csrf }, 400],
      [`/rollouts/x/resume`, { _csrf: csrf }, 400],
      ['/rollouts/999999/resume', { _csrf: csrf }, 404],
    ];
    for (const [path, fields, status] of cases) {
      const res = await post(page, path, fields);
      assert.equal(res.status, status, `${path} ${JSON.stringify(fields)}: ${await res.text()}`);
    }
    assert.equal((await staged(paused)).state, 'paused');
  });

  it('resumes, then aborts with the button (asking first): the agents not yet sent are cancelled', async () => {
    await page.goto(`${bed.server.url}/rollouts/${paused}`);
    await page.click('button:text-is("Resume")');
    await page.waitForSelector('#rollout-state.s-running');
    await page.waitForSelector('#rollout-waiting:has-text("waits for promote")', { timeout: 60_000 });
    await page.click('button:text-is("Abort")');
    await page.waitForSelector('#rollout-state.s-aborted');
    assert.match((await page.textContent('#rollout-reason')) ?? '', /Why it ended: aborted by /);
    const states = await page
      .locator('tr[data-agent]')
      .evaluateAll((trs) =>
        trs.map((tr) => [
          tr.querySelector('td:nth-child(2)')!.textContent,
          tr.querySelector('[data-rollout-state]')!.getAttribute('data-rollout-state'),
        ]),
      );
    for (const [batch, state] of states) assert.equal(state, batch === '1' ? 'succeeded' : 'cancelled');
    assert.deepEqual(await buttons(page), []);
    assert.equal((await staged(paused)).state, 'aborted');
    await shot('rollout-staged-aborted');
  });

  it('aborts and reverts with the button: the agents it switched go back, and both pages link each other', async () => {
    const before = new Map(
      await Promise.all(
        AGENTS.map(async (n) => [n, await profileTarget(join(bed.world.profiles, n))] as const),
      ),
    );
    const id = await stage('v3');
    await page.goto(`${bed.server.url}/rollouts/${id}`);
    await page.waitForSelector('#rollout-waiting:has-text("waits for promote")', { timeout: 60_000 });
    await page.click('button:text-is("Abort and revert")');
    await page.waitForSelector('#rollout-state.s-aborted');
    assert.match((await page.textContent('#rollout-reason')) ?? '', /reverting the agents it switched/);
    // The revert rollout appears on the page as the engine makes it.
    const link = page.locator('#rollout a[href^="/rollouts/"]', { hasText: /^rollout #\d+$/ });
    await link.waitFor({ timeout: 30_000 });
    assert.match((await page.textContent('#rollout')) ?? '', /Reverted by rollout #\d+/);
    await link.click();
    await page.waitForSelector(`a[href="/rollouts/${id}"]`);
    assert.match((await page.textContent('main')) ?? '', new RegExp(`Reverts rollout #${id}`));
    // Every agent the rollout switched is back where it was before.
    for (const n of AGENTS) {
      const deadline = Date.now() + 60_000;
      const target = () => profileTarget(join(bed.world.profiles, n));
      while ((await target()) !== before.get(n) && Date.now() < deadline) await page.waitForTimeout(200);
      assert.equal(await target(), before.get(n), n);
    }
    await page.reload();
    await shot('rollout-staged-reverted');
  });

  it('keeps the page of a rollout that deployed at once as it was: its table, refreshed every few seconds', async () => {
    const r = await bed.activate({
      agents: Object.fromEntries(AGENTS.map((n) => [n, paths.get(`v3-${RUN_TAG}`)!])),
    });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const list = (await adminApi(bed.server, 'GET', '/deployments?limit=1')) as {
      deployments: Array<{ rolloutId: number }>;
    };
    await page.goto(`${bed.server.url}/rollouts/${list.deployments[0]!.rolloutId}`);
    assert.equal(await page.locator('#rollout[data-refresh="3"]').count(), 1);
    assert.equal(await page.locator('.staged').count(), 0);
    assert.equal(await page.locator('tr[data-deployment] .s-succeeded').count(), AGENTS.length);
    assert.deepEqual(await buttons(page), []);
    assert.deepEqual(violations, [], 'the pages break the Content-Security-Policy');
  });
});
