/**
 * The typed event bus: a sliding `PubSub` of {@link DiagnosticEvent.DiagnosticEvent}
 * that stamps every event with a process-wide increasing `seq` and a `Clock`
 * timestamp.
 *
 * Back-pressure policy: a publisher never waits. Each subscriber may fall at
 * most `capacity` events behind; past that, *its* oldest events are dropped
 * (subscribers that keep up lose nothing), the loss is counted per subscriber,
 * and a `diagnostic.events.dropped` event reports it to everyone, at most once
 * per `dropReportInterval` per subscriber. Memory is bounded by `capacity`
 * events however many publishers there are and however stuck a subscriber is.
 *
 * Delivery: a publish never runs subscriber code. A subscriber that waits for
 * events is set going on its own scheduler turn, where it takes every event
 * that arrived meanwhile as one batch, in `seq` order. `publishUnsafe` lets a
 * service change its state and publish the event saying so in one synchronous
 * step, so events are stamped in the order the changes happened.
 *
 * Observers (`observe`) are the exception, by design: a synchronous function
 * called with every event inside the publishing step, in `seq` order. Nothing
 * can be dropped for an observer, so bookkeeping that must see every event to
 * stay true (the metrics recorder, the stability log) observes instead of
 * subscribing. An observer runs on the publisher's path: it must be cheap,
 * never block and never publish; a throw is caught and counted
 * (`observerFailures`), so a bug in bookkeeping never fails the publisher.
 *
 * The same sequence numbers are handed out by {@link DiagnosticBus} `nextSeq`
 * to number reported activity signals, so a signal's number and the watermark
 * recorded at a teardown are comparable (fencing).
 *
 * @since 0.1.0
 */
import * as Arr from "effect/Array"
import * as Cause from "effect/Cause"
import * as Channel from "effect/Channel"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as PubSub from "effect/PubSub"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as DiagnosticEvent from "./DiagnosticEvent.ts"

/**
 * Options of the bus.
 *
 * @category config
 * @since 0.1.0
 */
export interface Options {
  /**
   * How many events one subscriber may fall behind before its oldest events
   * are dropped.
   * @default 4096
   */
  readonly capacity?: number | undefined
  /**
   * The shortest time between two drop reports for one subscriber.
   * @default "1 second"
   */
  readonly dropReportInterval?: Duration.Input | undefined
}

/**
 * Per-subscriber figures.
 *
 * @category models
 * @since 0.1.0
 */
export interface SubscriberStats {
  readonly name: string
  readonly backlog: number
  readonly dropped: number
}

/**
 * Bus-wide figures.
 *
 * @category models
 * @since 0.1.0
 */
export interface Stats {
  readonly published: number
  /** Events dropped for subscribers that fell behind (never for observers). */
  readonly dropped: number
  /** Observers registered now. */
  readonly observers: number
  /** Times an observer threw (the event still reached everyone else). */
  readonly observerFailures: number
  readonly watermark: number
  readonly subscribers: ReadonlyArray<SubscriberStats>
}

/**
 * @category services
 * @since 0.1.0
 */
