/**
 * The demo server's HTTP API, as `effect/http` routes over the runtime's
 * services:
 *
 * | route | what |
 * |---|---|
 * | `POST /sessions/:key/messages` | `{ text, behaviour?, admission? }` → the admission (`?wait=true`: the turn's result) |
 * | `GET /sessions` | every session: state, queue, generation, markers with ages, verdict and evidence |
 * | `GET /sessions/:key` | one session (404 when unknown) |
 * | `GET /events` | Server-Sent Events: every diagnostic event as JSON (`event:` its type, `id:` its seq) |
 * | `GET /stability?limit=&type=&sinceSeq=` | the sanitised stability log and its summary |
 * | `GET /metrics` | Prometheus text |
 * | `GET /` | what this server is and how it is tuned |
 *
 * Every error is JSON `{ error, message, ... }` with a 4xx status that says
 * what was wrong, and a rejected request changes nothing: the key and the
 * body are validated before any lane is touched.
 */
import { ByteSize, Clock, Duration, Effect, Layer, Result, Schema, Stream } from "effect"
import {
  HttpIncomingMessage,
  HttpRouter,
  type HttpServerError,
  HttpServerRequest,
  HttpServerResponse
} from "effect/http"
import { ActivityTracker } from "../../src/ActivityTracker.ts"
import { DiagnosticBus } from "../../src/DiagnosticBus.ts"
import * as PrometheusEndpoint from "../../src/PrometheusEndpoint.ts"
import * as SessionKey from "../../src/SessionKey.ts"
import { type Admission, LaneFull, SessionLanes } from "../../src/SessionLanes.ts"
import { StabilityLog } from "../../src/StabilityLog.ts"
import * as EventBroadcast from "./EventBroadcast.ts"
import { Behaviour, SimulatedAgent } from "./SimulatedAgent.ts"
import * as SessionView from "./SessionView.ts"
import { DemoInfo, Stopping } from "./Settings.ts"

/** The body of `POST /sessions/:key/messages`. */
export const MessageBody = Schema.Struct({
  text: Schema.String.check(Schema.isNonEmpty(), Schema.isMaxLength(16_000)),
  behaviour: Schema.optionalKey(Behaviour),
  admission: Schema.optionalKey(Schema.Literals(["enqueue", "reject", "interrupt"]))
})
export type MessageBody = typeof MessageBody.Type

const decodeBody = Schema.decodeUnknownResult(MessageBody)

const problem = (status: number, error: string, message: string, fields: Record<string, unknown> = {}) =>
  HttpServerResponse.jsonUnsafe({ error, message, ...fields }, { status })

const invalidKey = (error: SessionKey.InvalidSessionKey) =>
  problem(400, "InvalidSessionKey", error.message, { rule: error.rule })

const admissionJson = (admission: Admission) => {
  switch (admission._tag) {
    case "Started":
      return { admission: "started" }
    case "Enqueued":
      return { admission: "enqueued", position: admission.position }
    case "Rejected":
      return { admission: "rejected", reason: admission.reason }
    case "InterruptedPrevious":
      return { admission: "interrupted_previous", previousTurnId: admission.previousTurnId }
  }
}

const keyParam = Effect.map(HttpRouter.params, (params) => SessionKey.decodeResult(params.key ?? ""))

const searchParams = (request: HttpServerRequest.HttpServerRequest) =>
  new URL(request.url, "http://localhost").searchParams

// Reads the body within the size limit: a declared length over it is refused
// before anything is read, and a body that turns out longer is cut off.
const readBody = (request: HttpServerRequest.HttpServerRequest, maxBytes: number) =>
  Effect.gen(function*() {
    const tooLarge = problem(
      413,
      "BodyTooLarge",
      `The request body is larger than ${maxBytes} bytes; send a shorter message.`,
      { limitBytes: maxBytes }
    )
    const declared = Number(request.headers["content-length"] ?? "0")
    if (declared > maxBytes) return Result.fail(tooLarge)
    const read = yield* request.text.pipe(
      Effect.provideService(HttpIncomingMessage.MaxBodySize, ByteSize.bytes(maxBytes)),
      Effect.result
    )
    if (Result.isSuccess(read)) return Result.succeed(read.success)
    const error: HttpServerError.HttpServerError = read.failure
    const reason = error.reason
    return Result.fail(
      reason._tag === "RequestParseError" && reason.reason === "BodyTooLarge"
        ? tooLarge
        : problem(400, "UnreadableBody", "The request body could not be read.")
    )
  })

