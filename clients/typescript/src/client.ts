// The client: one agent process, the JSON-RPC peer on its pipes, the event
// stream with backpressure, approvals, and the cancel ladder of deputy-host.

import { spawn, type ChildProcess } from "node:child_process";
import { performance } from "node:perf_hooks";

import { excerpt, LineSplitter, type FramingProblem } from "./framing.js";
import {
  ErrorCodes,
  eventType,
  Methods,
  PROTOCOL_VERSION,
  type AgentRequests,
  type ApprovalResult,
  type Event,
  type EventMsg,
  type ExecApprovalParams,
  type HostRequests,
  type InitializeParams,
  type InitializeResult,
  type InputItem,
  type JsonValue,
  type Op,
  type PatchApprovalParams,
  type PeerInfo,
  type RequestId,
  type ReviewDecision,
  type SessionStartParams,
  type SessionStartResult,
  type SubmitResult,
} from "./protocol.js";
import { killTree } from "./tree.js";

/** The whole cancel ladder's budget: the agent's tree is dead and reaped by then. */
export const DEFAULT_SHUTDOWN_BUDGET_MS = 500;
/** Of the budget, the part kept for the kill (as deputy-host's `KILL_RESERVE`). */
export const KILL_RESERVE_MS = 150;
/** How long `initialize` and `session/start` may take each. */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
/** Events held for a consumer that lags before the agent's stdout is paused. */
export const DEFAULT_MAX_BUFFERED_EVENTS = 512;
/** The longest line read from the agent (deputy-host's default too). */
export const DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024;
/** How much of the agent's stderr is kept for error reports. */
export const STDERR_TAIL_BYTES = 64 * 1024;

/** During an ending, events kept beyond the buffer; past it only those that close something. */
const ENDING_OVERFLOW = 4096;
/** After the agent exited on its own: how long its stdout may stay open (a grandchild holding it). */
const EXIT_DRAIN_GRACE_MS = 200;
/** After the tree was killed: how long to wait for stderr's end (for a complete tail). */
const STDERR_GRACE_MS = 50;
/** After SIGKILL: the longest wait for the exit to be reported (a process in the D state). */
const REAP_WAIT_MS = 2_000;

const CLIENT_INFO: PeerInfo = { name: "deputy-agent-client", version: "0.1.0" };

/** Why a {@link DeputyError} happened. */
export type DeputyErrorKind =
  /** The agent could not be started (e.g. no such program). */
  | "spawn_failed"
  /** `initialize` or `session/start` got no answer in time; the agent was killed. */
  | "handshake_timeout"
  /** The agent ended before `shutdown_complete` (crashed, or exited on its own). */
  | "agent_exited"
  /** The agent answered a request with a JSON-RPC error (`code`, `data`). */
  | "rpc_error"
  /** The client was shut down or cancelled before the request was answered. */
  | "closed"
  /** The message is longer than the agent reads (its `capabilities.max_line_bytes`). */
  | "message_too_large";

/** Every error of this client: what happened, plus the last 64 KiB the agent wrote to stderr. */
export class DeputyError extends Error {
  override readonly name = "DeputyError";
  constructor(
    readonly kind: DeputyErrorKind,
    message: string,
    /** The end of the agent's stderr when the error happened. */
    readonly stderrTail: string,
    readonly details: {
      /** The JSON-RPC error code (`rpc_error`); see `ErrorCodes`. */
      code?: number;
      data?: JsonValue;
      exitCode?: number | null;
      signal?: NodeJS.Signals | null;
    } = {},
  ) {
    super(withTail(message, stderrTail));
  }
  /** The JSON-RPC error code, for `rpc_error`. */
  get code(): number | undefined {
    return this.details.code;
  }
}

function withTail(message: string, tail: string): string {
  if (tail.trim() === "") return message;
  const shown = tail.length > 2000 ? `…${tail.slice(-2000)}` : tail;
  return `${message}\n--- the agent's stderr (end) ---\n${shown.trimEnd()}`;
}

/** An approval the agent asks for, with `signal` aborted when it is withdrawn. */
export type ApprovalRequest =
  | { method: "approval/exec"; id: RequestId; params: ExecApprovalParams; signal: AbortSignal }
  | { method: "approval/patch"; id: RequestId; params: PatchApprovalParams; signal: AbortSignal };

/**
 * Answers approvals. `request.signal` is aborted when the agent withdraws
 * the request (`$/cancelRequest`, e.g. after an interrupt) or the client
 * ends; an answer after that is not sent. Throwing answers `denied` (fail closed).
 */