export class DiagnosticBus extends Context.Service<DiagnosticBus, {
  /** Stamps a draft with the next `seq` and the current time, and publishes it. Never waits. */
  readonly publish: (draft: DiagnosticEvent.Draft) => Effect.Effect<DiagnosticEvent.DiagnosticEvent>
  /**
   * `publish`, synchronously: for a caller that must change its state and
   * publish the event saying so in one step, so that no other fiber can run
   * (or interrupt it) in between, and subscribers see events in the order
   * the changes happened. `at` is the time of the change, when the caller
   * has just read it from the same `Clock` (by default the bus reads it).
   */
  readonly publishUnsafe: (draft: DiagnosticEvent.Draft, at?: number) => DiagnosticEvent.DiagnosticEvent
  /** Allocates a sequence number without publishing (to number a reported signal). */
  readonly nextSeq: Effect.Effect<number>
  /** The last sequence number handed out (0 before the first). */
  readonly watermark: Effect.Effect<number>
  /** `watermark`, synchronously (see `publishUnsafe`). */
  readonly watermarkUnsafe: () => number
  /**
   * Subscribes now (nothing published after this call is missed, up to the
   * capacity) and returns the events as a Stream; the subscription ends with
   * the scope.
   */
  readonly subscribe: (
    options?: { readonly name?: string | undefined }
  ) => Effect.Effect<Stream.Stream<DiagnosticEvent.DiagnosticEvent>, never, Scope.Scope>
  /**
   * Calls `observer` with every event published from now on, synchronously
   * inside the publishing step and in `seq` order, until the scope closes.
   * Lossless: an observer is never behind, so nothing is dropped for it. For
   * cheap synchronous bookkeeping only (it runs on the publisher's path):
   * it must not block or publish; a throw is caught and counted.
   */
  readonly observe: (
    observer: (event: DiagnosticEvent.DiagnosticEvent) => void
  ) => Effect.Effect<void, never, Scope.Scope>
  readonly stats: Effect.Effect<Stats>
}>()("effect-session-runtime/DiagnosticBus") {}

interface Subscriber {
  readonly name: string
  readonly subscription: PubSub.Subscription<DiagnosticEvent.DiagnosticEvent>
  dropped: number
  unreported: number
  lastReportAt: number
  /** Set while the subscriber waits for events: resumes it on its own scheduler turn. */
  wake: (() => void) | undefined
}

