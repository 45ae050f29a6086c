import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { processAlive } from '../lib/process-alive.ts';
import { takePidLock } from './pid-lock.ts';

/**
 * The machine-wide directory of agent name locks: `$CAIRN_AGENT_LOCK_DIR` when set (every agent
 * of the machine must then be given the same one), else `/run/cairn-agent` as root, else
 * `$XDG_RUNTIME_DIR/cairn-agent`, else the per-user state base (`$XDG_STATE_HOME/cairn-agent`).
 */
export function agentLockDir(env: NodeJS.ProcessEnv): string {
  if (env.CAIRN_AGENT_LOCK_DIR) return env.CAIRN_AGENT_LOCK_DIR;
  if (process.getuid?.() === 0) return '/run/cairn-agent';
  if (env.XDG_RUNTIME_DIR) return join(env.XDG_RUNTIME_DIR, 'cairn-agent');
  return join(env.XDG_STATE_HOME || join(env.HOME ?? '/tmp', '.local', 'state'), 'cairn-agent');
}

/** The pid of another live process holding the agent's name lock, if one does. */
export async function agentLockHolder(name: string, env: NodeJS.ProcessEnv): Promise<number | undefined> {
  const text = await readFile(join(agentLockDir(env), `${name}.lock`), 'utf8').catch(() => '');
  const pid = Number(text.split('\n')[0]);
  return Number.isInteger(pid) && pid > 0 && pid !== process.pid && processAlive(pid) ? pid : undefined;
}

/**
 * Takes the locks that make an agent the only one of its name on this machine: one on
 * `<lock dir>/NAME.lock` (see {@link agentLockDir}), which holds even when two agents of the same
 * name were given different state dirs, and one on `<state dir>/agent.lock`, which keeps two
 * agents from sharing a state dir. Returns the function that releases both.
 * @throws CairnError ALREADY_EXISTS when a live agent holds either.
 */
export async function lockAgent(
  name: string,
  options: { readonly stateDir: string; readonly env: NodeJS.ProcessEnv },
): Promise<() => Promise<void>> {
  const nameFile = join(agentLockDir(options.env), `${name}.lock`);
  const releaseName = await takePidLock(nameFile, {
    lines: [name, options.stateDir],
    refusal: (pid) =>
      `Cannot start the agent: another cairn agent named ${name} (pid ${pid}) runs on this machine; stop it first, or give this one its own name (${nameFile})`,
  });
  try {
    const releaseDir = await takePidLock(join(options.stateDir, 'agent.lock'), {
      lines: [name, options.stateDir],
      refusal: (pid) =>
        `Cannot start the agent: another cairn agent (pid ${pid}) uses the state dir ${options.stateDir}; give each agent its own --state-dir`,
    });
    return async () => {
      await releaseDir();
      await releaseName();
    };
  } catch (err) {
    await releaseName();
    throw err;
  }
}