export type ApprovalHandler = (request: ApprovalRequest) => Promise<ReviewDecision> | ReviewDecision;

/** The client's own report of something it could not use; never sent by an agent. */
export type ProtocolErrorMsg = { type: "protocol_error"; message: string };

/** What the event stream yields: the agent's events, and the client's protocol errors. */
export type ClientEvent = { id: string; msg: EventMsg | ProtocolErrorMsg };

/** How the agent ended. */
export interface Ending {
  /**
   * `graceful`: it exited within the budget after `shutdown`/`cancel`;
   * `killed`: its tree was killed (the budget ran out, or a fault);
   * `exited`: it ended on its own (see `error`).
   */
  kind: "graceful" | "killed" | "exited";
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** From the start of the ladder to the tree dead and reaped (0 for `exited`). */
  elapsedMs: number;
  /** Set when the agent ended without `shutdown_complete`, or a fault killed it. */
  error?: DeputyError;
}

/** Counters of the event stream, for diagnostics and tests. */
export interface EventStats {
  /** Events waiting for the consumer now. */
  buffered: number;
  /** The most that ever waited. */
  peakBuffered: number;
  /** How many times the agent's stdout was paused for a lagging consumer. */
  pauses: number;
  /** Events dropped during an ending past the overflow (none that close something). */
  dropped: number;
}

export interface ClientOptions {
  /** The program; default `$DEPUTY_BIN`, else `deputy` on `PATH`. */
  command?: string;
  /** Its arguments; default `["agent"]` (for the default command), else none. */
  args?: string[];
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Sent in `initialize`. */
  clientInfo?: PeerInfo;
  /** Answers approvals; default: every approval is denied. */
  onApproval?: ApprovalHandler;
  /** Called with each piece of the agent's stderr (its logs), as text. */
  onStderr?: (text: string) => void;
  /** Per handshake request; default 10 s. */
  handshakeTimeoutMs?: number;
  /** The cancel ladder's budget; default 500 ms. */
  shutdownBudgetMs?: number;
  /** Events buffered before the agent's stdout is paused; default 512. */
  maxBufferedEvents?: number;
  /** The longest line read from the agent; default 16 MiB. */
  maxLineBytes?: number;
}

/** Options of {@link DeputyClient.connect}: the spawn, then the session to start. */
export interface ConnectOptions extends ClientOptions {
  session: SessionStartParams;
}

type Pending = {
  method: string;
  resolve: (result: unknown) => void;
  reject: (error: DeputyError) => void;
};

type PendingApproval = { id: RequestId; controller: AbortController; answered: boolean };

type Exit = { exitCode: number | null; signal: NodeJS.Signals | null };

type Waiter = { deliver: (next: IteratorResult<ClientEvent>) => void; fail: (error: DeputyError) => void };

/** A FIFO with O(1) shift. */
class Queue<T> {
  private items: (T | undefined)[] = [];
  private head = 0;
  get length(): number {
    return this.items.length - this.head;
  }
  push(item: T): void {
    this.items.push(item);
  }
  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head];
    this.items[this.head++] = undefined;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }
}

/** The last `limit` bytes of a stream. */
class Tail {
  private chunks: Buffer[] = [];
  private size = 0;
  constructor(private readonly limit: number) {}
  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    while (this.size - (this.chunks[0]?.length ?? 0) >= this.limit) this.size -= this.chunks.shift()!.length;
  }
  text(): string {
    const all = Buffer.concat(this.chunks);
    return all.subarray(Math.max(0, all.length - this.limit)).toString("utf8");
  }
}

/** Events that close something: kept even past the ending's overflow. */
const CLOSING_EVENTS = new Set(["task_complete", "turn_aborted", "exec_command_end", "patch_apply_end", "shutdown_complete"]);

/** Clients whose agents must not outlive this Node process. */
const live = new Set<DeputyClient>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const client of live) client.killNow();
  });
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isRequestId(v: unknown): v is RequestId {
  return typeof v === "string" || (typeof v === "number" && Number.isInteger(v));
}

/** Whether `promise` settles within `ms`. */
async function within(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), Math.max(0, ms));
  });
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

let shutdownSeq = 1;

/**
 * A Deputy agent in a child process, in a session and process group of its
 * own, spoken to over newline-delimited JSON-RPC on its stdin and stdout.
 */
