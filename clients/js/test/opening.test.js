// The stream's first block: `retry:` may share it with the first event (issue 11), and the
// event must still be delivered, flagged as the daemon flags it.

import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer } from 'node:http'
import { after, test } from 'node:test'

import { EventSource } from 'eventsource'

import { createPriceFeed } from '../src/index.js'
import { waitFor } from '../test-support/wait.js'

const price = (id, simulated) =>
  JSON.stringify({ id, pair: 'BTC-USD', price: '64123.4', ts: new Date().toISOString(), sources: ['kraken'], simulated })
const status = (simulated) =>
  JSON.stringify({ state: 'live', pair: 'BTC-USD', since: new Date().toISOString(), reason: 'price updated', simulated })

let server
let feed
after(async () => {
  feed?.close()
  if (server) {
    server.closeAllConnections()
    server.close()
    await once(server, 'close')
  }
})

async function serve(body) {
  server = createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-store' })
    res.write(body) // held open: the client must not need the connection to end
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return `http://127.0.0.1:${server.address().port}/api/price-stream`
}

test('retry: in the same block as the first price: the price is delivered and tradeable', async () => {
  const url = await serve(`retry: 3000\nid: 7\nevent: price\ndata: ${price(7, false)}\n\nevent: status\ndata: ${status(false)}\n\n`)
  feed = createPriceFeed({ url, pairs: ['BTC-USD'], EventSource })
  const snap = await waitFor(feed, (s) => s.canTrade, 5_000, 'canTrade')
  assert.equal(snap.pairs['BTC-USD'].id, 7)
  assert.equal(snap.lastEventId, 7)
  assert.equal(snap.simulated, false)
})
