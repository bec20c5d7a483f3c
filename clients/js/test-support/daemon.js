// Start the real bittrade-feed daemon on a loopback port for a test, and stop it after.
//
// The binary is the repository's virtualenv console script (created by `make test`);
// BITTRADE_FEED_BIN overrides it.

import { execFile, spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

export const DAEMON_BIN =
  process.env.BITTRADE_FEED_BIN || fileURLToPath(new URL('../../../.venv/bin/bittrade-feed', import.meta.url))

/** A TCP port that was free a moment ago on 127.0.0.1. */
export async function freePort() {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address()
  server.close()
  await once(server, 'close')
  return port
}

function toml(value) {
  return JSON.stringify(value) // JSON strings, numbers and arrays of them are valid TOML
}

/**
 * Write a config and start the daemon; resolves once /healthz answers.
 *
 * @param {object} [opts]
 * @param {string[]} [opts.pairs]
 * @param {Record<string, string[]>} [opts.sources] per pair (default: simulated)
 * @param {Record<string, Record<string, unknown>>} [opts.exchanges] per exchange keys
 * @param {number} [opts.interval] seconds between fetches
 * @param {number} [opts.staleAfter] seconds without a price before the daemon says stale
 * @param {Record<string, Record<string, unknown>>} [opts.sections] more top-level tables, e.g. `{auth: {...}}`
 */
export async function startDaemon(opts = {}) {
  const pairs = opts.pairs ?? ['BTC-USD']
  const sources = opts.sources ?? Object.fromEntries(pairs.map((p) => [p, ['simulated']]))
  const interval = opts.interval ?? 0.2
  const staleAfter = opts.staleAfter ?? 5
  const dir = await mkdtemp(join(tmpdir(), 'bittrade-feed-js-'))
  const port = await freePort()
  const lines = [
    '[server]',
    'host = "127.0.0.1"',
    `port = ${port}`,
    'shutdown_timeout = 2',
    '[database]',
    `path = ${toml(join(dir, 'feed.sqlite3'))}`,
    '[feed]',
    `pairs = ${toml(pairs)}`,
    `interval = ${interval}`,
    `request_timeout = ${Math.min(interval, 0.5)}`,
    'max_attempts = 1',
    `stale_after = ${staleAfter}`,
    '[feed.sources]',
    ...Object.entries(sources).map(([pair, names]) => `${toml(pair)} = ${toml(names)}`),
    '[aggregation]',
    'quorum = 1',
    '[log]',
    'level = "warning"',
    'format = "json"',
  ]
  for (const [name, keys] of Object.entries(opts.sections ?? {})) {
    lines.push(`[${name}]`, ...Object.entries(keys).map(([k, v]) => `${k} = ${toml(v)}`))
  }
  for (const [name, keys] of Object.entries(opts.exchanges ?? {})) {
    lines.push(`[exchanges.${name}]`, ...Object.entries(keys).map(([k, v]) => `${k} = ${toml(v)}`))
  }
  const config = join(dir, 'feed.toml')
  await writeFile(config, lines.join('\n') + '\n')

  const daemon = {
    url: `http://127.0.0.1:${port}`,
    port,
    dir,
    config,
    proc: null,
    log: '',
    start: () => launch(daemon),
    stop: () => terminate(daemon),
    async dispose() {
      await terminate(daemon)
      await rm(dir, { recursive: true, force: true })
    },
  }
  await launch(daemon)
  return daemon
}

/**
 * Add an API key to `keyFile` with the daemon's own `keys add` (created if missing);
 * resolves with the key, which the command prints once.
 */
export async function addKey(keyFile, ...args) {
  const { stdout } = await promisify(execFile)(DAEMON_BIN, ['keys', 'add', '--key-file', keyFile, ...args])
  return stdout.trim()
}

async function launch(daemon) {
  const proc = spawn(DAEMON_BIN, ['serve', '--config', daemon.config], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  daemon.proc = proc
  proc.stdout.on('data', (b) => (daemon.log += b))
  proc.stderr.on('data', (b) => (daemon.log += b))
  const spawnError = new Promise((_, reject) => proc.once('error', reject))
  const exited = once(proc, 'exit').then(([code]) => {
    throw new Error(`bittrade-feed exited with ${code} before it was healthy:\n${daemon.log}`)
  })
  const deadline = Date.now() + 15_000
  const healthy = (async () => {
    while (Date.now() < deadline) {
      try {
        const res = await fetch(`${daemon.url}/healthz`, { signal: AbortSignal.timeout(1000) })
        if (res.ok) return
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 50))
    }
    throw new Error(`bittrade-feed not healthy within 15 s:\n${daemon.log}`)
  })()
  try {
    await Promise.race([healthy, exited, spawnError])
  } catch (err) {
    proc.kill('SIGKILL')
    throw err
  }
  exited.catch(() => {}) // later exits are expected (stop, kill)
}

async function terminate(daemon) {
  const proc = daemon.proc
  daemon.proc = null
  if (proc === null || proc.exitCode !== null || proc.signalCode !== null) return
  const exit = once(proc, 'exit')
  proc.kill('SIGTERM')
  const timer = setTimeout(() => proc.kill('SIGKILL'), 5_000)
  await exit
  clearTimeout(timer)
}
