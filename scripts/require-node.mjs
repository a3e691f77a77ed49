// Runs before every npm script that executes TypeScript (`npm start`, `npm test`, `npm run bench`,
// `npm run cli`). Those scripts run `node`, which npm resolves to the project's own Node (the `node`
// devDependency, linked in node_modules/.bin); when that Node is missing, `node` is whatever the machine has.
// If it is older than the engines range, this says in one line what to do and the script stops, instead of
// dying later on a `.ts` file with ERR_UNKNOWN_FILE_EXTENSION. Plain JavaScript for any Node.
import { access } from "node:fs/promises"
import { fileURLToPath } from "node:url"

const minimum = [22, 19]
const [major, minor] = process.versions.node.split(".").map(Number)
const supported = major > minimum[0] || (major === minimum[0] && minor >= minimum[1])

if (!supported) {
  const root = fileURLToPath(new URL("..", import.meta.url))
  const binary = `${root}node_modules/node/bin/node${process.platform === "win32" ? ".exe" : ""}`
  const installed = await access(binary).then(() => true, () => false)
  const script = process.env.npm_lifecycle_event
  const command = script === undefined ? "npm run <script>" : script === "start" || script === "test"
    ? `npm ${script}`
    : `npm run ${script}`
  const todo = installed
    ? `run it through npm (${command}) or \`npx node <file>\`, which use the project's own Node`
    : "the project's own Node was not installed (npm install --ignore-scripts skips it): " +
      `run \`npm rebuild node\` once, then \`${command}\` again`
  process.stderr.write(
    `effect-session-runtime needs Node >= ${minimum.join(".")} and this is Node ${process.version}: ${todo}\n`
  )
  process.exit(1)
}