const postMessage = HttpRouter.add(
  "POST",
  "/sessions/:key/messages",
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const info = yield* DemoInfo
    const key = yield* keyParam
    if (Result.isFailure(key)) return invalidKey(key.failure)
    const contentType = request.headers["content-type"]
    if (contentType !== undefined && !/^application\/json\b/i.test(contentType)) {
      return problem(415, "UnsupportedMediaType", `Send the message as application/json, not ${contentType}.`)
    }
    const raw = yield* readBody(request, info.settings.maxBodyBytes)
    if (Result.isFailure(raw)) return raw.failure
    let parsed: unknown
    try {
      parsed = JSON.parse(raw.success)
    } catch (cause) {
      return problem(400, "MalformedJson", `The request body is not valid JSON: ${(cause as Error).message}.`)
    }
    const body = decodeBody(parsed)
    if (Result.isFailure(body)) {
      return problem(
        400,
        "InvalidBody",
        "Expected { text: non-empty string (at most 16000 characters), " +
          "behaviour?: normal | slow | hang | crash | native-leak, admission?: enqueue | reject | interrupt }.",
        { detail: body.failure.message }
      )
    }
    const lanes = yield* SessionLanes
    const agent = yield* SimulatedAgent
    const message = { text: body.success.text, behaviour: body.success.behaviour ?? "normal" }
    const submitted = yield* lanes.submit(key.success, agent.reply(message), {
      admission: body.success.admission
    }).pipe(Effect.result)
    if (Result.isFailure(submitted)) {
      const full: LaneFull = submitted.failure
      return problem(429, "LaneFull", full.message, { maxQueueDepth: full.maxQueueDepth })
    }
    const submission = submitted.success
    const accepted = {
      sessionKey: key.success,
      turnId: submission.turnId,
      behaviour: message.behaviour,
      ...admissionJson(submission.admission)
    }
    if (submission.admission._tag === "Rejected") {
      return HttpServerResponse.jsonUnsafe(
        { ...accepted, error: "SessionBusy", message: "The session is busy and the admission policy is 'reject'." },
        { status: 409 }
      )
    }
    if (searchParams(request).get("wait") !== "true") {
      return HttpServerResponse.jsonUnsafe(accepted, { status: 202 })
    }
    // Waiting is the client's business: a client that goes away stops waiting, the turn goes on.
    const stopping = yield* Stopping
    const exit = yield* Effect.exit(submission.result).pipe(Effect.raceFirst(Effect.as(stopping.await, undefined)))
    if (exit === undefined) {
      return problem(503, "ShuttingDown", "The server is stopping; the turn was not awaited.", accepted)
    }
    return HttpServerResponse.jsonUnsafe({
      ...accepted,
      result: exit._tag === "Success"
        ? { outcome: "success", reply: exit.value }
        : { outcome: "failed", detail: String(exit.cause).split("\n")[0] }
    })
  })
)

const sessionsNow = Effect.gen(function*() {
  const lanes = yield* SessionLanes
  const tracker = yield* ActivityTracker
  const info = yield* DemoInfo
  const now = yield* Clock.currentTimeMillis
  const warnMs = Duration.toMillis(info.settings.thresholds.warn)
  const views = new Map((yield* lanes.list).map((view) => [view.sessionKey, view]))
  const activities = new Map((yield* tracker.snapshotAll).map((snapshot) => [snapshot.sessionKey, snapshot]))
  const keys = Array.from(new Set([...views.keys(), ...activities.keys()])).sort()
  return keys.map((key) => SessionView.make(key, views.get(key), activities.get(key)!, now, warnMs))
})

