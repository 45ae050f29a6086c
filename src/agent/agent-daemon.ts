import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import { Backoff, sleep } from '../lib/backoff.ts';
import { CAIRN_VERSION } from '../lib/version.ts';
import type { AgentJournal } from '../protocol/agent-journal.ts';
import {
  AGENT_PROTOCOL_VERSION,
  AGENT_WS_PATH,
  type AgentCache,
  type AgentMessage,
  CLOSE_CODES,
  type DeploymentResult,
  type DeploymentStep,
  type DesiredDeployment,
  type LogLine,
  MAX_AGENT_MESSAGE_BYTES,
  type Observed,
  serverMessageSchema,
} from '../protocol/agent-protocol.ts';
import { JournalFile } from './journal-file.ts';
import { machineHostname, nixSystem, nixVersion } from './machine-facts.ts';
import { detectProfileKind } from './profile-kind.ts';
import { readProfileState } from './profile-state.ts';
import { closureParts, readClosure } from './read-closure.ts';
import { DeploymentInterrupted, driveDeployment, newJournal } from './run-deployment.ts';

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
  readonly backoff?: { initialMs: number; maxMs: number };
}

/** The deployment the agent is running, and its latest step (said again on every reconnect). */
interface RunningDeployment {
  readonly id: string;
  done: Promise<void>;
  step: DeploymentStep | null;
}

/** How long a confirmation waits for the old connection to deliver its last log lines. */
const DRAIN_MS = 1500;

/** Lines of a deployment's log held while the connection is down. */
const MAX_PENDING_LINES = 20_000;

/**
 * The agent: one outbound WebSocket to the server, kept up with heartbeats and reconnected with
 * jittered backoff, and the deployments it is told to run, one at a time. The protocol is
 * level-triggered: on every connect it says what it runs and the server says what it should run.
 */
export class AgentDaemon {
  readonly #o: AgentOptions;
  #ws: WebSocket | undefined;
  /** The current connection attempt, open or still connecting. */
  #socket: WebSocket | undefined;
  /** Ends the wait between two connection attempts early, while the agent is waiting. */
  #wakeUp: (() => void) | undefined;
  #caches: readonly AgentCache[] = [];
  #running: RunningDeployment | undefined;
  #next: DesiredDeployment | null = null;
  readonly #finished = new Set<string>();
  #unreported: DeploymentResult[] = [];
  #pendingLines = new Map<string, LogLine[]>();
  /** Names this agent process as the source of its own log lines (see {@link #logLine}). */
  readonly #runId = `agent-${randomBytes(6).toString('hex')}`;
  #lineNumber = 0;
  #flushTimer: NodeJS.Timeout | undefined;
  #nixVersion = 'unknown';
  readonly #journal: JournalFile;
  /** A deployment found unfinished in the journal, waiting for the first connection to resume. */
  #resume: AgentJournal | undefined;
  /** The deployment waiting for the server's confirmation over a new connection. */
  #confirming: { id: string; resolve: (ok: boolean) => void } | undefined;
  #forceReconnect = false;
  /** Aborts when the agent stops; a deployment still downloading ends then, to resume next start. */
  #stopping: AbortSignal | undefined;

  constructor(options: AgentOptions) {
    this.#o = options;
    this.#journal = new JournalFile(options.stateDir);
  }

