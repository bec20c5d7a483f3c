// A loopback HTTP server answering like Kraken's public Ticker, with a scriptable price
// and status, so tests can make the daemon's only source fail on demand.

import { once } from 'node:events'
import { createServer } from 'node:http'

export async function startFakeKraken(price = '64123.4') {
  const state = { price, status: 200, requests: 0 }
  const server = createServer((req, res) => {
    state.requests += 1
    if (state.status !== 200) {
      res.writeHead(state.status, { 'Content-Type': 'text/html' })
      res.end('<html><body>down for maintenance</body></html>')
      return
    }
    // The shape of the recorded answer (tests/fixtures/recorded/kraken.json) for XBTUSD.
    const body = {
      error: [],
      result: { XXBTZUSD: { a: [state.price, '1', '1.000'], b: [state.price, '1', '1.000'], c: [state.price, '0.001'] } },
    }
    res.writeHead(200, { 'Content-Type': 'application/json' })
    res.end(JSON.stringify(body))
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    state,
    setPrice(p) {
      state.price = p
      state.status = 200
    },
    fail(status = 500) {
      state.status = status
    },
    async close() {
      server.closeAllConnections()
      server.close()
      await once(server, 'close')
    },
  }
}
