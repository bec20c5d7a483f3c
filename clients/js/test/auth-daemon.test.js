// The client against the real daemon with [auth] on and a key made by `keys add`: the
// Bearer header in Node, the daemon's own 401 and 403 problems.

import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'

import { EventSource } from 'eventsource'

import { createPriceFeed } from '../src/index.js'
import { addKey, startDaemon } from '../test-support/daemon.js'
import { allFresh, waitFor } from '../test-support/wait.js'

describe('price feed against a daemon with auth on', () => {
  let daemon
  let dir
  let btcOnly
  const feeds = []
  const open = (opts) => {
    const feed = createPriceFeed({ url: `${daemon.url}/api/price-stream`, EventSource, ...opts })
    feeds.push(feed)
    return feed
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bittrade-feed-js-keys-'))
    const keyFile = join(dir, 'keys.toml')
    btcOnly = await addKey(keyFile, '--pairs', 'BTC-USD', '--note', 'js test')
    daemon = await startDaemon({ pairs: ['BTC-USD', 'ETH-USD'], sections: { auth: { enabled: true, key_file: keyFile } } })
  })
  after(async () => {
    for (const feed of feeds) feed.close()
    await daemon?.dispose()
    await rm(dir, { recursive: true, force: true })
  })

  test('without a credential: closed with the daemon\'s 401, not reconnecting', async () => {
    const errors = []
    const feed = open({ pairs: ['BTC-USD'], onError: (err) => errors.push(err) })
    const snap = await waitFor(feed, (s) => s.state === 'closed', 10_000, 'closed')
    assert.equal(snap.authError.code, 401)
    assert.ok(snap.authError.message.length > 0)
    assert.equal(errors.length, 1)
  })

  test('with the key as a Bearer token: live prices', async () => {
    const feed = open({ pairs: ['BTC-USD'], token: btcOnly })
    const snap = await waitFor(feed, allFresh, 10_000, 'all fresh')
    assert.equal(snap.authError, null)
    assert.match(snap.pairs['BTC-USD'].price, /^\d+(\.\d+)?$/)
  })

  test('a pair the key is not granted: 403 naming it', async () => {
    const feed = open({ pairs: ['ETH-USD'], token: btcOnly })
    const snap = await waitFor(feed, (s) => s.state === 'closed', 10_000, 'closed')
    assert.equal(snap.authError.code, 403)
    assert.deepEqual(snap.authError.pairs, ['ETH-USD'])
    assert.doesNotMatch(JSON.stringify(snap), new RegExp(btcOnly.split('_').at(-1)))
  })

  test('a wrong key: 401', async () => {
    const feed = open({ pairs: ['BTC-USD'], token: `${btcOnly.slice(0, btcOnly.lastIndexOf('_'))}_${'x'.repeat(43)}` })
    const snap = await waitFor(feed, (s) => s.state === 'closed', 10_000, 'closed')
    assert.equal(snap.authError.code, 401)
  })
})