const listSessions = HttpRouter.add(
  "GET",
  "/sessions",
  Effect.map(sessionsNow, (sessions) => HttpServerResponse.jsonUnsafe({ sessions }))
)

const getSession = HttpRouter.add(
  "GET",
  "/sessions/:key",
  Effect.gen(function*() {
    const key = yield* keyParam
    if (Result.isFailure(key)) return invalidKey(key.failure)
    const lanes = yield* SessionLanes
    const tracker = yield* ActivityTracker
    const info = yield* DemoInfo
    const lane = yield* lanes.view(key.success)
    const activity = yield* tracker.snapshot(key.success)
    if (lane === undefined && activity.runs.length === 0 && activity.markers.length === 0) {
      return problem(404, "SessionNotFound", `No open session has the key ${JSON.stringify(key.success)}.`)
    }
    const now = yield* Clock.currentTimeMillis
    const warnMs = Duration.toMillis(info.settings.thresholds.warn)
    return HttpServerResponse.jsonUnsafe(SessionView.make(key.success, lane, activity, now, warnMs))
  })
)

// Every diagnostic event, as it is published, encoded once for all readers
// (EventBroadcast). A first `ready` event (sent once the reader is in place)
// carries the last seq passed on: every event after it will be delivered.
const events = Layer.unwrap(Effect.gen(function*() {
  const broadcast = yield* EventBroadcast.make(yield* DiagnosticBus)
  return HttpRouter.add(
    "GET",
    "/events",
    Effect.gen(function*() {
      const stopping = yield* Stopping
      const stream = Stream.unwrap(broadcast.reader).pipe(Stream.interruptWhen(stopping.await))
      return HttpServerResponse.stream(stream, {
        contentType: "text/event-stream",
        headers: { "cache-control": "no-cache", "x-accel-buffering": "no" }
      })
    })
  )
}))

// A non-numeric value is passed on as it is, so the error quotes what was sent.
const numberOrRaw = (raw: string | null): number | undefined =>
  raw === null ? undefined : (/^-?\d+$/.test(raw) ? Number(raw) : raw) as number

const stability = HttpRouter.add(
  "GET",
  "/stability",
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const log = yield* StabilityLog
    const params = searchParams(request)
    const records = yield* log.query({
      limit: numberOrRaw(params.get("limit")),
      type: params.get("type") ?? undefined,
      sinceSeq: numberOrRaw(params.get("sinceSeq"))
    }).pipe(Effect.result)
    if (Result.isFailure(records)) {
      return problem(400, "InvalidStabilityQuery", records.failure.message, {
        field: records.failure.field,
        rule: records.failure.rule
      })
    }
    return HttpServerResponse.jsonUnsafe({ records: records.success, summary: yield* log.summary })
  })
)

const index = HttpRouter.add(
  "GET",
  "/",
  Effect.gen(function*() {
    const info = yield* DemoInfo
    const { thresholds } = info.settings
    return HttpServerResponse.jsonUnsafe({
      name: "effect-session-runtime demo agent server",
      lock: { backend: "file", directory: info.lockDirectory },
      thresholds: {
        warnMs: Duration.toMillis(thresholds.warn),
        abortMs: Duration.toMillis(thresholds.abort),
        heartbeatMs: Duration.toMillis(thresholds.heartbeat),
        settleMs: Duration.toMillis(thresholds.settle)
      },
      behaviours: Behaviour.literals,
      routes: [
        "POST /sessions/:key/messages",
        "GET /sessions",
        "GET /sessions/:key",
        "GET /events",
        "GET /stability?limit=&type=&sinceSeq=",
        "GET /metrics"
      ]
    })
  })
)

const notFound = HttpRouter.add(
  "*",
  "*",
  Effect.map(HttpServerRequest.HttpServerRequest, (request) =>
    problem(404, "NotFound", `No route ${request.method} ${request.url}; GET / lists the routes.`))
)

/** Every route of the demo server. */
export const routes = Layer.mergeAll(
  postMessage,
  listSessions,
  getSession,
  events,
  stability,
  index,
  notFound,
  Layer.orDie(PrometheusEndpoint.layerHttp())
)
