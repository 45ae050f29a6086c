import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { launchChromium, signInWithChromium } from '../helpers/chromium.ts';
import { cli, startTestServer, type TestServer } from '../helpers/server.ts';
import { startWebhookReceiver, type WebhookReceiver } from '../helpers/webhook-receiver.ts';

describe('dashboard: webhooks page in Chromium', () => {
  let server: TestServer;
  let browser: Browser;
  let ok: WebhookReceiver;
  let gone: WebhookReceiver;
  const env = () => ({ CAIRN_SERVER: server.url, CAIRN_TOKEN: server.adminToken });
  const signIn = (token: string): Promise<Page> => signInWithChromium(browser, server.url, token);
  const create = async (receiver: WebhookReceiver, events: string) => {
    const r = await cli(['webhook', 'create', receiver.url, '--event', events, '--json'], env());
    assert.equal(r.code, 0, r.stderr);
    const w = JSON.parse(r.stdout) as { id: number; secret: string };
    receiver.secret = w.secret;
    return String(w.id);
  };

  before(async () => {
    // The receivers listen on 127.0.0.1: private addresses allowed here.
    server = await startTestServer({ env: { CAIRN_WEBHOOK_ALLOW_PRIVATE: '1' } });
    ok = await startWebhookReceiver();
    gone = await startWebhookReceiver();
    browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    await ok?.close();
    await gone?.close();
    await server?.stop();
  });

  it('lists endpoints, active or disabled with the reason, and recent deliveries with their status', async () => {
    const okId = await create(ok, 'deployment.succeeded');
    const goneId = await create(gone, 'deployment.failed,agent.offline');
    gone.answer(410);
    assert.equal((await cli(['webhook', 'test', okId], env())).code, 0);
    assert.equal((await cli(['webhook', 'test', goneId], env())).code, 0);
    await ok.waitFor(1);
    await gone.waitFor(1);

    const page = await signIn(server.adminToken);
    await page.click('nav a:text("Webhooks")');
    await page.waitForSelector('h1:text("Webhooks")');
    // The 410 is recorded a moment after the receiver answered: the page refreshes itself.
    await page.waitForSelector(`#endpoints tr[data-webhook="${goneId}"] .s-disabled`, { timeout: 15_000 });
    const okRow = page.locator(`#endpoints tr[data-webhook="${okId}"]`);
    assert.match(
      (await okRow.textContent()) ?? '',
      new RegExp(`${ok.url}\\s*deployment\\.succeeded\\s*active`),
    );
    const goneRow = (await page.locator(`#endpoints tr[data-webhook="${goneId}"]`).textContent()) ?? '';
    assert.match(goneRow, /deployment\.failed, agent\.offline\s*disabled answered 410 Gone/);
    await page.waitForSelector('#deliveries tr[data-delivery] .s-succeeded');
    const deliveries = await page.locator('#deliveries tbody tr').allTextContents();
    assert.equal(deliveries.length, 2);
    assert.ok(
      deliveries.some((t) => t.includes(ok.url) && /succeeded\s*1\s*200/.test(t)),
      deliveries.join('\n'),
    );
    assert.ok(
      deliveries.some((t) => t.includes(gone.url) && /failed\s*1\s*410 answered 410/.test(t)),
      deliveries.join('\n'),
    );
    // The secret is never shown.
    assert.doesNotMatch(await page.content(), /whsec_/);
  });

  it('is for admins only: an activate token gets no link and a refusal', async () => {
    const t = await cli(['token', 'create', '--scope', 'activate', '--name', 'viewer'], env());
    const page = await signIn(t.stdout.trim());
    assert.equal(await page.locator('nav a:text("Webhooks")').count(), 0);
    const res = await page.goto(`${server.url}/webhooks`);
    assert.equal(res?.status(), 403);
    assert.match((await page.locator('main').textContent()) ?? '', /lacks the admin scope/);
  });
});
