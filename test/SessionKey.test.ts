import { assert, describe, it } from "@effect/vitest"
import { Effect, Result, Schema } from "effect"
import * as SessionKey from "../src/SessionKey.ts"

describe("SessionKey", () => {
  describe("decode", () => {
    it.effect("accepts a field-style key", () =>
      Effect.gen(function*() {
        const key = yield* SessionKey.decode("agent:main:telegram:direct:42")
        assert.strictEqual(key, "agent:main:telegram:direct:42")
      }))

    it.effect("names the rule an invalid key broke", () =>
      Effect.gen(function*() {
        const cases: Array<[unknown, SessionKey.InvalidKeyRule]> = [
          ["", "empty"],
          ["x".repeat(513), "too_long"],
          ["a\nb", "control_character"],
          ["a\u0000b", "control_character"],
          ["a\u0085b", "control_character"],
          ["a\ud800b", "unpaired_surrogate"],
          [42, "not_a_string"],
          [null, "not_a_string"]
        ]
        for (const [input, rule] of cases) {
          const error = yield* Effect.flip(SessionKey.decode(input))
          assert.strictEqual(error._tag, "InvalidSessionKey")
          assert.strictEqual(error.rule, rule)
          assert.include(error.message, "Invalid session key")
        }
      }))

    it("accepts exactly 512 characters and unicode", () => {
      assert.isTrue(Result.isSuccess(SessionKey.decodeResult("x".repeat(512))))
      assert.isTrue(Result.isSuccess(SessionKey.decodeResult("agent:😀:über")))
    })

    it("quotes only a preview of a huge input", () => {
      const result = SessionKey.decodeResult("y".repeat(10_000))
      assert.isTrue(Result.isFailure(result))
      if (Result.isFailure(result)) assert.isBelow(result.failure.input.length, 50)
    })

    it("is also a Schema whose failures quote the rule", () => {
      const result = Schema.decodeUnknownResult(SessionKey.SessionKey)("a\tb")
      assert.isTrue(Result.isFailure(result))
      if (Result.isFailure(result)) assert.include(result.failure.message, "control characters")
    })
  })

  describe("toFileName", () => {
    it("never yields a path separator, a dot segment or a control character", () => {
      const hostile = ["../../etc/passwd", "/abs/path", "..", ".", "a\\b", "con", "ａ/ｂ", " ", "~root", "x".repeat(512)]
      for (const raw of hostile) {
        const name = SessionKey.toFileName(SessionKey.makeUnsafe(raw))
        assert.match(name, /^[a-z0-9_-]+$/)
        assert.isAtMost(name.length, 48 + 1 + 32)
      }
    })

    it("separates keys whose readable prefixes collide", () => {
      const a = SessionKey.toFileName(SessionKey.makeUnsafe("agent:main/x"))
      const b = SessionKey.toFileName(SessionKey.makeUnsafe("agent:main:x"))
      assert.notStrictEqual(a, b)
      assert.strictEqual(a.split("-")[0], b.split("-")[0])
    })

    it.prop("is a deterministic function of the key", [Schema.String.check(Schema.isMinLength(1))], ([raw]) => {
      const decoded = SessionKey.decodeResult(raw)
      if (Result.isFailure(decoded)) return true
      return SessionKey.toFileName(decoded.success) === SessionKey.toFileName(decoded.success) &&
        /^[a-z0-9_-]+$/.test(SessionKey.toFileName(decoded.success))
    })
  })
})
