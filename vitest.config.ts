import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Finds or starts a PostgreSQL for the SQL lock backend and cluster tests (see the file).
    globalSetup: ["test/setup/postgres.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000
  }
})
