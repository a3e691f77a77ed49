/**
 * The whole runtime as one layer, with sensible defaults: the diagnostic bus,
 * activity tracking, session lanes that take the session write lock around
 * each turn, recovery, the watchdog with the Node event-loop sampler (whose
 * every sample also sets the event-loop gauges), the stability log, metrics
 * fed from the events and gauges read from the lanes and the tracker.
 *
 * ```ts
 * const Runtime = SessionRuntime.layer({ lock: { directory: "/var/lib/agent/locks" } })
 * ```
 *
 * Every part stays replaceable: each service is also its own module with its
 * own layer, and `lock.layer` takes any `SessionLock` backend (for example
 * `SessionLockSql`).
 *
 * @since 0.1.0
 */
import * as EffectConfig from "effect/Config"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as ActivityTracker from "./ActivityTracker.ts"
import * as DiagnosticBus from "./DiagnosticBus.ts"
import * as lockDirectory from "./internal/lockDirectory.ts"
import * as LaneGuard from "./LaneGuard.ts"
import * as MetricsFromEvents from "./MetricsFromEvents.ts"
import * as MetricsFromState from "./MetricsFromState.ts"
import * as NodeEventLoopMonitor from "./NodeEventLoopMonitor.ts"
import * as Recovery from "./Recovery.ts"
import * as SessionLanes from "./SessionLanes.ts"
import * as SessionLock from "./SessionLock.ts"
import * as SessionLockFile from "./SessionLockFile.ts"
import type * as SessionMetrics from "./SessionMetrics.ts"
import * as StabilityLog from "./StabilityLog.ts"
import * as Watchdog from "./Watchdog.ts"

/**
 * Where the session write lock lives.
 *
 * @category config
 * @since 0.1.0
 */
export interface LockConfig<LE = never> {
  /**
   * `file` (a lock directory shared by the processes of one host), `memory`
   * (one process), or `none` (turns take no lock).
   * @default "file"
   */
  readonly backend?: "file" | "memory" | "none" | undefined
  /**
   * The lock directory of the file backend. It must be owned by this user and
   * not writable by others (a symbolic link only with `file.allowSymlinkDirectory`).
   * @default {@link defaultLockDirectory}: `$XDG_RUNTIME_DIR/effect-session-runtime/locks`, else
   * `${os.tmpdir()}/effect-session-runtime-<uid>/locks`
   */
  readonly directory?: string | undefined
  /** File backend tuning (lease, grace, probe memo time). */
  readonly file?: Omit<SessionLockFile.Options, "directory"> | undefined
  /** Options of the acquire around each turn (timeout, stale time, max hold, retry schedule). */
  readonly acquire?: SessionLock.AcquireOptions | undefined
  /** Any other backend (for example PostgreSQL); takes precedence over `backend`. */
  readonly layer?: Layer.Layer<SessionLock.SessionLock, LE, DiagnosticBus.DiagnosticBus> | undefined
}

/**
 * Configuration of the runtime; every field is optional.
 *
 * @category config
 * @since 0.1.0
 */
export interface Config<LE = never> {
  readonly bus?: DiagnosticBus.Options | undefined
  readonly tracker?: ActivityTracker.Options | undefined
  readonly lanes?: SessionLanes.Options | undefined
  readonly lock?: LockConfig<LE> | undefined
  readonly recovery?: Recovery.Options | undefined
  /** `false` runs no heartbeat (ticks only when `Watchdog.tick` is called). */
  readonly watchdog?: Watchdog.Options | false | undefined
  /**
   * Sample the Node event loop each tick (starvation guard).
   * @default true
   */
  readonly eventLoopMonitor?: boolean | undefined
  readonly stabilityLog?: StabilityLog.Options | undefined
  /** Metric names and cardinality caps. */
  readonly metrics?: SessionMetrics.Options | undefined
}

/**
 * Every service the runtime provides.
 *
 * @category models
 * @since 0.1.0
 */
export type Services =
  | DiagnosticBus.DiagnosticBus
  | ActivityTracker.ActivityTracker
  | SessionLanes.SessionLanes
  | LaneGuard.LaneGuard
  | Recovery.Recovery
  | Watchdog.Watchdog
  | StabilityLog.StabilityLog
  | NodeEventLoopMonitor.EventLoopMonitor
  | SessionLock.SessionLock
  | MetricsFromEvents.MetricsFromEvents
  | SessionMetrics.SessionMetrics

