import { type Browser, chromium, type Page } from 'playwright-core';

/** Debian's Chromium, as .ci/run installs it. */
export const CHROMIUM = process.env.CAIRN_TEST_CHROMIUM ?? '/usr/bin/chromium';

/** Starts a headless Chromium for dashboard tests. */
export async function launchChromium(): Promise<Browser> {
  return await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--no-first-run',
      '--disable-background-networking',
    ],
  });
}

/** Signs in to the dashboard at `baseUrl` with `token` in a fresh browser context; on the fleet page. */
export async function signInWithChromium(browser: Browser, baseUrl: string, token: string): Promise<Page> {
  const p = await (await browser.newContext()).newPage();
  await p.goto(`${baseUrl}/`);
  await p.fill('#token', token);
  await p.click('button[type=submit]');
  await p.waitForSelector('h1:text("Fleet")');
  return p;
}