/**
 * Builds the bus; the PubSub is shut down when the surrounding scope closes.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.fnUntraced(function*(options: Options = {}) {
  const capacity = Math.max(1, Math.floor(options.capacity ?? 4096))
  const reportEveryMs = Duration.toMillis(Duration.fromInputUnsafe(options.dropReportInterval ?? "1 second"))
  const subscribers = new Set<Subscriber>()
  let sleeping = 0 // subscribers with `wake` set
  const wakeAll = (): void => {
    if (sleeping === 0) return
    for (const sub of subscribers) {
      const wake = sub.wake
      if (wake === undefined) continue
      sub.wake = undefined
      sleeping--
      wake()
    }
  }
  const hub = yield* Effect.acquireRelease(
    PubSub.sliding<DiagnosticEvent.DiagnosticEvent>({ capacity }),
    // Subscribers already woken take what is pending first; then waiting ones
    // wake up to find the bus shut down, and end.
    (hub) => Effect.yieldNow.pipe(Effect.andThen(PubSub.shutdown(hub)), Effect.andThen(Effect.sync(wakeAll)))
  )
  const clock = yield* Clock.Clock
  let seq = 0
  let published = 0
  let droppedTotal = 0
  let anonymous = 0
  // Copied on change, so a publish iterates a stable array. One record per
  // registration, so the same function observing twice is removed once.
  let observers: ReadonlyArray<{ readonly observe: (event: DiagnosticEvent.DiagnosticEvent) => void }> = []
  let observerFailures = 0
  const notify = (event: DiagnosticEvent.DiagnosticEvent): void => {
    for (let i = 0; i < observers.length; i++) {
      try {
        observers[i]!.observe(event)
      } catch {
        observerFailures++
      }
    }
  }
  const observe = (observer: (event: DiagnosticEvent.DiagnosticEvent) => void) =>
    Effect.acquireRelease(
      Effect.sync(() => {
        const registration = { observe: observer }
        observers = [...observers, registration]
        return registration
      }),
      (registration) =>
        Effect.sync(() => {
          observers = observers.filter((o) => o !== registration)
        })
    ).pipe(Effect.asVoid)

  // Counts, before an event goes in, which subscribers will lose their oldest event
  // (only when the PubSub is full: some subscriber is `capacity` behind).
  const countSurplus = (now: number): ReadonlyArray<Subscriber> | undefined => {
    if (!hub.pubsub.isFull()) return undefined
    let due: Array<Subscriber> | undefined
    for (const sub of subscribers) {
      const backlog = PubSub.remainingUnsafe(sub.subscription)
      if (Option.isNone(backlog) || backlog.value < capacity) continue
      sub.dropped++
      sub.unreported++
      droppedTotal++
      if (now - sub.lastReportAt >= reportEveryMs) (due ??= []).push(sub)
    }
    return due
  }

  // The sliding strategy of `PubSub.publish`, synchronously: when a subscriber
  // is `capacity` behind, its oldest event makes room for the new one.
  const enqueue = (event: DiagnosticEvent.DiagnosticEvent): void => {
    if (PubSub.publishUnsafe(hub, event)) return
    if (PubSub.isShutdownUnsafe(hub) || Option.isSome(hub.ended.current)) return
    do hub.pubsub.slide()
    while (!hub.pubsub.publish(event))
    hub.strategy.completeSubscribersUnsafe(hub.pubsub, hub.subscribers)
  }

  const publishUnsafe = (draft: DiagnosticEvent.Draft, at?: number): DiagnosticEvent.DiagnosticEvent => {
    const now = at ?? clock.currentTimeMillisUnsafe()
    const event = DiagnosticEvent.fromDraft(draft, ++seq, now)
    published++
    if (observers.length !== 0) notify(event)
    const due = subscribers.size === 0 ? undefined : countSurplus(now)
    enqueue(event)
    wakeAll()
    if (due !== undefined) {
      for (const sub of due) {
        const dropped = sub.unreported
        sub.unreported = 0
        sub.lastReportAt = now
        publishUnsafe({
          _tag: "diagnostic.events.dropped",
          subscriber: sub.name,
          dropped,
          totalDropped: sub.dropped
        })
      }
    }
    return event
  }

  const subscribe = (subscribeOptions?: { readonly name?: string | undefined }) =>
    Effect.gen(function*() {
      const subscription = yield* PubSub.subscribe(hub)
      const sub: Subscriber = {
        name: subscribeOptions?.name ?? `subscriber-${++anonymous}`,
        subscription,
        dropped: 0,
        unreported: 0,
        lastReportAt: Number.NEGATIVE_INFINITY,
        wake: undefined
      }
      subscribers.add(sub)
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          if (sub.wake !== undefined) sleeping--
          sub.wake = undefined
          subscribers.delete(sub)
        })
      )
      // Waits without a PubSub poller: completing one would run the subscriber
      // inside the publisher's call, once per event. Instead a publish sets the
      // subscriber going on its own scheduler turn, where it takes every event
      // that arrived meanwhile as one batch.
      const wait = Effect.callback<void>((resume) => {
        if (PubSub.isShutdownUnsafe(hub) || subscription.subscription.size() > 0) return resume(Effect.void)
        sub.wake = () => resume(Effect.yieldNow)
        sleeping++
        return Effect.sync(() => {
          if (sub.wake === undefined) return
          sub.wake = undefined
          sleeping--
        })
      })
      const pull: Effect.Effect<Arr.NonEmptyReadonlyArray<DiagnosticEvent.DiagnosticEvent>> = Effect.flatMap(
        PubSub.takeUpTo(subscription, capacity),
        (batch) => Arr.isReadonlyArrayNonEmpty(batch) ? Effect.succeed(batch) : Effect.andThen(wait, pull)
      )
      return Stream.fromChannel(Channel.fromPull(Effect.succeed(Effect.onInterrupt(pull, () => Cause.done()))))
    })

  return DiagnosticBus.of({
    publish: (draft) => Effect.sync(() => publishUnsafe(draft)),
    publishUnsafe,
    nextSeq: Effect.sync(() => ++seq),
    watermark: Effect.sync(() => seq),
    watermarkUnsafe: () => seq,
    subscribe,
    observe,
    stats: Effect.sync(() => ({
      published,
      dropped: droppedTotal,
      observers: observers.length,
      observerFailures,
      watermark: seq,
      subscribers: Array.from(subscribers, (sub) => ({
        name: sub.name,
        backlog: Option.getOrElse(PubSub.remainingUnsafe(sub.subscription), () => 0),
        dropped: sub.dropped
      }))
    }))
  })
})

/**
 * The bus as a layer.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (options?: Options): Layer.Layer<DiagnosticBus> => Layer.effect(DiagnosticBus, make(options))
