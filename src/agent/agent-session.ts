import { type AgentJournal, type JournalOwner, sameServer } from '../protocol/agent-journal.ts';
import {
  AGENT_PROTOCOL_VERSION,
  type AgentCache,
  type AgentMessage,
  type DeploymentResult,
  type DeploymentStep,
  type DesiredDeployment,
  type MachinePlan,
  type Observed,
  type ServerMessage,
} from '../protocol/agent-protocol.ts';
import { AgentConnection, type AgentConnectionOptions } from './agent-connection.ts';
import type { HelloMessage, SocketOutcome } from './agent-socket.ts';
import { Confirmation } from './confirmation.ts';
import { DeploymentQueue, type RunningDeployment } from './deployment-queue.ts';
import { LogShipper } from './log-shipper.ts';
import { ResultOutbox } from './result-outbox.ts';

/** Plans an agent holds at once (one running, the rest waiting); more are answered "busy". */
const MAX_WAITING_PLANS = 4;

/** How long a confirmation waits for the old connection to deliver its last log lines. */
const DRAIN_MS = 1500;

/** What a deployment run by an {@link AgentSession} may use of the session. */
export interface DeploymentContext {
  /** The binary caches the server named in its latest welcome. */
  readonly caches: readonly AgentCache[];
  /** The server, workspace and agent the deployment belongs to, for its journal. */
  readonly owner: JournalOwner;
  /** Aborts when the agent stops. */
  readonly signal: AbortSignal | undefined;
  /** Adds a line to the deployment's log (see {@link LogShipper.line}). */
  readonly line: (text: string, from?: { src: string; n: number }) => void;
  /** Reports the step the deployment has reached. */
  readonly step: (step: DeploymentStep) => void;
  /** Drops the connection, reconnects and waits for the server's `confirmed` (see {@link Confirmation}). */
  readonly confirm: (deploymentId: string, timeoutMs: number) => Promise<boolean>;
  /** Sends a message on the current connection; false when there is none. */
  readonly send: (msg: AgentMessage) => boolean;
}

/** What an {@link AgentSession} needs: the connection's options and the agent's own parts. */
export interface AgentSessionOptions
  extends Omit<AgentConnectionOptions, 'hello' | 'onMessage' | 'onPong' | 'onClose'> {
  /**
   * Runs one deployment and resolves with its result, or with null when it was interrupted
   * before changing the machine (it resumes on the next start). `resume` is the journal of a
   * deployment a previous process began.
   */
  readonly deploy: (
    d: DesiredDeployment,
    ctx: DeploymentContext,
    resume: AgentJournal | undefined,
  ) => Promise<DeploymentResult | null>;
  /**
   * Answers the server's `plan` (see plan-closure.ts), changing nothing on the machine; aborted
   * at the request's timeout. Without it, the agent answers that it cannot plan.
   */
  readonly plan?: (
    request: Extract<ServerMessage, { type: 'plan' }>,
    ctx: { readonly caches: readonly AgentCache[]; readonly signal: AbortSignal },
  ) => Promise<MachinePlan>;
  /** The server of `owner` has these results (see {@link ResultOutbox}). */
  readonly onAcknowledged?: (deploymentIds: ReadonlySet<string>, owner: JournalOwner) => void;
  /**
   * The first server to welcome the agent is not the one its journal ({@link Recovered.owner})
   * belongs to: the journal's result is not reported and its deployment, if waiting to resume,
   * is dropped. `running` is that deployment when it is still being finished locally.
   */
  readonly onForeignJournal?: (
    journal: JournalOwner,
    server: JournalOwner,
    running: string | undefined,
  ) => void;
  /** Sees every valid server message before the session acts on it (a simulated fleet counts them). */
  readonly onMessage?: (msg: ServerMessage) => void;
  /** Sees every connection close. */
  readonly onClose?: (outcome: SocketOutcome) => void;
}

/** What a previous agent process left to do, read from its journal. */
export interface Recovered {
  /** Whose the journal is; everything below belongs to it. */
  readonly owner?: JournalOwner;
  /** Deployments already finished: never run again. */
  readonly finished?: readonly string[];
  /** Results not yet reported. */
  readonly unreported?: readonly DeploymentResult[];
  /**
   * Results reported already: sent again should the server ask for their deployment again (a
   * server restored from a backup taken before they arrived).
   */
  readonly reported?: readonly DeploymentResult[];
  /** A deployment to resume at once (it had changed the machine). */
  readonly resumeNow?: AgentJournal;
  /** A deployment to resume once connected (it was still downloading). */
  readonly resumeWhenWelcomed?: AgentJournal;
}

