// Staleness: the daemon's own `status` events, and the client-side watchdog.

import assert from 'node:assert/strict'
import { afterEach, test } from 'node:test'

import { EventSource } from 'eventsource'

import { createPriceFeed } from '../src/index.js'
import { startDaemon } from '../test-support/daemon.js'
import { startFakeKraken } from '../test-support/fake-kraken.js'
import { waitFor } from '../test-support/wait.js'

const cleanups = []
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()()
})

async function setUp({ staleAfter, staleAfterMs }) {
  const kraken = await startFakeKraken('64123.4')
  cleanups.push(() => kraken.close())
  const daemon = await startDaemon({
    interval: 0.2,
    staleAfter,
    sources: { 'BTC-USD': ['kraken'] },
    exchanges: { kraken: { base_url: kraken.url } },
  })
  cleanups.push(() => daemon.dispose())
  const feed = createPriceFeed({ url: `${daemon.url}/api/price-stream`, pairs: ['BTC-USD'], staleAfterMs, EventSource })
  cleanups.push(() => feed.close())
  return { kraken, daemon, feed }
}

test('a stale status from the daemon makes the feed stale and canTrade false, then live again', async () => {
  const { kraken, feed } = await setUp({ staleAfter: 0.6, staleAfterMs: 10_000 })
  const live = await waitFor(feed, (s) => s.canTrade, 10_000, 'canTrade')
  assert.equal(live.pairs['BTC-USD'].price, '64123.4')
  assert.equal(live.simulated, false, 'a real exchange: not simulated')
  assert.equal(live.pairs['BTC-USD'].simulated, false)

  kraken.fail(500)
  const stale = await waitFor(feed, (s) => s.state === 'stale', 10_000, 'stale')
  assert.equal(stale.canTrade, false)
  assert.equal(stale.pairs['BTC-USD'].status, 'stale')
  assert.equal(stale.pairs['BTC-USD'].fresh, false)
  assert.match(stale.reason, /BTC-USD is stale: quorum/)
  assert.equal(stale.pairs['BTC-USD'].price, '64123.4', 'the last price is kept for display')

  kraken.setPrice('64200.1')
  const back = await waitFor(feed, (s) => s.canTrade, 10_000, 'canTrade again')
  assert.equal(back.state, 'live')
  assert.equal(back.pairs['BTC-USD'].price, '64200.1')
})

test('a suspect status (a held price jump) makes canTrade false with its reason, then live again', async () => {
  const { kraken, feed } = await setUp({ staleAfter: 60, staleAfterMs: 10_000 })
  await waitFor(feed, (s) => s.canTrade, 10_000, 'canTrade')
  kraken.setPrice('641234.0')
  const suspect = await waitFor(feed, (s) => s.pairs['BTC-USD']?.status === 'suspect', 10_000, 'suspect')
  assert.equal(suspect.canTrade, false)
  assert.equal(suspect.state, 'stale')
  assert.match(suspect.reason, /BTC-USD is suspect: price 641234 is \+900% from 64123\.4; waiting for/)
  assert.equal(suspect.pairs['BTC-USD'].price, '64123.4', 'the held price is never shown')

  kraken.setPrice('64123.9')
  const back = await waitFor(feed, (s) => s.canTrade, 10_000, 'canTrade again')
  assert.equal(back.pairs['BTC-USD'].price, '64123.9')
})

test('the watchdog marks the feed stale when nothing arrives within staleAfterMs, socket still open', async () => {
  // The daemon would wait 60 s to say "stale"; the client's 800 ms window notices first.
  const { kraken, feed } = await setUp({ staleAfter: 60, staleAfterMs: 800 })
  await waitFor(feed, (s) => s.canTrade, 10_000, 'canTrade')
  kraken.fail(503)
  const started = Date.now()
  const stale = await waitFor(feed, (s) => s.state === 'stale', 5_000, 'watchdog stale')
  assert.ok(Date.now() - started < 2_500, 'within about one window')
  assert.equal(stale.canTrade, false)
  assert.equal(stale.pairs['BTC-USD'].status, 'live', 'the daemon has not said stale')
  assert.match(stale.reason, /nothing received for|no new BTC-USD price/)

  kraken.setPrice('64123.5')
  const back = await waitFor(feed, (s) => s.canTrade, 10_000, 'canTrade again')
  assert.equal(back.pairs['BTC-USD'].price, '64123.5')
})

test('after twice the window of silence the client reconnects and resumes from its last id', async () => {
  const { kraken, daemon, feed } = await setUp({ staleAfter: 60, staleAfterMs: 500 })
  const ids = []
  feed.on('price', (tick) => ids.push(tick.id))
  const first = await waitFor(feed, (s) => s.canTrade, 10_000, 'canTrade')
  kraken.fail(500)
  await waitFor(feed, (s) => s.state === 'reconnecting', 5_000, 'forced reconnect')
  const before = ids.length
  const again = await waitFor(feed, (s) => s.state === 'stale' && s.lastEventAt > first.lastEventAt, 10_000, 'reopened')
  assert.match(again.lastError.message, /no data for \d+ s; reconnecting/)
  assert.equal(ids.length, before, 'resumed from the last id: the old price is not sent again')
  const metrics = await (await fetch(`${daemon.url}/metrics`)).text()
  assert.match(metrics, /bittrade_feed_connections_opened_total\{transport="sse"\} [2-9]/)
})
