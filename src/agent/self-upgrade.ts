import { mkdir, readFile, realpath } from 'node:fs/promises';
import { join } from 'node:path';
import { runLines } from '../lib/run-lines.ts';
import { systemdUsable } from './transient-unit.ts';

/**
 * The exit code with which an agent stops to be restarted as its new version; the NixOS module
 * lists it in `RestartForceExitStatus` (and `SuccessExitStatus`, as it is no failure).
 * EX_TEMPFAIL: "try again".
 */
export const RESTART_EXIT_CODE = 75;

/** What the agent was started as: its unit's definition and its own program. */
export interface SelfIdentity {
  /** The unit it runs in, and `systemctl cat` of it then; undefined outside a systemd unit. */
  readonly unit?: { readonly name: string; readonly user: boolean; readonly text: string };
  /** The program path it was started by, and what that resolved to then. */
  readonly program?: { readonly path: string; readonly resolved: string };
}

/**
 * The systemd unit this process runs in: `CAIRN_AGENT_UNIT` when set (tests, or an agent
 * started by another unit), else the last component of its cgroup (`/proc/self/cgroup`) when
 * that is a `.service`; `user` when it is a user manager's unit (`user@UID.service` in the path).
 */
async function ownUnit(env: NodeJS.ProcessEnv): Promise<{ name: string; user: boolean } | undefined> {
  if (env.CAIRN_AGENT_UNIT) return { name: env.CAIRN_AGENT_UNIT, user: false };
  const cgroup = await readFile('/proc/self/cgroup', 'utf8').catch(() => '');
  const path = /^0::(\S+)$/m.exec(cgroup)?.[1];
  const name = path?.split('/').at(-1);
  if (!path || !name?.endsWith('.service')) return undefined;
  return { name, user: /\/user@\d+\.service\//.test(path) };
}

async function catUnit(unit: { name: string; user: boolean }, env: NodeJS.ProcessEnv): Promise<string> {
  const lines: string[] = [];
  const r = await runLines('systemctl', [...(unit.user ? ['--user'] : []), 'cat', '--', unit.name], {
    env,
    onLine: (l) => lines.push(l),
  });
  if (r.code !== 0)
    throw new Error(`systemctl cat ${unit.name} exited with ${r.code ?? r.signal}: ${r.tail.at(-1) ?? ''}`);
  return lines.join('\n');
}

/**
 * Records what the agent was started as, and roots its own store path (the closure of the
 * program it runs) under `STATE_DIR/gcroots/agent`, so that a garbage collection after a
 * deployment that replaced it cannot delete it while it runs. Never throws: what cannot be read
 * is logged and not compared.
 */
export async function recordSelf(
  env: NodeJS.ProcessEnv,
  options: { program: string | undefined; stateDir: string; log: (line: string) => void },
): Promise<SelfIdentity> {
  let unit: SelfIdentity['unit'];
  const own = (await systemdUsable(env)) ? await ownUnit(env) : undefined;
  if (own) {
    try {
      unit = { ...own, text: await catUnit(own, env) };
    } catch (err) {
      options.log(
        `WARNING: cannot read my own unit, so a changed one will not restart me: ${(err as Error).message}`,
      );
    }
  }
  let program: SelfIdentity['program'];
  if (options.program) {
    const resolved = await realpath(options.program).catch(() => undefined);
    if (resolved) program = { path: options.program, resolved };
    const store = resolved ? /^\/nix\/store\/[^/]+/.exec(resolved)?.[0] : undefined;
    if (store) {
      const roots = join(options.stateDir, 'gcroots');
      await mkdir(roots, { recursive: true }).catch(() => {});
      const r = await runLines('nix-store', ['--realise', store, '--add-root', join(roots, 'agent')], {
        env,
        onLine: () => {},
      });
      if (r.code !== 0)
        options.log(`WARNING: cannot add a GC root for my own store path ${store}: ${r.tail.at(-1) ?? ''}`);
    }
  }
  return { ...(unit ? { unit } : {}), ...(program ? { program } : {}) };
}

/**
 * Why the agent should restart as its new version, or undefined: its unit's definition is no
 * longer what it was started with (a deployment changed it; `restartIfChanged = false` keeps
 * the switch from restarting it), or its program path now resolves elsewhere.
 */
export async function selfChanged(self: SelfIdentity, env: NodeJS.ProcessEnv): Promise<string | undefined> {
  if (self.unit) {
    const now = await catUnit(self.unit, env).catch(() => undefined);
    if (now !== undefined && now !== self.unit.text) return `my unit ${self.unit.name} changed`;
  }
  if (self.program) {
    const now = await realpath(self.program.path).catch(() => undefined);
    if (now !== undefined && now !== self.program.resolved)
      return `my program ${self.program.path} now resolves to ${now}, not ${self.program.resolved}`;
  }
  return undefined;
}