/**
 * The agent's side of the protocol, without Nix: it keeps the connection up, says what it runs
 * on every connect and runs what the server desires, one at a time, streaming progress and
 * logs, confirming over a new connection after a switch and reporting results until they are
 * acknowledged. The real agent ({@link AgentDaemon}) gives it a `deploy` that drives Nix; a
 * simulated one gives it a `deploy` that only waits, and speaks the same protocol.
 */
export class AgentSession {
  readonly #o: AgentSessionOptions;
  readonly #connection: AgentConnection;
  readonly #logs: LogShipper;
  readonly #outbox: ResultOutbox;
  readonly #confirmation: Confirmation;
  readonly #queue: DeploymentQueue;
  #caches: readonly AgentCache[] = [];
  #resume: AgentJournal | undefined;
  /** The journal's owner, until the first welcome shows whether it is this server's. */
  #recoveredOwner: JournalOwner | undefined;
  /** The server and workspace of the current connection's welcome; undefined until welcomed. */
  #server: JournalOwner | undefined;
  #stopping: AbortSignal | undefined;
  /** Plans run one at a time: each may run Nix for a while. */
  #planning: Promise<void> = Promise.resolve();
  /** Plans running or waiting their turn. */
  #plans = 0;

  constructor(options: AgentSessionOptions) {
    this.#o = options;
    const {
      deploy: _deploy,
      plan: _plan,
      onAcknowledged: _acknowledged,
      onForeignJournal: _foreign,
      ...connection
    } = options;
    this.#connection = new AgentConnection({
      ...connection,
      hello: (observed) => this.#hello(observed),
      onMessage: (msg) => {
        options.onMessage?.(msg);
        this.#handle(msg);
      },
      onPong: (data) => this.#logs.received(data),
      onClose: (outcome) => {
        this.#server = undefined;
        this.#outbox.connectionLost();
        this.#logs.connectionLost();
        options.onClose?.(outcome);
      },
    });
    const send = (msg: AgentMessage) => this.#connection.send(msg);
    this.#logs = new LogShipper({ send, ping: (data) => this.#connection.ping(data) });
    this.#outbox = new ResultOutbox({
      send,
      observe: options.observe,
      ...(options.onAcknowledged ? { onAcknowledged: options.onAcknowledged } : {}),
    });
    this.#confirmation = new Confirmation(this.#connection, {
      // The lines just logged go out on the old connection first, and the agent waits briefly
      // for the server to show it read them: dropped unread, they would be sent again, twice
      // over when the server had them after all.
      beforeDrop: () => {
        this.#logs.flush();
        return this.#logs.drained(DRAIN_MS);
      },
    });
    this.#queue = new DeploymentQueue((d, running, resume) => this.#run(d, running, resume), {
      stopping: () => this.#stopping?.aborted ?? false,
      onDesiredAgain: (result, owner) => {
        this.#o.log(
          `deployment ${result.deploymentId}: asked for again, though finished; reporting its result again`,
        );
        void this.#outbox.report(result, owner);
      },
    });
  }

  /** Runs until the signal aborts, starting with what a previous process left, then waits for the running deployment. */
  async run(signal: AbortSignal, recovered: Recovered = {}): Promise<void> {
    this.#stopping = signal;
    const owner = recovered.owner;
    if (owner) {
      this.#recoveredOwner = owner;
      for (const id of recovered.finished ?? [])
        this.#queue.finish(
          owner,
          id,
          recovered.reported?.find((r) => r.deploymentId === id),
        );
      for (const r of recovered.unreported ?? []) this.#outbox.add(r, owner);
      this.#resume = recovered.resumeWhenWelcomed;
      // A switch interrupted half-way is finished at once, whoever asked for it: rolling back
      // on lost connectivity is a local safety matter.
      if (recovered.resumeNow) this.#queue.start(recovered.resumeNow.deployment, owner, recovered.resumeNow);
    }
    await this.#connection.run(signal);
    await this.#queue.idle();
  }

  #hello(observed: Observed): HelloMessage {
    return {
      type: 'hello',
      protocol: AGENT_PROTOCOL_VERSION,
      observed,
      running: this.#queue.running?.id ?? null,
      // Results go once the welcome says which server this is (see ResultOutbox).
      unreported: [],
    };
  }

  #handle(msg: ServerMessage): void {
    switch (msg.type) {
      case 'welcome': {
        this.#caches = msg.caches;
        const server = {
          serverId: msg.serverId ?? null,
          workspace: msg.workspace ?? null,
          agent: this.#o.name,
        };
        this.#server = server;
        this.#outbox.welcomed(server);
        const running = this.#queue.running;
        const runningHere = running !== undefined && sameServer(running.owner, server);
        // Another server's deployment (resumed from the journal) tells this server nothing.
        if (running && !runningHere) this.#logs.discard(running.id);
        const recovered = this.#recoveredOwner;
        this.#recoveredOwner = undefined;
        if (recovered && !sameServer(recovered, server)) {
          this.#resume = undefined;
          this.#o.onForeignJournal?.(recovered, server, runningHere ? undefined : running?.id);
        }
        // Progress sent while the link was down was lost: say again where the running
        // deployment is, before the logs and the confirmation (the server confirms only a
        // deployment it knows is running).
        if (running?.step && runningHere)
          this.#connection.send({ type: 'progress', deploymentId: running.id, step: running.step });
        this.#logs.flush();
        void this.#outbox.resend();
        this.#confirmation.onWelcome(running === undefined || runningHere);
        if (this.#resume) {
          const j = this.#resume;
          this.#resume = undefined;
          this.#queue.start(j.deployment, server, j);
        }
        this.#queue.desire(msg.desired, server);
        return;
      }
      case 'desired':
        this.#outbox.acknowledged();
        if (this.#server) this.#queue.desire(msg.desired, this.#server);
        return;
      case 'confirmed':
        this.#confirmation.onConfirmed(msg.deploymentId);
        return;
      case 'cancel':
        this.#queue.cancel(msg.deploymentId);
        return;
      case 'error':
        this.#o.log(`server: ${msg.message}`);
        return;
      case 'going-away':
        // The socket noted the window; the reconnect delay uses it.
        return;
      case 'plan':
        // A few wait their turn; more are refused at once rather than queued without bound.
        if (this.#plans >= MAX_WAITING_PLANS) {
          this.#connection.send({
            type: 'plan-result',
            requestId: msg.requestId,
            plan: null,
            error: `busy: ${this.#plans} plans are running or waiting on this machine`,
          });
          return;
        }
        this.#plans++;
        this.#planning = this.#planning
          .then(() => this.#plan(msg))
          .finally(() => {
            this.#plans--;
          });
        return;
    }
  }

  /** Answers one `plan` request, within its timeout, on the connection current at the end. */
  async #plan(msg: Extract<ServerMessage, { type: 'plan' }>): Promise<void> {
    const timeout = AbortSignal.timeout(msg.timeoutSeconds * 1000);
    const signal = this.#stopping ? AbortSignal.any([timeout, this.#stopping]) : timeout;
    let answer: { plan: MachinePlan | null; error: string | null };
    if (!this.#o.plan) answer = { plan: null, error: 'this agent does not plan deployments' };
    else {
      try {
        answer = { plan: await this.#o.plan(msg, { caches: this.#caches, signal }), error: null };
      } catch (err) {
        const why = timeout.aborted
          ? `gave up after ${msg.timeoutSeconds}s`
          : (err as Error).message.slice(0, 3000);
        answer = { plan: null, error: why };
      }
    }
    this.#o.log(`plan ${msg.requestId}: ${answer.error ?? 'answered'}`);
    this.#connection.send({ type: 'plan-result', requestId: msg.requestId, ...answer });
  }

  /** One deployment, from start to its result on the way to the server. */
  async #run(d: DesiredDeployment, running: RunningDeployment, resume: AgentJournal | undefined) {
    // Whether the current connection is to another server than the deployment's (a deployment
    // resumed from the journal after the agent was pointed elsewhere): it tells that one nothing.
    // Before the welcome, lines are held (and dropped at the welcome if it is another server).
    const elsewhere = () => this.#server !== undefined && !sameServer(running.owner, this.#server);
    const here = () => this.#server !== undefined && sameServer(running.owner, this.#server);
    const result = await this.#o.deploy(
      d,
      {
        caches: this.#caches,
        owner: running.owner,
        signal: this.#stopping,
        line: (text, from) => {
          if (!elsewhere()) this.#logs.line(d.id, text, from);
        },
        step: (step) => {
          running.step = step;
          if (here()) this.#connection.send({ type: 'progress', deploymentId: d.id, step });
        },
        confirm: (id, timeoutMs) => this.#confirmation.confirm(id, timeoutMs),
        send: (msg) => here() && this.#connection.send(msg),
      },
      resume,
    );
    if (result === null) {
      this.#o.log(`deployment ${d.id}: stopped while downloading; the next start resumes it`);
      return;
    }
    this.#o.log(`deployment ${d.id}: ${result.state}${result.reason ? ` (${result.reason})` : ''}`);
    this.#queue.finish(running.owner, d.id, result);
    this.#logs.flush();
    if (elsewhere()) {
      this.#o.log(`deployment ${d.id}: belongs to another server; not reported to this one`);
      void this.#outbox.report(result, running.owner);
      return;
    }
    if (!(await this.#outbox.report(result, running.owner))) this.#connection.reconnectNow();
  }
}
