import { CAIRN_VERSION } from '../lib/version.ts';
import {
  type AgentJournal,
  describeServer,
  type JournalOwner,
  sameServer,
} from '../protocol/agent-journal.ts';
import {
  type DeploymentResult,
  type DesiredDeployment,
  MAX_AGENT_MESSAGE_BYTES,
  type Observed,
} from '../protocol/agent-protocol.ts';
import { lockAgent } from './agent-lock.ts';
import { AgentSession, type DeploymentContext } from './agent-session.ts';
import { JournalFile } from './journal-file.ts';
import { machineHostname, nixSystem, nixVersion } from './machine-facts.ts';
import { planClosure } from './plan-closure.ts';
import { detectProfileKind } from './profile-kind.ts';
import { readProfileState } from './profile-state.ts';
import { closureParts, readClosure } from './read-closure.ts';
import { DeploymentInterrupted } from './realise-closure.ts';
import { recoverJournal } from './recover-journal.ts';
import { driveDeployment, newJournal } from './run-deployment.ts';
import { RESTART_EXIT_CODE, recordSelf, type SelfIdentity, selfChanged } from './self-upgrade.ts';
import { warnOfSharedState } from './warn-of-shared-state.ts';

/** Everything the agent runs with, parsed once. */
export interface AgentOptions {
  readonly name: string;
  readonly server: string;
  readonly token: string;
  readonly profile: string;
  readonly stateDir: string;
  readonly env: NodeJS.ProcessEnv;
  /** The agent's own log (its stderr). */
  readonly log: (line: string) => void;
  readonly heartbeatMs?: number;
  /** The program path the agent was started as (its script), watched for a new version. */
  readonly program?: string | undefined;
  readonly backoff?: { initialMs: number; maxMs: number };
  /** Stop once the server has the result of a deployment that succeeded (`--bootstrap`). */
  readonly bootstrap?: boolean;
}

/**
 * The agent: an {@link AgentSession} (the connection, the deployment queue, logs, results and
 * confirmation) given the machine's side: its journal, its profile's state, and deployments
 * driven through Nix. The protocol is level-triggered: on every connect it says what it runs
 * and the server says what it should run.
 */
export class AgentDaemon {
  readonly #o: AgentOptions;
  readonly #journal: JournalFile;
  readonly #session: AgentSession;
  #nixVersion = 'unknown';
  /** The journal being set aside as another server's; a new journal is written only after. */
  #settingAside: Promise<void> = Promise.resolve();
  /** A deployment of another server's being finished locally: its journal is set aside once it ends. */
  #asideWhenDone: string | undefined;
  /** What the agent was started as; compared after each reported result. */
  #self: SelfIdentity = {};
  /** Aborted, with the reason kept, when the agent stops to be restarted as its new version. */
  readonly #restart = new AbortController();
  #restartReason: string | undefined;
  /** Deployments being run now: the agent never stops for an upgrade in the middle of one. */
  #deploying = 0;
  /** Deployments that succeeded, until the server has their results (`--bootstrap` only). */
  readonly #succeeded = new Set<string>();
  /** Aborted when a bootstrapping agent's first successful deployment is reported. */
  readonly #bootstrapped = new AbortController();

