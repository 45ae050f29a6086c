import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from './server-process.ts';

/** Debian's nginx (package `nginx-light`), as scripts/check-prerequisites.sh requires it. */
export const NGINX = '/usr/sbin/nginx';

const SCALE_OUT_DOC = fileURLToPath(new URL('../../docs/scale-out.md', import.meta.url));

/** nginx running in the foreground in front of some servers. */
export interface NginxProcess {
  /** `http://127.0.0.1:PORT`. */
  readonly url: string;
  readonly child: ChildProcess;
  /** Stops nginx (SIGTERM, then SIGKILL) and removes its directory. */
  stop(): Promise<void>;
}

/**
 * The load-balancer configuration of docs/scale-out.md ("Load balancer"), the first ```nginx
 * block there, with `upstreams` (HOST:PORT) in place of its `server` lines and `listen` in place
 * of its port. Throws when the block is missing or does not have the lines replaced, so that the
 * documented configuration and the tested one cannot drift apart.
 */
export async function documentedNginxConfig(upstreams: readonly string[], listen: string): Promise<string> {
  const doc = await readFile(SCALE_OUT_DOC, 'utf8');
  const section = doc.slice(doc.indexOf('\n## Load balancer\n'));
  const block = /```nginx\n([\s\S]*?)```/.exec(section)?.[1];
  if (block === undefined || !section.startsWith('\n## Load balancer'))
    throw new Error(
      `Cannot read the nginx configuration: no nginx block under "## Load balancer" (${SCALE_OUT_DOC})`,
    );
  const servers = /^( *)server \d+\.\d+\.\d+\.\d+:\d+;\n(?: *server \d+\.\d+\.\d+\.\d+:\d+;\n)*/m;
  const listenLine = /^( *)listen 80;$/m;
  if (!servers.test(block) || !listenLine.test(block))
    throw new Error(
      'Cannot use the documented nginx configuration: no upstream server lines or no "listen 80;"',
    );
  return block
    .replace(servers, (_all, indent: string) => upstreams.map((u) => `${indent}server ${u};\n`).join(''))
    .replace(listenLine, (_all, indent: string) => `${indent}listen ${listen};`);
}

/**
 * Starts nginx as a foreground process (no daemon, one worker, so that round-robin is one
 * sequence) with the documented load-balancer configuration in front of `upstreams`, on a free
 * port of 127.0.0.1. Its pid file, logs and temporary files stay in a directory of its own.
 */
export async function startNginx(upstreams: readonly string[]): Promise<NginxProcess> {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-nginx-'));
  const port = await freePort();
  const site = await documentedNginxConfig(upstreams, `127.0.0.1:${port}`);
  const conf = join(dir, 'nginx.conf');
  await writeFile(
    conf,
    [
      'daemon off;',
      'worker_processes 1;',
      `pid ${join(dir, 'nginx.pid')};`,
      `error_log ${join(dir, 'error.log')} warn;`,
      'events { worker_connections 1024; }',
      'http {',
      `  access_log ${join(dir, 'access.log')};`,
      ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map(
        (t) => `  ${t}_temp_path ${join(dir, `${t}-temp`)};`,
      ),
      site,
      '}',
      '',
    ].join('\n'),
  );
  // -e: the error log before the configuration is read (else /var/log/nginx/error.log).
  const child = spawn(NGINX, ['-p', dir, '-e', join(dir, 'error.log'), '-c', conf], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = once(child, 'exit');
  const cleanup = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    await rm(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 10_000;
  while (!(await accepts(port))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      const log = await readFile(join(dir, 'error.log'), 'utf8').catch(() => '');
      await cleanup();
      throw new Error(`Cannot start nginx (${NGINX}): ${stderr}${log}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return { url: `http://127.0.0.1:${port}`, child, stop: cleanup };
}

/** Whether something accepts TCP connections on 127.0.0.1:port. */
async function accepts(port: number): Promise<boolean> {
  return await new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
