#!/usr/bin/env node
/**
 * The package's command line, `effect-session-runtime` (`npm run cli -- ...`
 * inside the repository):
 *
 *   effect-session-runtime doctor locks --dir <dir> [--fix] [--json] [--allow-symlink]
 *
 * Exit codes: 0 healthy (or fixed), 1 stale locks remain or the lock directory is
 * refused, 2 bad usage.
 *
 * @since 0.1.0
 */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import * as Cause from "effect/Cause"
import * as CliError from "effect/cli/CliError"
import * as Command from "effect/cli/Command"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Runtime from "effect/Runtime"
import * as Doctor from "./Doctor.ts"

const version = "0.1.0"

// Usage errors (unknown flags, missing values) exit with 2; the doctor's own
// failures carry their exit code; anything else is 1.
const teardown: Runtime.Teardown = (exit, onExit) => {
  if (Exit.isSuccess(exit)) return onExit(0)
  if (Cause.hasInterruptsOnly(exit.cause)) return onExit(130)
  const error = Cause.squash(exit.cause)
  if (CliError.isCliError(error)) return onExit(2)
  return onExit(Runtime.getErrorExitCode(error))
}

Doctor.cli.pipe(
  Command.run({ version }),
  Effect.provide(NodeServices.layer),
  (program) => NodeRuntime.runMain(program, { teardown })
)
