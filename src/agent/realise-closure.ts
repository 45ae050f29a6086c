import { stat } from 'node:fs/promises';
import { Backoff, sleep } from '../lib/backoff.ts';
import { type AgentCache, type DesiredDeployment, DISK_MARGIN } from '../protocol/agent-protocol.ts';
import { freeStoreBytes, type NixContext, plannedUnpackedBytes, realise, withNetrc } from './nix-commands.ts';
import { StepFailure } from './step-failure.ts';

/** What realising a closure needs: Nix, and the caches to substitute from with the agent's token. */
export interface RealiseContext extends NixContext {
  readonly caches: readonly AgentCache[];
  readonly token: string;
}

/**
 * Realise attempts when downloads fail. Nix retries a broken download itself (resuming it with a
 * range request), but only for a few seconds; an outage longer than that fails `nix-store
 * --realise`, and the agent runs it again, over about a minute, before the deployment fails.
 * Nothing has changed on the machine yet, so waiting costs only time.
 */
const REALISE_ATTEMPTS = 5;
/** Equal jitter (half fixed, half random): spreads a fleet out yet always waits a little. */
const REALISE_BACKOFF = { initialMs: 5000, maxMs: 40_000, random: () => 0.5 + Math.random() / 2 };
/**
 * Output of Nix for a failed transfer ("unable to download '...': Couldn't connect to server"),
 * as opposed to a path that no cache has or a bad signature, which another attempt will not fix.
 */
const DOWNLOAD_ERROR = /unable to download/;

/**
 * The agent is stopping while the deployment is still downloading: nothing on the machine has
 * changed, the journal says `realise`, and the next agent process starts the download again.
 */
export class DeploymentInterrupted extends Error {}

/**
 * Brings a deployment's store path (and its rollback script) onto the machine from the
 * workspace's caches: checks first that the store's disk has room for the closure, and retries
 * a download that fails on the network, with backoff, before the deployment fails. Throws a
 * {@link StepFailure} at `realise`, or {@link DeploymentInterrupted} when the agent stops.
 */
export async function realiseClosure(ctx: RealiseContext, d: DesiredDeployment): Promise<void> {
  const paths = d.rollbackScript ? [d.storePath, d.rollbackScript] : [d.storePath];
  await withNetrc(ctx, ctx.caches, ctx.token, async (netrc) => {
    // Paths already on disk download nothing: skip the dry run that would say so.
    const present = await Promise.all(
      paths.map((p) =>
        stat(p).then(
          () => true,
          () => false,
        ),
      ),
    );
    const planned = present.every(Boolean)
      ? undefined
      : await plannedUnpackedBytes(ctx, paths, ctx.caches, netrc);
    if (planned !== undefined && planned > 0) {
      const free = await freeStoreBytes();
      const mib = (n: number) => (n / 1024 / 1024).toFixed(1);
      ctx.onLine(`download: ${mib(planned)} MiB unpacked; ${mib(free)} MiB free on /nix/store`);
      if (planned * DISK_MARGIN > free) {
        throw new StepFailure(
          'realise',
          `not enough disk space: the closure needs ${mib(planned)} MiB, /nix/store has ${mib(free)} MiB free`,
        );
      }
    }
    const backoff = new Backoff(REALISE_BACKOFF);
    for (let attempt = 1; ; attempt++) {
      ctx.onLine(`$ nix-store --realise ${paths.join(' ')}`);
      let network = false;
      const watch = {
        ...ctx,
        onLine: (line: string) => {
          if (DOWNLOAD_ERROR.test(line)) network = true;
          ctx.onLine(line);
        },
      };
      const r = await realise(watch, paths, ctx.caches, netrc);
      if (ctx.signal?.aborted) throw new DeploymentInterrupted('the agent stopped during the download');
      if (r.code === 0) return;
      const why = r.tail.at(-1) ?? `exit ${r.code}`;
      if (!network || attempt >= REALISE_ATTEMPTS)
        throw new StepFailure(
          'realise',
          `cannot realise ${d.storePath}: ${why}${network ? ` (gave up after ${attempt} attempts)` : ''}`,
        );
      const delay = backoff.next();
      ctx.onLine(
        `realise attempt ${attempt} of ${REALISE_ATTEMPTS} failed on a download error; retrying in ${(delay / 1000).toFixed(1)}s`,
      );
      await sleep(delay, ctx.signal);
      if (ctx.signal?.aborted) throw new DeploymentInterrupted('the agent stopped during the download');
    }
  });
}
