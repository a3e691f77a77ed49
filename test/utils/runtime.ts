/**
 * The core services wired for tests: bus, tracker, lanes (no lock guard).
 */
import { Layer } from "effect"
import * as ActivityTracker from "../../src/ActivityTracker.ts"
import * as DiagnosticBus from "../../src/DiagnosticBus.ts"
import * as LaneGuard from "../../src/LaneGuard.ts"
import * as SessionLanes from "../../src/SessionLanes.ts"

export const coreLayer = (options?: SessionLanes.Options) =>
  SessionLanes.layer(options).pipe(
    Layer.provideMerge(LaneGuard.layerNone),
    Layer.provideMerge(ActivityTracker.layer()),
    Layer.provideMerge(DiagnosticBus.layer())
  )
