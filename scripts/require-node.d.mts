/** The oldest Node that runs the project's `.ts` files (package.json `engines`). */
export declare const minimum: string
/** Whether `version` (like `v20.20.2` or `24.21.0`) is at least `minimum`. */
export declare const supports: (version: string) => boolean
/** The one line to print when `version` is too old, or `undefined` when it is fine. */
export declare const verdict: (
  version: string,
  ownNodeInstalled: boolean,
  script: string | undefined
) => string | undefined
