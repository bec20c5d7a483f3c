// The React hook with auth on (the real daemon, a key from `keys add`): a 401 shows as
// the snapshot's authError instead of a reconnect loop, and a new token reconnects.

import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'

import { EventSource } from 'eventsource'

import { addKey, startDaemon } from '../test-support/daemon.js'
import { StrictMode, createRoot, h, until } from '../test-support/dom.js'

const { useBitcoinPrice } = await import('../src/react.js')

let daemon
let dir
let key
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bittrade-feed-js-keys-'))
  const keyFile = join(dir, 'keys.toml')
  key = await addKey(keyFile, '--pairs', '*')
  daemon = await startDaemon({ sections: { auth: { enabled: true, key_file: keyFile } } })
})
after(async () => {
  await daemon?.dispose()
  await rm(dir, { recursive: true, force: true })
})

function Price({ token }) {
  const snap = useBitcoinPrice({ url: `${daemon.url}/api/price-stream`, pairs: ['BTC-USD'], EventSource, token })
  if (snap.authError) return h('p', { role: 'alert' }, `HTTP ${snap.authError.code}: ${snap.authError.message}`)
  return h('output', null, snap.pairs['BTC-USD']?.price ?? '—')
}

test('useBitcoinPrice: authError on 401, then prices once a token is given', async () => {
  const container = document.createElement('div')
  document.body.replaceChildren(container)
  const root = createRoot(container)
  try {
    root.render(h(StrictMode, null, h(Price, { token: null })))
    await until(() => container.querySelector('[role=alert]') !== null, 'the 401 shown')
    assert.match(container.textContent, /^HTTP 401: /)
    root.render(h(StrictMode, null, h(Price, { token: key })))
    await until(() => /^\d+(\.\d+)?$/.test(container.querySelector('output')?.textContent ?? ''), 'a price')
    assert.equal(container.querySelector('[role=alert]'), null)
  } finally {
    root.unmount()
  }
})