export class DeputyClient {
  /** The agent's pid (also its process group and session id). */
  readonly pid: number | undefined;
  /** How the agent ended; settles once, whoever ended it. */
  readonly exited: Promise<Ending>;

  private readonly child: ChildProcess;
  private readonly command: string;
  private readonly onApproval: ApprovalHandler;
  private readonly handshakeTimeoutMs: number;
  private readonly budgetMs: number;
  private readonly maxBuffered: number;
  private readonly clientInfo: PeerInfo;
  private readonly maxLineBytes: number;
  private agentMaxLineBytes = Infinity;

  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly approvals = new Map<string, PendingApproval>();

  private readonly queue = new Queue<ClientEvent>();
  /** The consumer waiting for the next event, if any. */
  private waiter: Waiter | null = null;
  private paused = false;
  private eventsEnded = false;
  /** Thrown by the event stream once it is drained (the agent died unasked). */
  private failure: DeputyError | null = null;
  private failureThrown = false;
  private readonly counters: EventStats = { buffered: 0, peakBuffered: 0, pauses: 0, dropped: 0 };

  private readonly stderr = new Tail(STDERR_TAIL_BYTES);
  private readonly splitter: LineSplitter;
  private exit: Exit | null = null;
  private readonly exitSeen: Promise<Exit>;
  private readonly stdoutDone: Promise<void>;
  private stdoutEnded = false;
  private readonly stderrDone: Promise<void>;
  private spawnError: Error | null = null;
  private sawShutdownComplete = false;
  /** The ladder began (or the end is being handled): never pause, never ask. */
  private closing = false;
  private ending: Promise<Ending> | null = null;
  private settleExited!: (ending: Ending) => void;

  private constructor(options: ClientOptions) {
    this.command = options.command ?? (process.env["DEPUTY_BIN"] || "deputy");
    const args = options.args ?? (options.command === undefined ? ["agent"] : []);
    this.onApproval = options.onApproval ?? (() => "denied");
    this.handshakeTimeoutMs = options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
    this.budgetMs = options.shutdownBudgetMs ?? DEFAULT_SHUTDOWN_BUDGET_MS;
    this.maxBuffered = Math.max(1, options.maxBufferedEvents ?? DEFAULT_MAX_BUFFERED_EVENTS);
    this.clientInfo = options.clientInfo ?? CLIENT_INFO;
    this.maxLineBytes = options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
    this.exited = new Promise((resolve) => (this.settleExited = resolve));

    // `detached`: the agent calls setsid(), leading a session and a process
    // group of its own, so its whole tree can be found and killed.
    this.child = spawn(this.command, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ["pipe", "pipe", "pipe"],
      detached: true,
    });
    this.pid = this.child.pid;
    const child = this.child;
    const stdin = child.stdin!;
    const stdout = child.stdout!;
    const stderr = child.stderr!;

    this.exitSeen = new Promise((resolve) => {
      child.once("exit", (exitCode, signal) => {
        this.exit = { exitCode, signal };
        live.delete(this);
        resolve(this.exit);
      });
    });
    child.once("error", (error) => {
      // Spawning failed (or, rarely, a signal could not be sent).
      if (this.pid !== undefined && this.exit === null) return;
      this.spawnError = error;
      this.exit ??= { exitCode: null, signal: null };
      live.delete(this);
      this.fail(new DeputyError("spawn_failed", `cannot start ${this.command}: ${error.message}`, ""));
    });
    // Writes after the agent closed its stdin fail with EPIPE; requests then
    // fail when the agent's end is seen, so the error itself is only noise.
    stdin.on("error", () => {});

    // It stops between two lines as soon as the consumer lags (see `events`).
    const splitter = new LineSplitter(
      this.maxLineBytes,
      (line) => this.onLine(line),
      (problem) => this.onFramingProblem(problem),
      () => this.paused,
    );
    this.splitter = splitter;
    this.stdoutDone = new Promise((resolve) => {
      stdout.on("data", (chunk: Buffer) => splitter.push(chunk));
      stdout.once("end", () => splitter.end());
      stdout.once("close", () => {
        this.stdoutEnded = true;
        resolve();
      });
      stdout.on("error", () => {});
    });
    this.stderrDone = new Promise((resolve) => {
      stderr.on("data", (chunk: Buffer) => {
        this.stderr.push(chunk);
        options.onStderr?.(chunk.toString("utf8"));
      });
      stderr.once("close", () => resolve());
      stderr.on("error", () => {});
    });

