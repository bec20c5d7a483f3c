// Losing the daemon and getting it back, without the client being recreated.

import assert from 'node:assert/strict'
import { after, test } from 'node:test'

import { EventSource } from 'eventsource'

import { createPriceFeed } from '../src/index.js'
import { startDaemon } from '../test-support/daemon.js'
import { startFakeKraken } from '../test-support/fake-kraken.js'
import { waitFor } from '../test-support/wait.js'

let daemon
let feed
let kraken
after(async () => {
  feed?.close()
  await daemon?.dispose()
  await kraken?.close()
})

test('a stopped daemon shows reconnecting; restarted on the same port and DB it resumes live', async () => {
  // A real exchange's parser (on loopback), so the prices are tradeable, unlike simulated ones.
  kraken = await startFakeKraken('64123.4')
  daemon = await startDaemon({
    interval: 0.2,
    sources: { 'BTC-USD': ['kraken'] },
    exchanges: { kraken: { base_url: kraken.url } },
  })
  feed = createPriceFeed({ url: `${daemon.url}/api/price-stream`, pairs: ['BTC-USD'], EventSource })
  const ids = []
  feed.on('price', (tick) => ids.push(tick.id))
  const live = await waitFor(feed, (s) => s.canTrade, 10_000, 'canTrade')

  await daemon.stop()
  const lost = await waitFor(feed, (s) => s.state === 'reconnecting', 5_000, 'reconnecting')
  assert.equal(lost.canTrade, false)
  assert.match(lost.reason, /^connection lost/)
  assert.ok(lost.lastError !== null)
  assert.equal(lost.pairs['BTC-USD'].fresh, false)
  const lastBefore = ids.at(-1)

  await daemon.start()
  const back = await waitFor(feed, (s) => s.canTrade && s.lastEventId > lastBefore, 15_000, 'live again')
  assert.equal(back.state, 'live')
  assert.ok(back.lastEventId > live.lastEventId)
  assert.equal(new Set(ids).size, ids.length, 'no price delivered twice across the restart')
  assert.deepEqual([...ids].sort((a, b) => a - b), ids, 'ids keep increasing across the restart')
})
