#!/usr/bin/env node
/**
 * The package's command line, `effect-session-runtime` (`npm run cli -- ...`
 * inside the repository):
 *
 *   effect-session-runtime doctor locks --dir <dir> [--fix] [--json] [--allow-symlink]
 *
 * Exit codes: 0 healthy (or fixed), 1 stale locks remain or the lock directory is
 * refused, 2 bad usage or a command that cannot run here (Node older than 22.19,
 * `@effect/platform-node` not installed), said in one line.
 *
 * Everything is imported after those two checks, so a wrong Node or a missing
 * optional peer gets that line instead of a stack trace.
 *
 * @since 0.1.0
 */
import type * as Runtime from "effect/Runtime"

const version = "0.1.0"

const cannotRun = (message: string): void => {
  process.stderr.write(`effect-session-runtime: ${message}\n`)
  process.exitCode = 2
}

const nodeIsSupported = (): boolean => {
  const [major = 0, minor = 0] = process.versions.node.split(".").map(Number)
  return major > 22 || (major === 22 && minor >= 19)
}

const isMissingPackage = (error: unknown, name: string): boolean =>
  error instanceof Error && "code" in error && error.code === "ERR_MODULE_NOT_FOUND" &&
  error.message.includes(`'${name}'`)

const main = async (): Promise<void> => {
  if (!nodeIsSupported()) {
    return cannotRun(`needs Node >= 22.19 and this is Node ${process.version}; run it with a newer Node`)
  }
  const platform = await import("@effect/platform-node").catch((error: unknown) => {
    if (isMissingPackage(error, "@effect/platform-node")) return undefined
    throw error
  })
  if (platform === undefined) {
    return cannotRun("the command line runs on @effect/platform-node, which is not installed: " +
      "npm install @effect/platform-node")
  }
  const [Cause, CliError, Command, Effect, Exit, EffectRuntime, Doctor] = await Promise.all([
    import("effect/Cause"),
    import("effect/cli/CliError"),
    import("effect/cli/Command"),
    import("effect/Effect"),
    import("effect/Exit"),
    import("effect/Runtime"),
    import("./Doctor.ts")
  ])
  // Usage errors (unknown flags, missing values) exit with 2; the doctor's own
  // failures carry their exit code; anything else is 1.
  const teardown: Runtime.Teardown = (exit, onExit) => {
    if (Exit.isSuccess(exit)) return onExit(0)
    if (Cause.hasInterruptsOnly(exit.cause)) return onExit(130)
    const error = Cause.squash(exit.cause)
    if (CliError.isCliError(error)) return onExit(2)
    return onExit(EffectRuntime.getErrorExitCode(error))
  }
  Doctor.cli.pipe(
    Command.run({ version }),
    Effect.provide(platform.NodeServices.layer),
    (program) => platform.NodeRuntime.runMain(program, { teardown })
  )
}

void main()
