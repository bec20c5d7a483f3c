// The core client against the real daemon (simulated source, a price every 0.2 s): its
// prices are fake, so the feed gets live and fresh but canTrade stays false throughout.

import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'

import { EventSource } from 'eventsource'

import { CONNECTING_SNAPSHOT, SIMULATED_REASON, createPriceFeed } from '../src/index.js'
import { startDaemon } from '../test-support/daemon.js'
import { allFresh, waitFor } from '../test-support/wait.js'

describe('price feed against a live daemon', () => {
  let daemon
  const feeds = []
  const open = (opts = {}) => {
    const feed = createPriceFeed({ url: `${daemon.url}/api/price-stream`, pairs: ['BTC-USD'], EventSource, ...opts })
    feeds.push(feed)
    return feed
  }

  before(async () => {
    daemon = await startDaemon({ pairs: ['BTC-USD', 'ETH-USD'] })
  })
  after(async () => {
    for (const feed of feeds) feed.close()
    await daemon?.dispose()
  })

  test('starts in the connecting state with nothing tradeable', () => {
    const feed = open()
    const snap = feed.getSnapshot()
    assert.equal(snap, CONNECTING_SNAPSHOT)
    assert.equal(snap.state, 'connecting')
    assert.equal(snap.canTrade, false)
  })

  test('simulated prices are live and fresh but never tradeable, and say why', async () => {
    const feed = open()
    const events = []
    feed.on('price', (tick) => events.push(tick.simulated))
    feed.on('status', (status) => events.push(status.simulated))
    const snap = await waitFor(feed, allFresh, 10_000, 'all fresh')
    assert.equal(snap.canTrade, false)
    assert.equal(snap.reason, SIMULATED_REASON)
    assert.equal(snap.reason, 'Simulated prices: not for trading')
    assert.equal(snap.simulated, true)
    assert.equal(snap.pairs['BTC-USD'].simulated, true)
    assert.ok(events.length >= 2 && events.every((flag) => flag === true), 'every event is flagged')
    await waitFor(feed, (s) => s.pairs['BTC-USD'].id > snap.pairs['BTC-USD'].id, 5_000, 'the next tick')
    assert.equal(feed.getSnapshot().canTrade, false, 'still not tradeable on the next price')
  })

  test('delivers the first price as the wire decimal string plus a parsed number', async () => {
    const feed = open()
    const snap = await waitFor(feed, allFresh, 10_000, 'all fresh')
    const tick = snap.pairs['BTC-USD']
    assert.equal(snap.state, 'live')
    assert.equal(snap.reason, SIMULATED_REASON)
    assert.match(tick.price, /^\d+(\.\d+)?$/)
    assert.equal(tick.value, Number(tick.price))
    assert.ok(Number.isSafeInteger(tick.id) && tick.id > 0)
    assert.deepEqual(tick.sources, ['simulated'])
    assert.equal(tick.status, 'live')
    assert.equal(tick.fresh, true)
    assert.equal(snap.lastEventId, tick.id)
    assert.deepEqual(Object.keys(snap.pairs), ['BTC-USD'], 'only the subscribed pair')
  })

  test('matches the REST view of the same price', async () => {
    const feed = open()
    await waitFor(feed, allFresh, 10_000, 'all fresh')
    const rest = await (await fetch(`${daemon.url}/api/prices?pair=BTC-USD&limit=10000`)).json()
    const tick = feed.getSnapshot().pairs['BTC-USD']
    const same = rest.prices.find((p) => p.id === tick.id)
    assert.ok(same, `tick ${tick.id} is in /api/prices`)
    assert.equal(same.price, tick.price)
    assert.equal(same.ts, tick.ts)
  })

  test('new ticks replace the latest price and event ids only increase', async () => {
    const feed = open()
    const ids = []
    feed.on('price', (tick) => ids.push(tick.id))
    await waitFor(feed, () => ids.length >= 4, 10_000, 'four prices')
    assert.deepEqual([...ids].sort((a, b) => a - b), ids)
    assert.equal(new Set(ids).size, ids.length)
    assert.equal(feed.getSnapshot().pairs['BTC-USD'].id, ids.at(-1))
  })

  test('getSnapshot keeps its identity until something changes, and snapshots are frozen', async () => {
    const feed = open()
    await waitFor(feed, allFresh, 10_000, 'all fresh')
    let notified = 0
    const unsubscribe = feed.subscribe(() => (notified += 1))
    const a = feed.getSnapshot()
    assert.equal(feed.getSnapshot(), a, 'same object on repeated reads')
    assert.ok(Object.isFrozen(a) && Object.isFrozen(a.pairs['BTC-USD']))
    await waitFor(feed, (s) => s !== a, 5_000, 'the next tick')
    assert.ok(notified >= 1, 'listener was told')
    unsubscribe()
    const seen = notified
    await waitFor(feed, (s) => s.pairs['BTC-USD'].id > a.pairs['BTC-USD'].id + 1, 5_000, 'two more ticks')
    assert.equal(notified, seen, 'no calls after unsubscribe')
  })

  test('subscribing to several pairs needs every pair fresh to trade', async () => {
    const feed = open({ pairs: ['btc-usd', 'ETH-USD'] })
    const snap = await waitFor(feed, allFresh, 10_000, 'all fresh')
    assert.deepEqual(Object.keys(snap.pairs).sort(), ['BTC-USD', 'ETH-USD'])
    assert.ok(snap.pairs['ETH-USD'].fresh && snap.pairs['BTC-USD'].fresh)
  })

  test('without pairs it follows every pair the daemon reports', async () => {
    const feed = open({ pairs: [] })
    const snap = await waitFor(feed, allFresh, 10_000, 'all fresh')
    assert.deepEqual(Object.keys(snap.pairs).sort(), ['BTC-USD', 'ETH-USD'])
  })

  test('a saved event id ahead of the feed gets a resync that replaces the snapshot', async () => {
    const feed = open({ lastEventId: 999_999_999 })
    const resyncs = []
    feed.on('resync', (r) => resyncs.push(r))
    const snap = await waitFor(feed, allFresh, 10_000, 'all fresh after resync')
    assert.equal(resyncs.length >= 1, true)
    assert.match(resyncs[0].reason, /ahead of this feed/)
    assert.equal(resyncs[0].ticks[0].pair, 'BTC-USD')
    assert.ok(snap.lastEventId < 999_999_999, 'resume point reset to the feed')
  })

  test('an unknown pair is refused for good, with the HTTP status in lastError', async () => {
    const feed = open({ pairs: ['DOGE-EUR'] })
    const snap = await waitFor(feed, (s) => s.state === 'closed', 10_000, 'closed')
    assert.equal(snap.lastError.code, 400)
    assert.equal(snap.canTrade, false)
    assert.match(snap.reason, /400/)
  })

  test('close() ends the stream: state closed, no more notifications', async () => {
    const feed = open()
    await waitFor(feed, allFresh, 10_000, 'all fresh')
    feed.close()
    const closed = feed.getSnapshot()
    assert.equal(closed.state, 'closed')
    assert.equal(closed.canTrade, false)
    let calls = 0
    feed.subscribe(() => (calls += 1))
    await new Promise((r) => setTimeout(r, 600))
    assert.equal(calls, 0)
    assert.equal(feed.getSnapshot(), closed)
  })

  test('outside browsers a relative URL or a missing EventSource is a clear error', () => {
    assert.throws(() => createPriceFeed({ url: '/api/price-stream', EventSource }), /must be absolute/)
    if (globalThis.EventSource === undefined) {
      assert.throws(() => createPriceFeed({ url: `${daemon.url}/api/price-stream` }), /pass options.EventSource/)
    }
  })
})
