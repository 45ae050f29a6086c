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
import { driveDeployment, newJournal } from './run-deployment.ts';

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
  #caches: readonly AgentCache[] = [];
  #running: { id: string; done: Promise<void> } | undefined;
  #next: DesiredDeployment | null = null;
  readonly #finished = new Set<string>();
  #unreported: DeploymentResult[] = [];
  #pendingLines = new Map<string, LogLine[]>();
  #flushTimer: NodeJS.Timeout | undefined;
  #nixVersion = 'unknown';
  readonly #journal: JournalFile;
  /** A deployment found unfinished in the journal, waiting for the first connection to resume. */
  #resume: AgentJournal | undefined;
  /** The deployment waiting for the server's confirmation over a new connection. */
  #confirming: { id: string; resolve: (ok: boolean) => void } | undefined;
  #forceReconnect = false;

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
          : backoff.next();
      this.#forceReconnect = false;
      this.#o.log(`${outcome.why}; reconnecting in ${(delay / 1000).toFixed(1)}s`);
      await sleep(delay, signal);
    }
    await this.#running?.done;
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
  #connectOnce(signal: AbortSignal): Promise<{ welcomed: boolean; why: string }> {
    return new Promise((resolve) => {
      const url = `${this.#o.server.replace(/^http/, 'ws').replace(/\/+$/, '')}${AGENT_WS_PATH}?agent=${encodeURIComponent(this.#o.name)}`;
      const ws = new WebSocket(url, {
        headers: { Authorization: `Bearer ${this.#o.token}` },
        maxPayload: MAX_AGENT_MESSAGE_BYTES,
        handshakeTimeout: 15_000,
      });
      let welcomed = false;
      let why = 'connection closed';
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
        this.#ws = ws;
        this.#send({
          type: 'hello',
          protocol: AGENT_PROTOCOL_VERSION,
          observed: await this.#observed(),
          running: this.#running?.id ?? null,
          unreported: this.#unreported.slice(-100),
        });
      });
      ws.on('pong', () => {
        alive = true;
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
            this.#flushLogs();
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
        }
      });
      ws.on('close', (code, reason) => {
        clearInterval(heartbeat);
        signal.removeEventListener('abort', onAbort);
        if (this.#ws === ws) this.#ws = undefined;
        // Results the server may not have processed go again with the next hello.
        for (const r of this.#awaitingAck.values())
          if (!this.#unreported.some((u) => u.deploymentId === r.deploymentId)) this.#unreported.push(r);
        this.#awaitingAck.clear();
        if (code === CLOSE_CODES.revoked)
          why = 'the server closed the connection: the agent token was revoked';
        else if (code !== 1006 && reason.length > 0)
          why = `the server closed the connection (${code}: ${reason.toString()})`;
        resolve({ welcomed, why });
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
    if (this.#unreported.length === 0 && this.#awaitingAck.size === 0) return;
    const ids = new Set([...this.#unreported.map((r) => r.deploymentId), ...this.#awaitingAck.keys()]);
    this.#unreported = [];
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
      // A new connection proves the new configuration can reach the server; the old one does not.
      this.#forceReconnect = true;
      if (this.#ws) this.#ws.terminate();
      else this.#forceReconnect = false;
    });
  }

  #start(d: DesiredDeployment, journal?: AgentJournal): void {
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
          onLine: (text) => this.#logLine(d.id, text),
          onStep: (step) => this.#send({ type: 'progress', deploymentId: d.id, step }),
          confirm: (id, timeoutMs) => this.#confirm(id, timeoutMs),
        },
        start,
      ).catch((err: unknown): DeploymentResult => {
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
      this.#o.log(`deployment ${d.id}: ${result.state}${result.reason ? ` (${result.reason})` : ''}`);
      this.#finished.add(d.id);
      this.#flushLogs();
      const delivered = this.#send({ type: 'result', result, observed: await this.#observed() });
      if (delivered) this.#awaitingAck.set(result.deploymentId, result);
      else this.#unreported.push(result);
    })();
    this.#running = { id: d.id, done };
    void done.finally(() => {
      this.#running = undefined;
      const next = this.#next;
      this.#next = null;
      if (next && !this.#finished.has(next.id)) this.#start(next);
    });
  }

  #logLine(deploymentId: string, text: string): void {
    let lines = this.#pendingLines.get(deploymentId);
    if (!lines) {
      lines = [];
      this.#pendingLines.set(deploymentId, lines);
    }
    lines.push({ t: Date.now(), text: text.slice(0, 16_384) });
    if (lines.length > MAX_PENDING_LINES) lines.splice(0, lines.length - MAX_PENDING_LINES);
    // Lines go out together every 50 ms: one message per burst, not per line.
    this.#flushTimer ??= setTimeout(() => this.#flushLogs(), 50);
  }

  #flushLogs(): void {
    if (this.#flushTimer) clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    for (const [deploymentId, lines] of this.#pendingLines) {
      while (lines.length > 0) {
        const batch = lines.slice(0, 1000);
        if (!this.#send({ type: 'log', deploymentId, lines: batch })) return;
        lines.splice(0, batch.length);
      }
      this.#pendingLines.delete(deploymentId);
    }
  }
}