/**
 * Why the runtime could not start: the lock directory is unusable, the
 * metric options are invalid, or a custom lock layer failed.
 *
 * @category errors
 * @since 0.1.0
 */
export type StartError<LE = never> = SessionLock.LockIoError | SessionMetrics.InvalidMetricsOptions | LE

/**
 * The default lock directory, per user: the processes of one user on one host
 * share it, and no other user can squat it.
 * `$XDG_RUNTIME_DIR/effect-session-runtime/locks` when `XDG_RUNTIME_DIR` (read
 * through `Config`) names a directory owned by this user and closed to others,
 * else `${os.tmpdir()}/effect-session-runtime-<uid>/locks`, created with mode
 * 0700. Either way the file backend refuses it if someone else owns it or can
 * write to it.
 *
 * @category config
 * @since 0.1.0
 */
export const defaultLockDirectory: Effect.Effect<string> = Effect.gen(function*() {
  const runtimeDir = yield* EffectConfig.String("XDG_RUNTIME_DIR").pipe(
    EffectConfig.option,
    Effect.orElseSucceed(() => Option.none<string>())
  )
  return yield* Effect.promise(() => lockDirectory.defaultFor({ runtimeDir: Option.getOrUndefined(runtimeDir) }))
})

const lockLayer = <LE>(
  config: LockConfig<LE>
): Layer.Layer<
  SessionLock.SessionLock | LaneGuard.LaneGuard,
  SessionLock.LockIoError | LE,
  DiagnosticBus.DiagnosticBus
> => {
  if (config.layer === undefined && config.backend === "none") {
    return Layer.merge(LaneGuard.layerNone, SessionLock.layerMemory())
  }
  const lock: Layer.Layer<SessionLock.SessionLock, SessionLock.LockIoError | LE, DiagnosticBus.DiagnosticBus> =
    config.layer ??
    (config.backend === "memory"
      ? SessionLock.layerMemory()
      : config.directory !== undefined
      ? SessionLockFile.layer({ ...config.file, directory: config.directory })
      : Layer.unwrap(
        Effect.map(defaultLockDirectory, (directory) => SessionLockFile.layer({ ...config.file, directory }))
      ))
  return LaneGuard.layerSessionLock(config.acquire).pipe(Layer.provideMerge(lock))
}

/**
 * The runtime. Closing the layer closes every session (running their
 * finalizers and releasing their locks) and stops the heartbeat.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = <LE = never>(config: Config<LE> = {}): Layer.Layer<Services, StartError<LE>> => {
  const bus = DiagnosticBus.layer(config.bus)
  const metrics = MetricsFromEvents.layer(config.metrics)
  // Every watchdog sample also sets the event-loop gauges, so they follow the
  // process instead of keeping the reading of the last liveness warning.
  const monitor = config.eventLoopMonitor === false
    ? NodeEventLoopMonitor.layerTest
    : MetricsFromEvents.layerEventLoopGauges.pipe(Layer.provide(NodeEventLoopMonitor.layer()))
  const core = SessionLanes.layer(config.lanes).pipe(
    Layer.provideMerge(lockLayer(config.lock ?? {})),
    Layer.provideMerge(ActivityTracker.layer(config.tracker))
  )
  const supervision = (config.watchdog === false
    ? Watchdog.layer({ interval: "24 hours" })
    : Watchdog.layer(config.watchdog)).pipe(
      Layer.provideMerge(Recovery.layer(config.recovery)),
      Layer.provideMerge(core),
      Layer.provideMerge(monitor)
    )
  // The gauges of state are read from the lanes and the tracker themselves.
  const gauges = MetricsFromState.layer.pipe(Layer.provideMerge(supervision))
  return Layer.mergeAll(gauges, StabilityLog.layer(config.stabilityLog)).pipe(
    Layer.provideMerge(metrics),
    Layer.provideMerge(bus)
  )
}

/**
 * The runtime for tests and examples: an in-memory lock, fast thresholds
 * (warn 1 s, abort 3 s, heartbeat 500 ms, settle 1 s, idle TTL 1 minute) and
 * the test event-loop monitor (no real sampling).
 *
 * @category layers
 * @since 0.1.0
 */
export const layerTest = <LE = never>(config: Config<LE> = {}): Layer.Layer<Services, StartError<LE>> =>
  layer({
    lock: { backend: "memory" },
    watchdog: { interval: "500 millis", warn: "1 second", abort: "3 seconds" },
    recovery: { settle: "1 second" },
    lanes: { idleTtl: "1 minute" },
    eventLoopMonitor: false,
    ...config
  })
