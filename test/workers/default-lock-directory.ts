/**
 * A process that starts the runtime on its default lock directory (chosen
 * from this process's `TMPDIR` and `XDG_RUNTIME_DIR`), takes one session
 * lock and prints one JSON line with the outcome:
 *
 *   node default-lock-directory.ts <key>
 *
 * `{"ok":true,"directory":...,"token":1}` or
 * `{"ok":false,"tag":"LockIoError","reason":...,"path":...,"message":...}`.
 */
import { Effect } from "effect"
import * as SessionKey from "../../src/SessionKey.ts"
import * as SessionLock from "../../src/SessionLock.ts"
import * as SessionRuntime from "../../src/SessionRuntime.ts"

const [keyArg] = process.argv.slice(2)

const program = Effect.gen(function*() {
  const directory = yield* SessionRuntime.defaultLockDirectory
  const taken = yield* Effect.gen(function*() {
    const lock = yield* SessionLock.SessionLock
    const lease = yield* lock.acquire(SessionKey.makeUnsafe(keyArg!), { timeout: "60 seconds" })
    return lease.token
  }).pipe(
    Effect.scoped,
    Effect.provide(SessionRuntime.layer({ watchdog: false, eventLoopMonitor: false })),
    Effect.result
  )
  if (taken._tag === "Success") return { ok: true, directory, token: taken.success }
  const error = taken.failure
  return {
    ok: false,
    tag: error._tag,
    reason: "reason" in error ? error.reason : null,
    path: "path" in error ? error.path : null,
    message: error.message
  }
})

Effect.runPromise(program).then((outcome) => console.log(JSON.stringify(outcome)))
