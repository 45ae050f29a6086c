import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Browser, Page } from 'playwright-core';
import { bearer, createTestCache, narinfoText, rawRequest, syntheticPath } from '../helpers/binary-cache.ts';
import { launchChromium, signInWithChromium } from '../helpers/chromium.ts';
import { RUN_TAG } from '../helpers/nix.ts';
import { cli, startTestServer, type TestServer } from '../helpers/server.ts';

describe('dashboard: caches pages in Chromium', () => {
  let server: TestServer;
  let browser: Browser;
  const env = () => ({ CAIRN_SERVER: server.url, CAIRN_TOKEN: server.adminToken });
  const signIn = (token: string): Promise<Page> => signInWithChromium(browser, server.url, token);

  before(async () => {
    server = await startTestServer({ env: { CAIRN_GC_INTERVAL: '0' } });
    browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  it('shows usage, changes retention and quota, refuses bad values, and collects on demand', async () => {
    const cache = await createTestCache(server, 'main');
    const paths = [1, 2].map((i) => syntheticPath(`dash${i}-${RUN_TAG}`, `dashboard ${i} ${RUN_TAG}`));
    for (const p of paths) {
      const push = bearer(cache.pushToken);
      assert.equal(
        (await rawRequest(`${cache.url}/nar/${p.narFile}`, { method: 'PUT', headers: push, body: p.nar }))
          .status,
        201,
      );
      const info = await rawRequest(`${cache.url}/${p.hashPart}.narinfo`, {
        method: 'PUT',
        headers: push,
        body: narinfoText(p.fields),
      });
      assert.ok(info.status < 300, info.body);
    }
    const page = await signIn(server.adminToken);
    await page.click('nav a:text("Caches")');
    await page.waitForSelector('h1:text("Caches")');
    const row = (await page.locator('#caches tr[data-cache="main"]').textContent()) ?? '';
    assert.match(row, /main\s*2\s*[\d.]+ \w?B\s*28d \(default\)\s*none\s*never/);

    await page.click('#caches a:text("main")');
    await page.waitForSelector('h1:text("Cache main")');
    assert.equal(await page.locator('#paths').textContent(), '2');
    assert.match((await page.locator('#reclaimable').textContent()) ?? '', /^0 B \(0 paths, 0 NAR files\)/);

    // A bad quota is refused on the page, and nothing is changed.
    await page.fill('#policy input[name=retention]', '1s');
    await page.fill('#policy input[name=quota]', 'lots');
    await page.click('#policy button[type=submit]');
    await page.waitForSelector('#form-error');
    assert.match((await page.locator('#form-error').textContent()) ?? '', /quota must be a size/);
    const unchanged = await cli(['cache', 'info', 'main'], env());
    assert.match(unchanged.stdout, /retention: +28d \(the default\)/);

    await page.fill('#policy input[name=retention]', '1s');
    await page.fill('#policy input[name=quota]', '10MiB');
    await page.click('#policy button[type=submit]');
    await page.waitForSelector('h1:text("Cache main")');
    const changed = await cli(['cache', 'info', 'main'], env());
    assert.match(changed.stdout, /retention: +1s\n/);
    assert.match(changed.stdout, /quota: +10\.0 MiB\n/);

    await sleep(1200);
    await page.reload();
    assert.match((await page.locator('#reclaimable').textContent()) ?? '', /\(2 paths, 2 NAR files\)/);
    page.once('dialog', (d) => void d.accept());
    await page.click('button:text("Collect now")');
    await page.waitForSelector('#runs tbody tr');
    assert.match(
      (await page.locator('#runs tbody tr').first().textContent()) ?? '',
      /manual\s*2\s*2\s*[\d.]+ \w?B\s*done/,
    );
    assert.equal(await page.locator('#paths').textContent(), '0');
    for (const p of paths) {
      assert.equal(
        (await rawRequest(`${cache.url}/${p.hashPart}.narinfo`, { headers: bearer(cache.pullToken) })).status,
        404,
      );
    }
    const audit = await cli(['audit'], env());
    assert.match(audit.stdout, /cache\.policy\s+main/);
    assert.match(audit.stdout, /cache\.gc\s+main/);
  });

  it('is for admins only', async () => {
    const activate = (await cli(['token', 'create', '--scope', 'activate'], env())).stdout.trim();
    const page = await signIn(activate);
    assert.equal(await page.locator('nav a:text("Caches")').count(), 0);
    const res = await page.goto(`${server.url}/caches`);
    assert.equal(res?.status(), 403);
  });
});