    if (this.pid !== undefined) {
      live.add(this);
      installExitHook();
      void this.exitSeen.then(() => this.onExit());
    }
  }

  /** Spawns an agent (no handshake yet: call {@link initialize} and {@link startSession}). */
  static spawn(options: ClientOptions = {}): DeputyClient {
    return new DeputyClient(options);
  }

  /**
   * Spawns an agent, performs `initialize` and `session/start`, and returns
   * the client with the session ready. On failure the agent is killed and
   * the error (with its stderr tail) is thrown.
   */
  static async connect(options: ConnectOptions): Promise<DeputyClient> {
    const client = new DeputyClient(options);
    try {
      await client.initialize();
      await client.startSession(options.session);
      return client;
    } catch (error) {
      await client.cancel();
      throw error;
    }
  }

  /** The last 64 KiB the agent wrote to stderr. */
  stderrTail(): string {
    return this.stderr.text();
  }

  /** Counters of the event stream. */
  get stats(): EventStats {
    return { ...this.counters, buffered: this.queue.length };
  }

  /** The handshake: under the handshake timeout. */
  async initialize(params: Partial<InitializeParams> = {}): Promise<InitializeResult> {
    const full: InitializeParams = {
      protocol_version: PROTOCOL_VERSION,
      client_info: this.clientInfo,
      capabilities: { max_line_bytes: this.maxLineBytes },
      ...params,
    };
    const result = await this.handshake(Methods.INITIALIZE, full);
    const limit = result.capabilities.max_line_bytes;
    if (typeof limit === "number" && limit > 0) this.agentMaxLineBytes = limit;
    return result;
  }

  /** Starts the session; its `session_configured` event comes first on the event stream. */
  startSession(params: SessionStartParams): Promise<SessionStartResult> {
    return this.handshake(Methods.SESSION_START, params);
  }

  /** Submits an op; resolves with the submission id the agent uses in the events it causes. */
  submit(op: Op, id?: string): Promise<SubmitResult> {
    return this.request(Methods.SUBMIT, id === undefined ? { op } : { id, op });
  }

  /** Submits `user_input` with one text item. */
  submitText(text: string, id?: string): Promise<SubmitResult> {
    return this.submit({ type: "user_input", items: [{ type: "text", text }] }, id);
  }

  /** Asks the agent to abort the running turn (the session goes on); `turn_aborted` follows. */
  interrupt(): Promise<SubmitResult> {
    return this.submit({ type: "interrupt" });
  }

  /**
   * Runs one turn: submits `input` and yields every event until this turn's
   * `task_complete` or `turn_aborted` (yielded too). Rejects if the agent
   * refuses the input (e.g. `ErrorCodes.TURN_IN_PROGRESS`).
   */
  async *turn(input: string | InputItem[], id: string = `turn-${this.nextId}`): AsyncGenerator<ClientEvent, void> {
    const items: InputItem[] = typeof input === "string" ? [{ type: "text", text: input }] : input;
    // Events may come before the answer to `submit`: both are awaited at once.
    const answered: Promise<DeputyError | null> = this.submit({ type: "user_input", items }, id).then(
      () => null,
      (error: DeputyError) => error,
    );
    let accepted = false;
    for (;;) {
      const next = accepted ? await this.nextEvent() : await this.nextEventOr(answered);
      if ("other" in next) {
        if (next.other) throw next.other;
        accepted = true;
        continue;
      }
      if (next.done) {
        const refused = accepted ? null : await answered;
        if (refused) throw refused;
        return;
      }
      yield next.value;
      const msg = next.value.msg;
      if ((msg.type === "task_complete" || msg.type === "turn_aborted") && msg.turn_id === id) return;
    }
  }

  /**
   * The agent's events, in order, as they come; one consumer at a time.
   * A consumer that lags is not given a growing buffer: past
   * `maxBufferedEvents` the agent's stdout is paused (so the agent blocks
   * writing) until the consumer catches up. While paused nothing else is
   * read either (answers, approvals): keep consuming. The stream ends after
   * the agent's last event; it throws a {@link DeputyError} (with the
   * stderr tail) if the agent ended without `shutdown_complete` unasked.
   */
  events(): AsyncIterableIterator<ClientEvent> {
    const iterator: AsyncIterableIterator<ClientEvent> = {
      [Symbol.asyncIterator]: () => iterator,
      next: () => this.nextEvent(),
      return: async () => ({ done: true, value: undefined }),
    };
    return iterator;
  }

  /**
   * A graceful shutdown: `shutdown`, end of stdin, a wait for the exit
   * within the budget, then the tree is killed (always: grandchildren).
   */
  shutdown(): Promise<Ending> {
    return this.end(false);
  }

  /**
   * The cancel ladder (deputy-host's): pending approvals are answered
   * `abort` (their signals aborted), `interrupt` and `shutdown` are written
   * back to back, stdin is closed, the exit is awaited until the budget
   * less 150 ms, then the whole tree is frozen and killed. The tree is dead
   * and reaped within the budget (500 ms by default).
   */
  cancel(): Promise<Ending> {
    return this.end(true);
  }

  /** Kills the tree at once, synchronously (used when this Node process exits). */
  killNow(): void {
    if (this.pid !== undefined && this.exit === null) killTree(this.pid, true);
  }

  // -------------------------------------------------------------------------
  // Requests.

  /** A typed request to the agent. */
  request<M extends keyof HostRequests>(method: M, params: HostRequests[M]["params"]): Promise<HostRequests[M]["result"]> {
    return new Promise((resolve, reject) => {
      if (this.closing || this.exit !== null) {
        reject(this.closedError(method));
        return;
      }
      const id = this.nextId++;
      const line = JSON.stringify({ jsonrpc: "2.0", id, method, params });
      if (Buffer.byteLength(line) + 1 > this.agentMaxLineBytes) {
        reject(
          new DeputyError(
            "message_too_large",
            `the ${method} request is ${Buffer.byteLength(line) + 1} bytes, more than the agent reads (${this.agentMaxLineBytes})`,
            this.stderrTail(),
          ),
        );
        return;
      }
      this.pending.set(id, { method, resolve: resolve as (r: unknown) => void, reject });
      this.writeLine(line);
    });
  }

  private async handshake<M extends "initialize" | "session/start">(
    method: M,
    params: HostRequests[M]["params"],
  ): Promise<HostRequests[M]["result"]> {
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      void this.end(true);
    }, this.handshakeTimeoutMs);
    try {
      return await this.request(method, params);
    } catch (error) {
      if (!timedOut) throw error;
      // The ladder failed the request; once the agent is gone, its whole
      // stderr tail goes into the error.
      await this.ending;
      const message = `${this.command} did not answer ${method} within ${this.handshakeTimeoutMs} ms`;
      const timeout = new DeputyError("handshake_timeout", message, this.stderrTail());
      this.failure ??= timeout;
      throw timeout;
    } finally {
      clearTimeout(timer);
    }
  }

  private closedError(method: string): DeputyError {
    if (this.spawnError) {
      return new DeputyError("spawn_failed", `cannot start ${this.command}: ${this.spawnError.message}`, "");
    }
    if (this.failure) return this.failure;
    return new DeputyError("closed", `the client is closed; ${method} was not answered`, this.stderrTail());
  }

  private writeLine(line: string): void {
    const stdin = this.child.stdin;
    if (stdin && !stdin.destroyed && stdin.writable) stdin.write(line + "\n");
  }

  private send(message: Record<string, unknown>): void {
    this.writeLine(JSON.stringify({ jsonrpc: "2.0", ...message }));
  }

  // -------------------------------------------------------------------------
  // Reading.

  private onFramingProblem(problem: FramingProblem): void {
    switch (problem.kind) {
      case "too_long":
        this.protocolError(`the agent wrote a line of ${problem.bytes} bytes, over the limit of ${problem.limit}; it was skipped`);
        this.send({ id: null, error: { code: ErrorCodes.INVALID_REQUEST, message: `line longer than ${problem.limit} bytes` } });
        break;
      case "not_utf8":
        this.protocolError(`the agent wrote a line that is not UTF-8: ${problem.excerpt}`);
        this.send({ id: null, error: { code: ErrorCodes.PARSE_ERROR, message: "parse error: not UTF-8" } });
        break;
      case "partial_line_at_eof":
        this.protocolError(`the agent's output ended in the middle of a line (${problem.bytes} bytes after the last newline)`);
        break;
    }
  }

  private onLine(line: string): void {
    let message: unknown;
    try {
      message = JSON.parse(line);
    } catch (error) {
      this.protocolError(`the agent wrote a line that is not JSON (${(error as Error).message}): ${excerpt(line)}`);
      this.send({ id: null, error: { code: ErrorCodes.PARSE_ERROR, message: "parse error" } });
      return;
    }
    if (Array.isArray(message)) {
      // A batch (Deputy never sends them): each member on its own.
      if (message.length === 0) this.invalid("an empty batch", line);
      for (const member of message) this.onMessage(member, line);
      return;
    }
    this.onMessage(message, line);
  }

  private invalid(what: string, line: string): void {
    this.protocolError(`the agent wrote ${what}, not a JSON-RPC 2.0 message: ${excerpt(line)}`);
    this.send({ id: null, error: { code: ErrorCodes.INVALID_REQUEST, message: "invalid request" } });
  }

  private onMessage(message: unknown, line: string): void {
    if (!isObject(message) || message["jsonrpc"] !== "2.0") {
      this.invalid("a value", line);
      return;
    }
    const method = message["method"];
    const hasId = "id" in message;
    if (typeof method === "string") {
      if (!hasId) {
        this.onNotification(method, message["params"], line);
      } else if (isRequestId(message["id"])) {
        this.onRequest(message["id"], method, message["params"], line);
      } else {
        this.invalid("a request with an id that is neither an integer nor a string", line);
      }
    } else if (hasId && ("result" in message || "error" in message)) {
      this.onResponse(message, line);
    } else {
      this.invalid("an object", line);
    }
  }

  private onResponse(message: Record<string, unknown>, line: string): void {
    const id = message["id"];
    const error = message["error"];
    if (id === null) {
      // The agent could not read something we wrote.
      this.protocolError(`the agent rejected a line of ours: ${excerpt(JSON.stringify(error))}`);
      return;
    }
    const waiter = typeof id === "number" ? this.pending.get(id) : undefined;
    if (!waiter) return; // answers nobody waits for (e.g. the ladder's) are ignored
    this.pending.delete(id as number);
    if (error !== undefined) {
      const e = isObject(error) ? error : {};
      const code = typeof e["code"] === "number" ? e["code"] : ErrorCodes.INTERNAL_ERROR;
      const text = typeof e["message"] === "string" ? e["message"] : excerpt(line);
      const details: { code: number; data?: JsonValue } = { code };
      if (e["data"] !== undefined) details.data = e["data"] as JsonValue;
      waiter.reject(new DeputyError("rpc_error", `${waiter.method}: ${code}: ${text}`, this.stderrTail(), details));
    } else {
      waiter.resolve(message["result"]);
    }
  }

  private onNotification(method: string, params: unknown, line: string): void {
    if (method === Methods.EVENT) {
      if (isObject(params) && typeof params["id"] === "string" && isObject(params["msg"]) && typeof params["msg"]["type"] === "string") {
        this.pushEvent(params as unknown as Event);
      } else {
        this.protocolError(`the agent sent an event that is not {id, msg: {type, …}}: ${excerpt(line)}`);
      }
    } else if (method === Methods.CANCEL_REQUEST) {
      if (isObject(params) && isRequestId(params["id"])) this.withdrawApproval(params["id"]);
    } // Unknown notifications are ignored (PROTOCOL.md §4).
  }

  private onRequest(id: RequestId, method: string, params: unknown, line: string): void {
    if (method === Methods.APPROVAL_EXEC || method === Methods.APPROVAL_PATCH) {
      this.onApprovalRequest(id, method, params, line);
    } else if (method === Methods.CANCEL_REQUEST) {
      if (isObject(params) && isRequestId(params["id"])) this.withdrawApproval(params["id"]);
      this.send({ id, result: null });
    } else {
      this.send({ id, error: { code: ErrorCodes.METHOD_NOT_FOUND, message: `method not found: ${method}` } });
    }
  }

  // -------------------------------------------------------------------------
  // Approvals.

  private onApprovalRequest(id: RequestId, method: keyof AgentRequests, params: unknown, line: string): void {
    const key = JSON.stringify(id);
    const ok =
      isObject(params) &&
      typeof params["call_id"] === "string" &&
      (method === Methods.APPROVAL_EXEC ? Array.isArray(params["command"]) : isObject(params["changes"]));
    if (!ok) {
      this.protocolError(`the agent sent ${method} with params that do not decode: ${excerpt(line)}`);
      this.send({ id, error: { code: ErrorCodes.INVALID_PARAMS, message: `invalid params for ${method}` } });
      return;
    }
    if (this.closing) {
      // Ending: nothing more is allowed.
      this.send({ id, result: { decision: "abort" } satisfies ApprovalResult });
      return;
    }
    const controller = new AbortController();
    const approval: PendingApproval = { id, controller, answered: false };
    this.approvals.set(key, approval);
    const request =
      method === Methods.APPROVAL_EXEC
        ? { method, id, params: params as unknown as ExecApprovalParams, signal: controller.signal }
        : { method, id, params: params as unknown as PatchApprovalParams, signal: controller.signal };
    const answer = (decision: ReviewDecision): void => {
      if (approval.answered) return;
      approval.answered = true;
      this.approvals.delete(key);
      this.send({ id, result: { decision } satisfies ApprovalResult });
    };
    let result: Promise<ReviewDecision> | ReviewDecision;
    try {
      result = this.onApproval(request);
    } catch {
      answer("denied");
      return;
    }
    Promise.resolve(result).then(
      (decision) => answer(isDecision(decision) ? decision : "denied"),
      () => answer("denied"),
    );
  }

  /** The agent withdrew a request: the handler's signal is aborted, the answer is `-32800`. */
  private withdrawApproval(id: RequestId): void {
    const key = JSON.stringify(id);
    const approval = this.approvals.get(key);
    if (!approval || approval.answered) return;
    approval.answered = true;
    this.approvals.delete(key);
    this.send({ id, error: { code: ErrorCodes.REQUEST_CANCELLED, message: "request cancelled" } });
    approval.controller.abort(new DeputyError("closed", "the agent withdrew this approval request", ""));
  }

  // -------------------------------------------------------------------------
  // Events and backpressure.

  private protocolError(message: string): void {
    this.pushEvent({ id: "", msg: { type: "protocol_error", message } });
  }

  private pushEvent(event: ClientEvent): void {
    if (event.msg.type === "shutdown_complete") this.sawShutdownComplete = true;
    if (this.waiter) {
      const waiter = this.waiter;
      this.waiter = null;
      waiter.deliver({ done: false, value: event });
      return;
    }
    if (this.closing && this.queue.length >= this.maxBuffered + ENDING_OVERFLOW && !CLOSING_EVENTS.has(eventType(event.msg))) {
      this.counters.dropped++;
      return;
    }
    this.queue.push(event);
    if (this.queue.length > this.counters.peakBuffered) this.counters.peakBuffered = this.queue.length;
    if (!this.closing && !this.paused && this.queue.length >= this.maxBuffered) {
      this.paused = true;
      this.counters.pauses++;
      this.child.stdout?.pause();
    }
  }

  private resume(): void {
    if (!this.paused) return;
    this.paused = false;
    // First the lines held back; they may fill the buffer again.
    if (this.splitter.resume() && !this.paused) this.child.stdout?.resume();
  }

  private nextEvent(): Promise<IteratorResult<ClientEvent>> {
    const event = this.queue.shift();
    if (event !== undefined) {
      if (this.paused && (this.closing || this.queue.length <= this.maxBuffered / 2)) this.resume();
      return Promise.resolve({ done: false, value: event });
    }
    this.resume();
    if (this.eventsEnded) {
      if (this.failure && !this.failureThrown) {
        this.failureThrown = true;
        return Promise.reject(this.failure);
      }
      return Promise.resolve({ done: true, value: undefined });
    }
    return new Promise((deliver, fail) => {
      this.waiter = { deliver, fail };
    });
  }

  /**
   * The next event, or `other`'s value if it settles first. Whichever comes
   * first wins in this one thread, so no event is lost to the race.
   */
  private nextEventOr<T>(other: Promise<T>): Promise<IteratorResult<ClientEvent> | { other: T }> {
    if (this.queue.length > 0 || this.eventsEnded) return this.nextEvent();
    this.resume();
    return new Promise((resolve, reject) => {
      const waiter: Waiter = { deliver: resolve, fail: reject };
      this.waiter = waiter;
      void other.then((value) => {
        if (this.waiter !== waiter) return;
        this.waiter = null;
        resolve({ other: value });
      });
    });
  }

  /** No more events will come: wake the consumer (with the failure, if any). */
  private endEvents(): void {
    if (this.eventsEnded) return;
    this.eventsEnded = true;
    if (this.waiter) {
      const waiter = this.waiter;
      this.waiter = null;
      if (this.failure && !this.failureThrown) {
        this.failureThrown = true;
        waiter.fail(this.failure);
      } else {
        waiter.deliver({ done: true, value: undefined });
      }
    }
  }

  // -------------------------------------------------------------------------
  // Endings.

  /** Every request still waiting fails, every approval is withdrawn. */
  private failPending(error: (method: string) => DeputyError): void {
    for (const [id, waiter] of this.pending) {
      this.pending.delete(id);
      waiter.reject(error(waiter.method));
    }
    for (const approval of this.approvals.values()) {
      approval.answered = true;
      approval.controller.abort(new DeputyError("closed", "the client is ending", ""));
    }
    this.approvals.clear();
  }

  private fail(error: DeputyError): void {
    this.failure ??= error;
    this.closing = true;
    this.failPending(() => error);
    this.endEvents();
    this.settleExited({ kind: "exited", exitCode: null, signal: null, elapsedMs: 0, error });
  }

  /** The agent exited while no ladder runs: it ended on its own. */
  private async onExit(): Promise<void> {
    if (this.ending) return;
    this.closing = true;
    this.resume();
    this.ending = (async () => {
      // Its last lines: until stdout ends, within a grace (a grandchild may hold it).
      await within(this.stdoutDone, EXIT_DRAIN_GRACE_MS);
      this.finalize();
      await within(this.stderrDone, STDERR_GRACE_MS);
      const { exitCode, signal } = this.exit!;
      const ending: Ending = { kind: "exited", exitCode, signal, elapsedMs: 0 };
      if (!this.sawShutdownComplete) {
        const how = signal ? `was killed by ${signal}` : `exited with status ${exitCode}`;
        ending.error = new DeputyError("agent_exited", `the agent ${how} before shutdown_complete`, this.stderrTail(), {
          exitCode,
          signal,
        });
        this.failure ??= ending.error;
      }
      this.failPending((method) => this.failure ?? this.closedError(method));
      this.endEvents();
      this.settleExited(ending);
      return ending;
    })();
  }

  /** Kills what is left of the tree and stops reading a stdout that a leftover holds open. */
  private finalize(): void {
    if (this.pid !== undefined) killTree(this.pid, this.exit === null);
    this.child.stdin?.destroy();
    if (!this.stdoutEnded) this.child.stdout?.destroy();
  }

  private end(interrupt: boolean): Promise<Ending> {
    if (!this.ending) this.ending = this.ladder(interrupt);
    return this.ending;
  }

  private async ladder(interrupt: boolean): Promise<Ending> {
    const start = performance.now();
    const drainMs = this.budgetMs - Math.min(KILL_RESERVE_MS, this.budgetMs / 3);
    const left = (): number => drainMs - (performance.now() - start);
    this.closing = true;
    this.resume();
    if (this.pid === undefined || this.spawnError) {
      const ending = await this.exited;
      return ending;
    }
    // 1. Pending approvals are answered `abort`, and their handlers told.
    for (const approval of this.approvals.values()) {
      approval.answered = true;
      this.send({ id: approval.id, result: { decision: "abort" } satisfies ApprovalResult });
      approval.controller.abort(new DeputyError("closed", "the client is cancelling the agent", ""));
    }
    this.approvals.clear();
    let kind: Ending["kind"] = "graceful";
    if (this.exit === null) {
      // 2. Interrupt and shutdown back to back, then EOF (stdout is still read).
      if (interrupt) this.send({ id: this.nextId++, method: Methods.SUBMIT, params: { op: { type: "interrupt" } } });
      const id = `deputy-client-shutdown-${this.pid}-${shutdownSeq++}`;
      this.send({ id: this.nextId++, method: Methods.SUBMIT, params: { id, op: { type: "shutdown" } } });
      this.child.stdin?.end();
      // 3. Wait for the exit until the drain window closes; then kill the tree.
      if (!(await within(this.exitSeen, left()))) {
        kind = "killed";
        killTree(this.pid, true);
        await within(this.exitSeen, REAP_WAIT_MS);
      }
    }
    // Its last events (turn_aborted, shutdown_complete), within what is left.
    await within(this.stdoutDone, left());
    // 4. Always end with a tree kill (grandchildren), and an end to reading.
    this.finalize();
    const elapsedMs = performance.now() - start;
    await within(this.stderrDone, STDERR_GRACE_MS);
    const exit = this.exit ?? { exitCode: null, signal: null };
    this.failPending((method) => this.closedError(method));
    this.endEvents();
    const ending: Ending = { kind, exitCode: exit.exitCode, signal: exit.signal, elapsedMs };
    this.settleExited(ending);
    return ending;
  }
}

function isDecision(value: unknown): value is ReviewDecision {
  return value === "approved" || value === "approved_for_session" || value === "denied" || value === "abort";
}