  constructor(options: AgentOptions) {
    this.#o = options;
    this.#journal = new JournalFile(options.stateDir);
    this.#session = new AgentSession({
      server: options.server,
      name: options.name,
      token: options.token,
      log: options.log,
      ...(options.heartbeatMs !== undefined ? { heartbeatMs: options.heartbeatMs } : {}),
      ...(options.backoff ? { backoff: options.backoff } : {}),
      observe: () => this.#observed(),
      deploy: (d, ctx, resume) => this.#deploy(d, ctx, resume),
      plan: (request, ctx) =>
        planClosure(
          {
            profile: options.profile,
            caches: ctx.caches,
            token: options.token,
            env: options.env,
            stateDir: options.stateDir,
            onLine: () => {},
            signal: ctx.signal,
          },
          request,
        ),
      onAcknowledged: (ids, owner) =>
        void this.#markReported(ids, owner).then(async () => {
          if (!this.#checkBootstrap(ids)) await this.#checkSelf();
        }),
      onForeignJournal: (journal, server, running) => this.#foreignJournal(journal, server, running),
    });
  }

  /**
   * Runs until the signal aborts, or until a reported result finds the agent's own unit or
   * program changed (resolving with why: the caller exits to be restarted as the new version):
   * connects, reconnects, and runs deployments. First takes the locks that make it the only
   * agent of its name here and the only user of its state dir.
   * @throws CairnError ALREADY_EXISTS when another live agent holds either lock.
   */
  async run(signal: AbortSignal): Promise<string | undefined> {
    const unlock = await lockAgent(this.#o.name, { stateDir: this.#o.stateDir, env: this.#o.env });
    try {
      await warnOfSharedState(this.#o.stateDir, this.#o.name, this.#o.log);
      this.#nixVersion = await nixVersion(this.#o.env);
      this.#self = await recordSelf(this.#o.env, {
        program: this.#o.program,
        stateDir: this.#o.stateDir,
        log: this.#o.log,
      });
      const stop = AbortSignal.any([signal, this.#restart.signal, this.#bootstrapped.signal]);
      await this.#session.run(stop, await recoverJournal(this.#journal, this.#o.name, this.#o.log));
      return signal.aborted || this.bootstrapped ? undefined : this.#restartReason;
    } finally {
      await unlock();
    }
  }

  /** True when the agent stopped because its first deployment succeeded (`--bootstrap`). */
  get bootstrapped(): boolean {
    return this.#bootstrapped.signal.aborted;
  }

  /**
   * After the server has results: a bootstrapping agent whose deployment succeeded stops, so
   * that the agent the deployed system runs can take over. True when it stops.
   */
  #checkBootstrap(ids: ReadonlySet<string>): boolean {
    if (!this.#o.bootstrap || this.#bootstrapped.signal.aborted) return this.bootstrapped;
    if (![...ids].some((id) => this.#succeeded.has(id))) return false;
    this.#o.log('bootstrap: the first deployment succeeded and the server has its result; stopping');
    this.#bootstrapped.abort();
    return true;
  }

  /**
   * After the server has a result: an agent whose unit or program a deployment changed stops,
   * to be restarted as the new version (its unit restarts on {@link RESTART_EXIT_CODE}).
   */
  async #checkSelf(): Promise<void> {
    // A deployment started meanwhile is finished first; its own result brings the next check.
    if (this.#restart.signal.aborted || this.#deploying > 0) return;
    const why = await selfChanged(this.#self, this.#o.env).catch(() => undefined);
    if (why === undefined) return;
    this.#o.log(`restarting to run the new agent: ${why} (exit code ${RESTART_EXIT_CODE})`);
    this.#restartReason = why;
    this.#restart.abort();
  }

  /**
   * The server that welcomed the agent is not the one its journal belongs to (a new data dir, a
   * reinstall, another server): the journal is set aside, with one warning line, and nothing of
   * it is reported here. A deployment still being finished locally keeps its journal until it ends.
   */
  #foreignJournal(journal: JournalOwner, server: JournalOwner, running: string | undefined): void {
    const why = `it is ${describeServer(journal)}'s, and this is ${describeServer(server)}`;
    if (running !== undefined) {
      this.#asideWhenDone = running;
      this.#o.log(
        `WARNING: the journal's deployment ${running} is another server's (${why}): finishing it locally, reporting nothing, then setting the journal aside`,
      );
      return;
    }
    this.#settingAside = this.#settingAside.then(() =>
      this.#journal.setAside().then(
        (movedTo) =>
          this.#o.log(
            `WARNING: set the journal aside as ${movedTo}: ${why}; its deployment is neither resumed nor reported here`,
          ),
        (err: unknown) => this.#o.log(`WARNING: cannot set the journal aside: ${(err as Error).message}`),
      ),
    );
  }

  async #observed(): Promise<Observed> {
    const state = await readProfileState(this.#o.profile).catch(() => ({
      storePath: null,
      generation: null,
    }));
    const kind = state.storePath ? await detectProfileKind(state.storePath).catch(() => null) : null;
    return {
      storePath: state.storePath,
      generation: state.generation,
      kind,
      system: nixSystem(),
      hostname: machineHostname(),
      agentVersion: CAIRN_VERSION,
      nixVersion: this.#nixVersion,
      profile: this.#o.profile,
    };
  }

  /** One deployment through Nix, from the journal written before it starts to its result. */
  async #deploy(
    d: DesiredDeployment,
    ctx: DeploymentContext,
    resume: AgentJournal | undefined,
  ): Promise<DeploymentResult | null> {
    this.#o.log(`deployment ${d.id}: switching ${this.#o.profile} to ${d.storePath}`);
    let start = resume;
    if (!start) {
      await this.#settingAside;
      start = newJournal(d, ctx.owner);
      await this.#journal.write(start);
    }
    this.#deploying++;
    const result = await driveDeployment(
      {
        profile: this.#o.profile,
        caches: ctx.caches,
        token: this.#o.token,
        env: this.#o.env,
        stateDir: this.#o.stateDir,
        journal: this.#journal,
        onLine: ctx.line,
        onStep: ctx.step,
        confirm: ctx.confirm,
        onRealised: (storePath) => this.#reportClosure(d.id, storePath, ctx),
        ...(ctx.signal ? { signal: ctx.signal } : {}),
      },
      start,
    )
      .catch((err: unknown): DeploymentResult | null => {
        if (err instanceof DeploymentInterrupted) return null;
        // The journal could not be written: the machine's state is unknown to the agent; say so.
        this.#o.log(`deployment ${d.id}: ${(err as Error).message}`);
        return {
          deploymentId: d.id,
          state: 'failed',
          step: null,
          reason: `agent error: ${(err as Error).message}`,
          rebootRequired: false,
        };
      })
      .finally(() => {
        this.#deploying--;
      });
    if (this.#o.bootstrap && result?.state === 'succeeded') this.#succeeded.add(d.id);
    if (result && this.#asideWhenDone === d.id) {
      this.#asideWhenDone = undefined;
      const movedTo = await this.#journal.setAside().catch((err: Error) => `nowhere (${err.message})`);
      this.#o.log(`deployment ${d.id}: finished locally; set its journal aside as ${movedTo}`);
    }
    return result;
  }

  /**
   * Tells the server the closure just realised (paths, NAR sizes, references), in parts that
   * fit a message. Best effort: the deployment goes on whatever happens here.
   */
  async #reportClosure(deploymentId: string, storePath: string, ctx: DeploymentContext): Promise<void> {
    try {
      const parts = closureParts(await readClosure(this.#o.env, storePath), MAX_AGENT_MESSAGE_BYTES / 2);
      for (const [i, paths] of parts.entries()) {
        ctx.send({ type: 'closure', deploymentId, paths, final: i === parts.length - 1 });
      }
    } catch (err) {
      this.#o.log(`deployment ${deploymentId}: cannot report the closure: ${(err as Error).message}`);
    }
  }

  /** The server of `owner` has these results: the journal's finished deployment need not be reported again. */
  #markReported(ids: ReadonlySet<string>, owner: JournalOwner): Promise<void> {
    return this.#journal
      .read()
      .then(async (read) => {
        if (
          read.kind === 'ok' &&
          read.journal.phase === 'done' &&
          ids.has(read.journal.deployment.id) &&
          sameServer(read.journal.owner, owner) &&
          !read.journal.reported
        ) {
          await this.#journal.write({ ...read.journal, reported: true, updatedAt: Date.now() });
        }
      })
      .catch((err: unknown) => this.#o.log(`cannot update the journal: ${(err as Error).message}`));
  }
}
