/**
 * Vitest global setup: makes a PostgreSQL available to the SQL tests.
 *
 * 1. `SESSION_RUNTIME_PG_URL` set: used as is (CI sets it through `.ci/postgres.sh`).
 * 2. A server already answers on the fixed loopback port of `.ci/postgres.sh` (55432): used.
 * 3. PostgreSQL binaries installed (`/usr/lib/postgresql/<v>/bin`, or `pg_config --bindir`): a private
 *    server is started in a temporary directory on a free loopback port (as `postgres` when running as
 *    root, since PostgreSQL refuses root), exported to the tests, and stopped at teardown. A detached
 *    watcher stops it too if this process dies without tearing down.
 * 4. Nothing installed: `SESSION_RUNTIME_PG_UNAVAILABLE` carries the reason, and every SQL test fails
 *    with it through {@link requirePgUrl} (they never skip).
 *
 * Everything here is asynchronous; it runs once, in the main Vitest process.
 */
import { execFile, spawn } from "node:child_process"
import { access, chmod, chown, mkdtemp, readdir, rm } from "node:fs/promises"
import { createServer, Socket } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { promisify } from "node:util"

const run = promisify(execFile)

/** The variable the SQL tests read the database URL from. */
export const urlVariable = "SESSION_RUNTIME_PG_URL"
/** Set by the global setup when no database could be found or started; holds the reason. */
export const unavailableVariable = "SESSION_RUNTIME_PG_UNAVAILABLE"
/** The server `.ci/postgres.sh` starts. */
export const defaultPort = 55432
export const defaultUrl = `postgres://postgres@127.0.0.1:${defaultPort}/session_runtime`

const howTo = "Start one with `eval \"$(.ci/postgres.sh)\"` (installs Debian's postgresql if missing, needs root), " +
  "or install the binaries (`apt-get install postgresql`) and rerun the tests (a private server is then started " +
  "for the run), or point SESSION_RUNTIME_PG_URL at a database you own."

/**
 * The URL of the test database, or a loud error saying how to get one. Call it in every SQL test file.
 */
export const requirePgUrl = (): string => {
  const url = process.env[urlVariable]
  if (url !== undefined && url.length > 0) return url
  const reason = process.env[unavailableVariable] ?? "SESSION_RUNTIME_PG_URL is not set"
  throw new Error(`PostgreSQL is required by the SQL tests and is not available: ${reason}. ${howTo}`)
}

const answers = (host: string, port: number, timeoutMs = 500): Promise<boolean> =>
  new Promise((resolve) => {
    const socket = new Socket()
    const done = (ok: boolean) => {
      socket.destroy()
      resolve(ok)
    }
    socket.setTimeout(timeoutMs, () => done(false))
    socket.once("error", () => done(false))
    socket.connect(port, host, () => done(true))
  })

const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

const exists = (path: string) => access(path).then(() => true, () => false)

const findBindir = async (): Promise<string | undefined> => {
  const root = "/usr/lib/postgresql"
  const versions = await readdir(root).catch(() => [] as Array<string>)
  versions.sort((a, b) => Number(b) - Number(a))
  for (const version of versions) {
    const bin = join(root, version, "bin")
    if (await exists(join(bin, "initdb")) && await exists(join(bin, "pg_ctl"))) return bin
  }
  const fromConfig = await run("pg_config", ["--bindir"]).then((r) => r.stdout.trim(), () => undefined)
  if (fromConfig !== undefined && await exists(join(fromConfig, "initdb"))) return fromConfig
  return undefined
}

const isRoot = process.getuid?.() === 0

/** Runs a PostgreSQL binary as the server's owner: `postgres` when we are root. */
const asOwner = (file: string, args: ReadonlyArray<string>) =>
  isRoot
    ? run("runuser", ["-u", "postgres", "--", file, ...args], { timeout: 90_000 })
    : run(file, args, { timeout: 90_000 })

const shellQuote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`

const startPrivate = async (bindir: string) => {
  const dir = await mkdtemp(join(tmpdir(), "session-runtime-pg-"))
  await chmod(dir, 0o700)
  if (isRoot) {
    const uid = Number((await run("id", ["-u", "postgres"])).stdout.trim())
    const gid = Number((await run("id", ["-g", "postgres"])).stdout.trim())
    await chown(dir, uid, gid)
  }
  const data = join(dir, "data")
  await asOwner(join(bindir, "initdb"), [
    "-D",
    data,
    "--username=postgres",
    "--auth=trust",
    "--encoding=UTF8",
    "--no-locale"
  ])

  let port = 0
  let lastError: unknown
  for (let attempt = 0; attempt < 3 && port === 0; attempt++) {
    const candidate = await freePort()
    try {
      await asOwner(join(bindir, "pg_ctl"), [
        "-D", data, "-l", join(dir, "server.log"), "-w", "-t", "60",
        "-o", `-c listen_addresses=127.0.0.1 -c port=${candidate} -c unix_socket_directories=${dir} ` +
        "-c max_connections=300 -c fsync=off -c full_page_writes=off -c synchronous_commit=off",
        "start"
      ])
      port = candidate
    } catch (error) {
      lastError = error
    }
  }
  if (port === 0) throw new Error(`could not start PostgreSQL in ${dir}: ${String(lastError)}`)

  const stopCommand = [
    ...(isRoot ? ["runuser", "-u", "postgres", "--"] : []),
    join(bindir, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop"
  ]
  // If this process dies without its teardown, the watcher still stops the server and removes its files.
  const watcher = spawn("sh", [
    "-c",
    `while kill -0 ${process.pid} 2>/dev/null; do sleep 1; done; ` +
    `${stopCommand.map(shellQuote).join(" ")} >/dev/null 2>&1; rm -rf ${shellQuote(dir)}`
  ], { detached: true, stdio: "ignore" })
  watcher.unref()

  await run(join(bindir, "createdb"), ["-h", "127.0.0.1", "-p", String(port), "-U", "postgres", "session_runtime"])
  const url = `postgres://postgres@127.0.0.1:${port}/session_runtime`
  const stop = async () => {
    await run(stopCommand[0]!, stopCommand.slice(1), { timeout: 30_000 }).catch(() => undefined)
    await rm(dir, { recursive: true, force: true })
    if (watcher.pid !== undefined) {
      try {
        process.kill(watcher.pid)
      } catch {
        // already gone
      }
    }
  }
  return { url, stop }
}

export default async function setup(): Promise<(() => Promise<void>) | undefined> {
  const given = process.env[urlVariable]
  if (given !== undefined && given.length > 0) return undefined
  if (await answers("127.0.0.1", defaultPort)) {
    process.env[urlVariable] = defaultUrl
    return undefined
  }
  const bindir = await findBindir()
  if (bindir === undefined) {
    process.env[unavailableVariable] =
      "no server answers on 127.0.0.1:55432 and no PostgreSQL binaries are installed " +
      "(looked in /usr/lib/postgresql/*/bin and `pg_config --bindir`)"
    return undefined
  }
  try {
    const server = await startPrivate(bindir)
    process.env[urlVariable] = server.url
    return server.stop
  } catch (error) {
    process.env[unavailableVariable] = `starting a private server from ${bindir} failed: ${String(error)}`
    return undefined
  }
}