  /**
   * Reads the journal before anything else: an interrupted deployment is resumed (at once when
   * it had changed the machine, else once connected), a finished one not yet reported is reported.
   */
  async #recover(): Promise<void> {
    let read: Awaited<ReturnType<JournalFile['read']>>;
    try {
      read = await this.#journal.read();
    } catch (err) {
      this.#o.log(
        `WARNING: cannot read the journal ${this.#journal.path}: ${(err as Error).message}; starting without it`,
      );
      return;
    }
    if (read.kind === 'corrupt') {
      this.#o.log(
        `WARNING: the journal was corrupt (${read.reason}); moved it to ${read.movedTo} and starting without it. Check this machine's profile by hand.`,
      );
      return;
    }
    if (read.kind === 'none') return;
    const j = read.journal;
    this.#finished.add(j.deployment.id);
    if (j.phase === 'done') {
      if (!j.reported && j.result) this.#unreported.push(j.result);
      return;
    }
    this.#o.log(`journal: deployment ${j.deployment.id} was interrupted at ${j.phase}; finishing it first`);
    if (j.phase === 'realise') this.#resume = j;
    else this.#start(j.deployment, j);
  }

  /** Runs until the signal aborts: connects, reconnects, and runs deployments. */
  async run(signal: AbortSignal): Promise<void> {
    this.#stopping = signal;
    this.#nixVersion = await nixVersion(this.#o.env);
    await this.#recover();
    const backoff = new Backoff({ initialMs: 500, maxMs: 30_000, ...this.#o.backoff });
    while (!signal.aborted) {
      const outcome = await this.#connectOnce(signal);
      if (signal.aborted) break;
      if (outcome.welcomed) backoff.reset();
      // A deployment waiting for confirmation reconnects at once, and keeps trying quickly.
      const delay = this.#forceReconnect
        ? 0
        : this.#confirming
          ? Math.min(backoff.next(), 1000)
          : outcome.spreadMs > 0
            ? // The server went away and said over how long its agents should come back.
              Math.round(Math.random() * outcome.spreadMs)
            : Math.max(backoff.next(), outcome.retryAfterMs);
      this.#forceReconnect = false;
      this.#o.log(`${outcome.why}; reconnecting in ${(delay / 1000).toFixed(1)}s`);
      await this.#pause(delay, signal);
    }
    await this.#running?.done;
  }

  /** Waits between connection attempts, until `ms` pass, the signal aborts or {@link #reconnectNow}. */
  async #pause(ms: number, signal: AbortSignal): Promise<void> {
    const wake = new AbortController();
    const onAbort = () => wake.abort();
    signal.addEventListener('abort', onAbort, { once: true });
    this.#wakeUp = () => wake.abort();
    try {
      await sleep(ms, wake.signal);
    } finally {
      this.#wakeUp = undefined;
      signal.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Tries to connect now rather than after the backoff: the agent has something for the server
   * (a result, a confirmation) that should not wait up to the backoff's cap once the network is
   * back. Later failures back off as before.
   */
  #reconnectNow(): void {
    if (this.#wakeUp) this.#wakeUp();
    else if (!this.#ws) this.#forceReconnect = true;
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

  /** One connection, from connect to close; resolves with why it ended. */
  #connectOnce(
    signal: AbortSignal,
  ): Promise<{ welcomed: boolean; why: string; retryAfterMs: number; spreadMs: number }> {
    return new Promise((resolve) => {
      const url = `${this.#o.server.replace(/^http/, 'ws').replace(/\/+$/, '')}${AGENT_WS_PATH}?agent=${encodeURIComponent(this.#o.name)}`;
      const ws = new WebSocket(url, {
        headers: { Authorization: `Bearer ${this.#o.token}` },
        maxPayload: MAX_AGENT_MESSAGE_BYTES,
        handshakeTimeout: 15_000,
      });
      this.#socket = ws;
      let welcomed = false;
      let why = 'connection closed';
      let retryAfterMs = 0;
      let spreadMs = 0;
      let alive = true;
      const heartbeat = setInterval(() => {
        if (!alive) {
          why = 'the server stopped answering heartbeats';
          ws.terminate();
          return;
        }
        alive = false;
        if (ws.readyState === ws.OPEN) ws.ping();
      }, this.#o.heartbeatMs ?? 10_000);
      const onAbort = () => ws.close(1000, 'agent stopping');
      signal.addEventListener('abort', onAbort, { once: true });

      ws.on('unexpected-response', (_req, res) => {
        // A busy server (503) or one refusing too many attempts (429) says when to come back.
        const retryAfter = Number(res.headers['retry-after']);
        if (Number.isInteger(retryAfter) && retryAfter > 0) retryAfterMs = Math.min(retryAfter, 300) * 1000;
        let body = '';
        res.on('data', (d: Buffer) => {
          body += d.toString();
        });
        res.on('end', () => {
          let message = body;
          try {
            message = (JSON.parse(body) as { message?: string }).message ?? body;
          } catch {
            // Not our error body: show it as it is.
          }
          why = `the server refused the connection (HTTP ${res.statusCode}): ${message.trim()}`;
          ws.terminate();
        });
      });
      ws.on('open', async () => {
        const observed = await this.#observed();
        if (ws.readyState !== ws.OPEN) return;
        // Only now can anything be sent on it: the server closes a connection whose first
        // message is not hello (a log flush used to slip in while observed() ran).
        this.#ws = ws;
        // The server finishes a deployment on its result, and followers stop reading its log
        // there: a result whose log lines are still held goes after them, once welcomed.
        const carried = this.#unreported.filter((r) => !this.#pendingLines.has(r.deploymentId)).slice(0, 100);
        this.#unreported = this.#unreported.filter((r) => !carried.includes(r));
        for (const r of carried) this.#awaitingAck.set(r.deploymentId, r);
        this.#send({
          type: 'hello',
          protocol: AGENT_PROTOCOL_VERSION,
          observed,
          running: this.#running?.id ?? null,
          unreported: carried,
        });
      });
      ws.on('pong', (data) => {
        alive = true;
        this.#linesReceived(data);
      });
      ws.on('ping', () => {
        alive = true;
      });
      ws.on('message', (data) => {
        alive = true;
        let msg: ReturnType<typeof serverMessageSchema.parse>;
        try {
          msg = serverMessageSchema.parse(JSON.parse(data.toString()));
        } catch (err) {
          this.#o.log(`ignoring an invalid message from the server: ${(err as Error).message.slice(0, 200)}`);
          return;
        }
        switch (msg.type) {
          case 'welcome':
            if (!welcomed) this.#o.log(`connected to ${this.#o.server} as ${msg.agent}`);
            welcomed = true;
            this.#caches = msg.caches;
            // The server has seen the results sent with hello.
            this.#acknowledged();
            // Progress sent while the link was down was lost: say again where the running
            // deployment is, before the logs and the confirmation (the server confirms only a
            // deployment it knows is running).
            if (this.#running?.step)
              this.#send({ type: 'progress', deploymentId: this.#running.id, step: this.#running.step });
            this.#flushLogs();
            void this.#sendUnreported();
            if (this.#confirming) this.#send({ type: 'confirm', deploymentId: this.#confirming.id });
            if (this.#resume) {
              const j = this.#resume;
              this.#resume = undefined;
              this.#start(j.deployment, j);
            }
            this.#desire(msg.desired);
            return;
          case 'desired':
            this.#acknowledged();
            this.#desire(msg.desired);
            return;
          case 'confirmed':
            if (this.#confirming?.id === msg.deploymentId) this.#confirming.resolve(true);
            return;
          case 'cancel':
            if (this.#next?.id === msg.deploymentId) this.#next = null;
            return;
          case 'error':
            this.#o.log(`server: ${msg.message}`);
            return;
          case 'going-away':
            spreadMs = msg.reconnectWithinSeconds * 1000;
            return;
        }
      });
      ws.on('close', (code, reason) => {
        clearInterval(heartbeat);
        signal.removeEventListener('abort', onAbort);
        if (this.#ws === ws) this.#ws = undefined;
        if (this.#socket === ws) this.#socket = undefined;
        // Results the server may not have processed go again with the next hello.
        for (const r of this.#awaitingAck.values())
          if (!this.#unreported.some((u) => u.deploymentId === r.deploymentId)) this.#unreported.push(r);
        this.#awaitingAck.clear();
        this.#requeueLines();
        if (code === CLOSE_CODES.revoked)
          why = 'the server closed the connection: the agent token was revoked';
        else if (code !== 1006 && reason.length > 0)
          why = `the server closed the connection (${code}: ${reason.toString()})`;
        resolve({ welcomed, why, retryAfterMs, spreadMs });
      });
      ws.on('error', (err) => {
        if (why === 'connection closed') why = `cannot connect to ${this.#o.server}: ${err.message}`;
      });
    });
  }

  #send(msg: AgentMessage): boolean {
    const ws = this.#ws;
    if (!ws || ws.readyState !== ws.OPEN) return false;
    ws.send(JSON.stringify(msg));
    return true;
  }

  /** The server says what to run: start it, or queue it behind the running one. */
  #desire(desired: DesiredDeployment | null): void {
    if (!desired) {
      this.#next = null;
      return;
    }
    if (desired.id === this.#running?.id || this.#finished.has(desired.id)) return;
    if (this.#running) {
      this.#next = desired;
      return;
    }
    this.#start(desired);
  }

  /** The server has everything sent before: results need not be sent again. */
  #acknowledged(): void {
    if (this.#awaitingAck.size === 0) return;
    const ids = new Set(this.#awaitingAck.keys());
    this.#awaitingAck.clear();
    void this.#journal
      .read()
      .then(async (read) => {
        if (
          read.kind === 'ok' &&
          read.journal.phase === 'done' &&
          ids.has(read.journal.deployment.id) &&
          !read.journal.reported
        ) {
          await this.#journal.write({ ...read.journal, reported: true, updatedAt: Date.now() });
        }
      })
      .catch((err: unknown) => this.#o.log(`cannot update the journal: ${(err as Error).message}`));
  }

  /** Results sent on the current connection that the server has not yet shown it has. */
  readonly #awaitingAck = new Map<string, DeploymentResult>();

  /** Sends the results hello did not carry, after the log lines flushed before this call. */
  async #sendUnreported(): Promise<void> {
    if (this.#unreported.length === 0) return;
    const observed = await this.#observed();
    for (const result of this.#unreported.splice(0)) {
      if (this.#send({ type: 'result', result, observed }))
        this.#awaitingAck.set(result.deploymentId, result);
      else this.#unreported.push(result);
    }
  }

  /** Opens a new connection and waits for the server to confirm the deployment over it. */
  #confirm(id: string, timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => done(false), timeoutMs);
      const done = (ok: boolean) => {
        clearTimeout(timer);
        if (this.#confirming?.id === id) this.#confirming = undefined;
        resolve(ok);
      };
      this.#confirming = { id, resolve: done };
      // A new connection proves the new configuration can reach the server; the old one does not,
      // nor does one whose TCP handshake may have happened before the switch: drop any attempt.
      const old = this.#socket;
      if (!old) {
        this.#reconnectNow();
        return;
      }
      this.#forceReconnect = true;
      // The lines just logged go out on the old connection first, and the agent waits briefly
      // for the server to show it read them: dropped unread, they would be sent again, twice
      // over when the server had them after all.
      this.#flushLogs();
      void this.#drained(DRAIN_MS).then(() => old.terminate());
    });
  }

  /** Resolves once the server has shown it read every log line sent, or after `ms`. */
  #drained(ms: number): Promise<void> {
    if (this.#unconfirmedLines.length === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(finish, ms);
      const previous = this.#onDrained;
      function finish() {
        clearTimeout(timer);
        previous?.();
        resolve();
      }
      this.#onDrained = finish;
    });
  }

  #start(d: DesiredDeployment, journal?: AgentJournal): void {
    // Recorded before the deployment starts: a resumed one reports its first step at once.
    const running: RunningDeployment = { id: d.id, done: Promise.resolve(), step: null };
    this.#running = running;
    const done = (async () => {
      this.#o.log(`deployment ${d.id}: switching ${this.#o.profile} to ${d.storePath}`);
      let start = journal;
      if (!start) {
        start = newJournal(d);
        await this.#journal.write(start);
      }
      const result = await driveDeployment(
        {
          profile: this.#o.profile,
          caches: this.#caches,
          token: this.#o.token,
          env: this.#o.env,
          stateDir: this.#o.stateDir,
          journal: this.#journal,
          onLine: (text, from) => this.#logLine(d.id, text, from),
          onStep: (step) => {
            running.step = step;
            this.#send({ type: 'progress', deploymentId: d.id, step });
          },
          confirm: (id, timeoutMs) => this.#confirm(id, timeoutMs),
          onRealised: (storePath) => this.#reportClosure(d.id, storePath),
          ...(this.#stopping ? { signal: this.#stopping } : {}),
        },
        start,
      ).catch((err: unknown): DeploymentResult | null => {
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
      });
      if (result === null) {
        this.#o.log(`deployment ${d.id}: stopped while downloading; the next start resumes it`);
        return;
      }
      this.#o.log(`deployment ${d.id}: ${result.state}${result.reason ? ` (${result.reason})` : ''}`);
      this.#finished.add(d.id);
      this.#flushLogs();
      const delivered = this.#send({ type: 'result', result, observed: await this.#observed() });
      if (delivered) this.#awaitingAck.set(result.deploymentId, result);
      else {
        this.#unreported.push(result);
        this.#reconnectNow();
      }
    })();
    running.done = done;
    void done.finally(() => {
      this.#running = undefined;
      const next = this.#next;
      this.#next = null;
      if (next && !this.#finished.has(next.id) && !this.#stopping?.aborted) this.#start(next);
    });
  }

  /**
   * Tells the server the closure just realised (paths, NAR sizes, references), in parts that
   * fit a message. Best effort: the deployment goes on whatever happens here.
   */
  async #reportClosure(deploymentId: string, storePath: string): Promise<void> {
    try {
      const parts = closureParts(await readClosure(this.#o.env, storePath), MAX_AGENT_MESSAGE_BYTES / 2);
      for (const [i, paths] of parts.entries()) {
        this.#send({ type: 'closure', deploymentId, paths, final: i === parts.length - 1 });
      }
    } catch (err) {
      this.#o.log(`deployment ${deploymentId}: cannot report the closure: ${(err as Error).message}`);
    }
  }

  #logLine(deploymentId: string, text: string, from?: { src: string; n: number }): void {
    let lines = this.#pendingLines.get(deploymentId);
    if (!lines) {
      lines = [];
      this.#pendingLines.set(deploymentId, lines);
    }
    // Numbered, so that a batch sent again after a dropped connection is not shown twice: by
    // the source's own number when it has one, else in this process's run.
    const n = from ?? { src: this.#runId, n: this.#lineNumber++ };
    lines.push({ t: Date.now(), text: text.slice(0, 16_384), src: n.src, n: n.n });
    if (lines.length > MAX_PENDING_LINES) lines.splice(0, lines.length - MAX_PENDING_LINES);
    // Lines go out together every 50 ms: one message per burst, not per line.
    this.#flushTimer ??= setTimeout(() => this.#flushLogs(), 50);
  }

  #flushLogs(): void {
    if (this.#flushTimer) clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    let sent = false;
    try {
      for (const [deploymentId, lines] of this.#pendingLines) {
        while (lines.length > 0) {
          const batch = lines.slice(0, 1000);
          if (!this.#send({ type: 'log', deploymentId, lines: batch })) return;
          sent = true;
          this.#unconfirmedLines.push({ ping: this.#pings + 1, deploymentId, lines: batch });
          lines.splice(0, batch.length);
        }
        this.#pendingLines.delete(deploymentId);
      }
    } finally {
      // The pong to this ping proves the server read every batch sent before it.
      if (sent && this.#ws?.readyState === this.#ws?.OPEN) this.#ws?.ping(String(++this.#pings));
      // A peer that never answers pings must not make the agent hold every line forever.
      let held = this.#unconfirmedLines.reduce((n, b) => n + b.lines.length, 0);
      while (held > MAX_PENDING_LINES) held -= this.#unconfirmedLines.shift()?.lines.length ?? held;
    }
  }

  /**
   * Log batches sent on the current connection that the server has not yet been shown to have
   * read, by the number of the ping sent after them. A link that dies takes unread bytes with
   * it (often the very lines that say what broke it), and nothing else would tell.
   */
  #unconfirmedLines: Array<{ ping: number; deploymentId: string; lines: LogLine[] }> = [];
  #pings = 0;

  /** A pong: the batches sent before its ping reached the server. */
  #linesReceived(data: Buffer): void {
    const n = Number(data.toString());
    if (!Number.isInteger(n) || n <= 0) return;
    this.#unconfirmedLines = this.#unconfirmedLines.filter((b) => b.ping > n);
    if (this.#unconfirmedLines.length > 0) return;
    const drained = this.#onDrained;
    this.#onDrained = undefined;
    drained?.();
  }

  /** Called once no sent line awaits the server's pong. */
  #onDrained: (() => void) | undefined;

  /**
   * The connection closed: batches it may have lost go back in front of the held lines, to be
   * sent on the next connection (a line the server did read, whose pong was lost, comes twice).
   */
  #requeueLines(): void {
    const lost = this.#unconfirmedLines;
    this.#unconfirmedLines = [];
    const drained = this.#onDrained;
    this.#onDrained = undefined;
    drained?.();
    for (const b of lost.reverse()) {
      const held = this.#pendingLines.get(b.deploymentId) ?? [];
      this.#pendingLines.delete(b.deploymentId);
      this.#pendingLines.set(b.deploymentId, [...b.lines, ...held].slice(-MAX_PENDING_LINES));
    }
  }
}
