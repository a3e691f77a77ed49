// Runs before every npm script that executes TypeScript (`npm start`, `npm test`, `npm run bench`,
// `npm run cli`). Those scripts run `node`, which npm resolves to the project's own Node (the `node`
// devDependency, linked in node_modules/.bin); when that Node is missing, `node` is whatever the machine has.
// If it is older than the engines range, this says in one line what to do and the script stops, instead of
// dying later on a `.ts` file with ERR_UNKNOWN_FILE_EXTENSION. Plain JavaScript, for any Node.
import { access } from "node:fs/promises"
import { fileURLToPath } from "node:url"

/** The oldest Node that runs the project's `.ts` files (package.json `engines`). */
export const minimum = "22.19.0"

const parse = (version) => version.replace(/^v/, "").split(".").map(Number)

/** Whether `version` (like `v20.20.2` or `24.21.0`) is at least {@link minimum}. */
export const supports = (version) => {
  const [major, minor] = parse(version)
  const [needMajor, needMinor] = parse(minimum)
  return major > needMajor || (major === needMajor && minor >= needMinor)
}

/**
 * The one line to print when `version` is too old, or `undefined` when it is fine. `ownNodeInstalled`: the
 * devDependency's binary exists (so the script was run outside npm); `script`: the npm script being run.
 */
export const verdict = (version, ownNodeInstalled, script) => {
  if (supports(version)) return undefined
  const command = script === undefined
    ? "npm run <script>"
    : script === "start" || script === "test"
    ? `npm ${script}`
    : `npm run ${script}`
  const todo = ownNodeInstalled
    ? `run it through npm (${command}) or \`npx node <file>\`, which use the project's own Node`
    : "the project's own Node was not installed (npm install --ignore-scripts skips it): " +
      `run \`npm rebuild node\` once, then \`${command}\` again`
  return `effect-session-runtime needs Node >= ${minimum.replace(/\.0$/, "")} and this is Node ${version}: ${todo}`
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const binary = fileURLToPath(
    new URL(`../node_modules/node/bin/node${process.platform === "win32" ? ".exe" : ""}`, import.meta.url)
  )
  const installed = await access(binary).then(() => true, () => false)
  const line = verdict(process.version, installed, process.env.npm_lifecycle_event)
  if (line !== undefined) {
    process.stderr.write(`${line}\n`)
    process.exitCode = 1
  }
}
