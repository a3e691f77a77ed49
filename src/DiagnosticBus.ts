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
 * The same sequence numbers are handed out by {@link DiagnosticBus} `nextSeq`
 * to number reported activity signals, so a signal's number and the watermark
 * recorded at a teardown are comparable (fencing).
 *
 * @since 0.1.0
 */
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
  readonly dropped: number
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
  /** Allocates a sequence number without publishing (to number a reported signal). */
  readonly nextSeq: Effect.Effect<number>
  /** The last sequence number handed out (0 before the first). */
  readonly watermark: Effect.Effect<number>
  /**
   * Subscribes now (nothing published after this call is missed, up to the
   * capacity) and returns the events as a Stream; the subscription ends with
   * the scope.
   */
  readonly subscribe: (
    options?: { readonly name?: string | undefined }
  ) => Effect.Effect<Stream.Stream<DiagnosticEvent.DiagnosticEvent>, never, Scope.Scope>
  readonly stats: Effect.Effect<Stats>
}>()("effect-session-runtime/DiagnosticBus") {}

interface Subscriber {
  readonly name: string
  readonly subscription: PubSub.Subscription<DiagnosticEvent.DiagnosticEvent>
  dropped: number
  unreported: number
  lastReportAt: number
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
  const hub = yield* Effect.acquireRelease(
    PubSub.sliding<DiagnosticEvent.DiagnosticEvent>({ capacity }),
    PubSub.shutdown
  )
  const clock = yield* Clock.Clock
  const subscribers = new Set<Subscriber>()
  let seq = 0
  let published = 0
  let droppedTotal = 0
  let anonymous = 0

  // Counts, before an event goes in, which subscribers will lose their oldest event.
  const countSurplus = (now: number): ReadonlyArray<Subscriber> | undefined => {
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

  const offer = (draft: DiagnosticEvent.Draft): Effect.Effect<DiagnosticEvent.DiagnosticEvent> =>
    Effect.suspend(() => {
      const now = clock.currentTimeMillisUnsafe()
      const event = DiagnosticEvent.fromDraft(draft, ++seq, now)
      published++
      const due = subscribers.size === 0 ? undefined : countSurplus(now)
      const sent = PubSub.publish(hub, event)
      if (due === undefined) return Effect.as(sent, event)
      return sent.pipe(
        Effect.andThen(Effect.forEach(due, (sub) => {
          const dropped = sub.unreported
          sub.unreported = 0
          sub.lastReportAt = now
          return offer({
            _tag: "diagnostic.events.dropped",
            subscriber: sub.name,
            dropped,
            totalDropped: sub.dropped
          })
        }, { discard: true })),
        Effect.as(event)
      )
    })

  const subscribe = (subscribeOptions?: { readonly name?: string | undefined }) =>
    Effect.gen(function*() {
      const subscription = yield* PubSub.subscribe(hub)
      const sub: Subscriber = {
        name: subscribeOptions?.name ?? `subscriber-${++anonymous}`,
        subscription,
        dropped: 0,
        unreported: 0,
        lastReportAt: Number.NEGATIVE_INFINITY
      }
      subscribers.add(sub)
      yield* Effect.addFinalizer(() => Effect.sync(() => subscribers.delete(sub)))
      return Stream.fromSubscription(subscription)
    })

  return DiagnosticBus.of({
    publish: offer,
    nextSeq: Effect.sync(() => ++seq),
    watermark: Effect.sync(() => seq),
    subscribe,
    stats: Effect.sync(() => ({
      published,
      dropped: droppedTotal,
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
