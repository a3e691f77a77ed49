/**
 * The demo server's settings as data: where it listens, where its locks live,
 * and the thresholds it runs the runtime with. Two presets: `server` (what
 * `npm start` uses: short enough to watch a `hang` get aborted, long enough
 * to read `/sessions` meanwhile) and `scenario` (what the seed-failures
 * scenario uses, so the whole run stays well under a minute).
 */
import { Context, Deferred, Duration, Effect, Layer } from "effect"

export interface Thresholds {
  /** Age past which a session gets attention. */
  readonly warn: Duration.Duration
  /** Age at which stalled work under a live owner is aborted. */
  readonly abort: Duration.Duration
  /** Watchdog heartbeat. */
  readonly heartbeat: Duration.Duration
  /** How long an aborted turn may take to run its finalizers. */
  readonly settle: Duration.Duration
}

export interface Settings {
  readonly host: string
  /** 0 picks a free port. */
  readonly port: number
  /** The lock directory; a fresh temporary one (removed at shutdown) when undefined. */
  readonly lockDirectory: string | undefined
  readonly thresholds: Thresholds
  /** How long one probe of a lock holder's pid is reused. */
  readonly probeTtl: Duration.Duration
  /** How long the `slow` behaviour's tool runs. */
  readonly slowTool: Duration.Duration
  /** Largest accepted request body. */
  readonly maxBodyBytes: number
  /** Turns that may wait in one session's queue (LaneFull → 429 beyond). */
  readonly maxQueueDepth: number
}

/** The default port of `npm start`. */
export const defaultPort = 8787

export const server: Settings = {
  host: "127.0.0.1",
  port: defaultPort,
  lockDirectory: undefined,
  thresholds: {
    warn: Duration.seconds(10),
    abort: Duration.seconds(30),
    heartbeat: Duration.seconds(1),
    settle: Duration.seconds(5)
  },
  probeTtl: Duration.seconds(1),
  slowTool: Duration.seconds(15),
  maxBodyBytes: 64 * 1024,
  maxQueueDepth: 32
}

export const scenario: Settings = {
  ...server,
  port: 0,
  thresholds: {
    warn: Duration.seconds(2),
    abort: Duration.seconds(6),
    heartbeat: Duration.millis(500),
    settle: Duration.seconds(2)
  },
  probeTtl: Duration.millis(250),
  slowTool: Duration.seconds(3)
}

/** The running server: its settings and the lock directory in use. */
export class DemoInfo extends Context.Service<DemoInfo, {
  readonly settings: Settings
  readonly lockDirectory: string
}>()("demo/DemoInfo") {}

/**
 * Told when the server starts to stop, before it closes its connections:
 * long-lived responses (the event stream, `?wait=true`) end then instead of
 * holding the shutdown up.
 */
export class Stopping extends Context.Service<Stopping, {
  /** Completes when the server starts to stop. */
  readonly await: Effect.Effect<void>
  readonly signal: Effect.Effect<void>
}>()("demo/Stopping") {
  static readonly layer = Layer.effect(
    Stopping,
    Effect.map(Deferred.make<void>(), (deferred) =>
      Stopping.of({ await: Deferred.await(deferred), signal: Effect.asVoid(Deferred.succeed(deferred, undefined)) }))
  )
}
