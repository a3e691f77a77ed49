/**
 * The stable address of a conversation, e.g. `agent:main:telegram:direct:42`.
 *
 * A `SessionKey` is a branded string of 1–512 printable characters. It is an
 * address, never a path: lock files and other on-disk names are derived from it
 * with {@link toFileName}, whose output can never escape a directory.
 *
 * @since 0.1.0
 */
import { createHash } from "node:crypto"
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"

/**
 * The longest key accepted, in UTF-16 code units.
 *
 * @category constants
 * @since 0.1.0
 */
export const maxLength = 512

/**
 * The rule an invalid key broke.
 *
 * @category models
 * @since 0.1.0
 */
export const InvalidKeyRule = Schema.Literals([
  "not_a_string",
  "empty",
  "too_long",
  "control_character",
  "unpaired_surrogate"
])
export type InvalidKeyRule = typeof InvalidKeyRule.Type

const ruleText: Record<InvalidKeyRule, string> = {
  not_a_string: "a session key must be a string",
  empty: "a session key must not be empty",
  too_long: `a session key must be at most ${maxLength} characters`,
  control_character: "a session key must not contain control characters (U+0000–U+001F, U+007F–U+009F)",
  unpaired_surrogate: "a session key must be well-formed Unicode (no unpaired surrogate)"
}

/**
 * Raised when a value cannot be a session key. `rule` names the rule it broke,
 * `input` is a printable preview of what was given (never the full value).
 *
 * @category errors
 * @since 0.1.0
 */
export class InvalidSessionKey extends Schema.TaggedError<InvalidSessionKey>()("InvalidSessionKey", {
  rule: InvalidKeyRule,
  input: Schema.String
}) {
  override get message(): string {
    return `Invalid session key ${this.input}: ${ruleText[this.rule]}. ` +
      "Use a stable identifier such as agent:main:telegram:direct:42."
  }
}

// Control characters: C0, DEL and C1.
// eslint-disable-next-line no-control-regex
const controlCharacter = /[\u0000-\u001f\u007f-\u009f]/

const preview = (input: unknown): string => {
  if (typeof input !== "string") return `<${input === null ? "null" : typeof input}>`
  const shown = input.length > 40 ? `${input.slice(0, 40)}…` : input
  return JSON.stringify(shown)
}

/**
 * Checks a candidate key and returns the first rule it breaks, if any.
 *
 * @category validation
 * @since 0.1.0
 */
export const brokenRule = (input: unknown): InvalidKeyRule | undefined => {
  if (typeof input !== "string") return "not_a_string"
  if (input.length === 0) return "empty"
  if (input.length > maxLength) return "too_long"
  if (controlCharacter.test(input)) return "control_character"
  if (!input.isWellFormed()) return "unpaired_surrogate"
  return undefined
}

/**
 * The session key schema: a branded string that passes every rule of
 * {@link brokenRule}. Decoding failures quote the rule's text.
 *
 * @category schemas
 * @since 0.1.0
 */
export const SessionKey = Schema.String.check(
  Schema.makeFilter((s: string) => {
    const rule = brokenRule(s)
    return rule === undefined ? undefined : ruleText[rule]
  })
).pipe(Schema.brand("SessionKey"))
export type SessionKey = typeof SessionKey.Type

/**
 * Validates a value as a session key, as a `Result`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const decodeResult = (input: unknown): Result.Result<SessionKey, InvalidSessionKey> => {
  const rule = brokenRule(input)
  return rule === undefined
    ? Result.succeed(input as SessionKey)
    : Result.fail(new InvalidSessionKey({ rule, input: preview(input) }))
}

/**
 * Validates a value as a session key, failing with {@link InvalidSessionKey}.
 *
 * @category constructors
 * @since 0.1.0
 */
export const decode = (input: unknown): Effect.Effect<SessionKey, InvalidSessionKey> =>
  Effect.fromResult(decodeResult(input))

/**
 * Validates a value as a session key and throws {@link InvalidSessionKey} if it
 * is not one. For literals in tests and examples.
 *
 * @category constructors
 * @since 0.1.0
 */
export const makeUnsafe = (input: string): SessionKey => {
  const result = decodeResult(input)
  if (Result.isFailure(result)) throw result.failure
  return result.success
}

/**
 * A file-name-safe encoding of a key: a readable prefix of `[a-z0-9_-]`
 * (at most 48 characters) and 128 bits of its SHA-256, e.g.
 * `agent_main_telegram_direct_42-5f1c…`. The result never contains a path
 * separator, a dot segment or a control character, and distinct keys differ
 * with overwhelming probability even when their prefixes collide.
 *
 * @category encoding
 * @since 0.1.0
 */
export const toFileName = (key: SessionKey): string => {
  const readable = key.toLowerCase().replace(/[^a-z0-9_-]+/g, "_").replace(/^_+|_+$/g, "").slice(0, 48)
  const digest = createHash("sha256").update(key, "utf8").digest("hex").slice(0, 32)
  return readable.length > 0 ? `${readable}-${digest}` : digest
}

/**
 * A short, stable, non-reversible identifier for a key (the first 16 hex
 * characters of its SHA-256), for places where the key itself must not
 * appear, such as span attributes.
 *
 * @category encoding
 * @since 0.1.0
 */
export const hash = (key: SessionKey): string => {
  const known = hashes.get(key)
  if (known !== undefined) return known
  const digest = createHash("sha256").update(key, "utf8").digest("hex").slice(0, 16)
  // Spans ask for the same few keys over and over: keep the recent ones (a
  // pure function's memo, bounded, so it is no state worth a service).
  if (hashes.size >= 4096) hashes.clear()
  hashes.set(key, digest)
  return digest
}

const hashes = new Map<string, string>()
