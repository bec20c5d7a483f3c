// Packaging: declarations that compile, a dependency-free core.

import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

const here = (path) => fileURLToPath(new URL(path, import.meta.url))

test('the core entry imports nothing and the package has no runtime dependencies', async () => {
  const source = await readFile(here('../src/index.js'), 'utf8')
  assert.doesNotMatch(source, /^\s*import\s/m)
  assert.doesNotMatch(source, /\bimport\(/)
  const pkg = JSON.parse(await readFile(here('../package.json'), 'utf8'))
  assert.equal(pkg.dependencies, undefined)
  assert.deepEqual(Object.keys(pkg.peerDependencies), ['react'])
  assert.equal(pkg.peerDependenciesMeta.react.optional, true)
})

test('the .d.ts of both entries accept real usage and reject misuse (tsc --strict)', async () => {
  const tsc = here('../node_modules/typescript/bin/tsc')
  try {
    await promisify(execFile)(process.execPath, [tsc, '-p', here('../test-support/types/tsconfig.json')])
  } catch (err) {
    assert.fail(`tsc found errors:\n${err.stdout}${err.stderr}`)
  }
})
