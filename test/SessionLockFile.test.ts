import { contract } from "./SessionLock.contract.ts"
import { fileHarness } from "./utils/lockFixtures.ts"

contract(fileHarness())
