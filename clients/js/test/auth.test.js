// Credentials against a stand-in daemon that speaks issue 13's wire: a 401 problem with
// WWW-Authenticate, a 403 naming the refused pairs, and `reauth` followed by the end of
// the stream. The client must send the header in Node, stop on a refusal instead of
// reconnecting forever, refresh at most once per accepted token, and resume after a
// reauth from the last id with no gap and no duplicate.

import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer } from 'node:http'
import { afterEach, test } from 'node:test'

import { EventSource } from 'eventsource'

import { createPriceFeed } from '../src/index.js'
import { sleep, waitFor } from '../test-support/wait.js'

const KEY = 'btk_a1b2c3d4_ThisSecretMustStayOutOfEveryMessage'

const price = (id) =>
  `id: ${id}\nevent: price\ndata: ${JSON.stringify({ id, pair: 'BTC-USD', price: `${64000 + id}.5`, ts: new Date().toISOString(), sources: ['kraken'] })}\n\n`
const status = `event: status\ndata: ${JSON.stringify({ state: 'live', pair: 'BTC-USD', since: new Date().toISOString(), reason: 'price updated' })}\n\n`

const servers = []
const feeds = []
let feed
afterEach(async () => {
  feed?.close()
  feed = null
  for (const other of feeds.splice(0)) other.close()
  for (const server of servers.splice(0)) {
    server.closeAllConnections()
    server.close()
    await once(server, 'close')
  }
})

/**
 * Serve `script` at the stream path: request i gets answer i, then 204. Answers: '401',
 * '403', 'hold' (two new prices, held open), 'reauth' (two new prices, reauth, end).
 * Prices continue from the request's resume point, as the daemon's replay does.
 */
async function serve(script) {
  const requests = []
  const server = createServer((req, res) => {
    const url = new URL(req.url, 'http://x')
    requests.push({ authorization: req.headers.authorization ?? null, lastId: url.searchParams.get('last_event_id') ?? req.headers['last-event-id'] ?? null })
    const answer = script[requests.length - 1] ?? 'end'
    if (answer === 'end') return res.writeHead(204).end()
    if (answer === '401' || answer === '403') {
      const code = Number(answer)
      const body = { type: 'about:blank', title: code === 401 ? 'Unauthorized' : 'Forbidden', status: code, detail: code === 401 ? 'API key a1b2c3d4 is expired' : 'not granted: ETH-USD', ...(code === 403 ? { pairs: ['ETH-USD'] } : {}) }
      const headers = { 'Content-Type': 'application/problem+json' }
      if (code === 401) headers['WWW-Authenticate'] = 'Bearer realm="bittrade-feed"'
      return res.writeHead(code, headers).end(JSON.stringify(body))
    }
    const last = Number(requests.at(-1).lastId ?? 0)
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-store' })
    res.write(`retry: 100\n\n${price(last + 1)}${price(last + 2)}${status}`)
    if (answer === 'reauth') res.end('event: reauth\ndata: {"reason":"expired"}\n\n')
  })
  servers.push(server)
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return { url: `http://127.0.0.1:${server.address().port}/api/price-stream`, requests }
}

function tokens() {
  const source = async () => `tok-${++source.calls}`
  source.calls = 0
  return source
}

/**
 * A browser's EventSource as far as the client can tell: no fetch override, and error
 * events without a status (browsers only say "error" and close on a refused answer).
 */
class BrowserLikeEventSource {
  constructor(url, init) {
    this.inner = new EventSource(url, { withCredentials: init?.withCredentials })
  }
  get readyState() {
    return this.inner.readyState
  }
  addEventListener(type, listener) {
    this.inner.addEventListener(type, type === 'error' ? () => listener({ type: 'error' }) : listener)
  }
  close() {
    this.inner.close()
  }
}

test('no credentials: no Authorization header, as before', async () => {
  const { url, requests } = await serve(['hold'])
  feed = createPriceFeed({ url, pairs: ['BTC-USD'], EventSource })
  await waitFor(feed, (s) => s.pairs['BTC-USD']?.id === 2, 5_000, 'the prices')
  assert.equal(requests[0].authorization, null)
  assert.equal(feed.getSnapshot().authError, null)
})

test('a token is sent as Authorization: Bearer in Node', async () => {
  const { url, requests } = await serve(['hold'])
  feed = createPriceFeed({ url, pairs: ['BTC-USD'], EventSource, token: KEY })
  await waitFor(feed, (s) => s.pairs['BTC-USD']?.id === 2, 5_000, 'the prices')
  assert.equal(requests[0].authorization, `Bearer ${KEY}`)
})

test('401 closes the feed with authError and the daemon detail, and is not retried', async () => {
  const { url, requests } = await serve(['401', 'hold'])
  const errors = []
  feed = createPriceFeed({ url, EventSource, token: KEY, onError: (err) => errors.push(err) })
  const snap = await waitFor(feed, (s) => s.state === 'closed', 5_000, 'closed')
  assert.deepEqual(snap.authError, { code: 401, message: 'API key a1b2c3d4 is expired', pairs: [] })
  assert.equal(snap.lastError.code, 401)
  assert.match(snap.reason, /not authorised \(HTTP 401\): API key a1b2c3d4 is expired/)
  assert.doesNotMatch(JSON.stringify(snap), /ThisSecret/)
  await sleep(1_500) // longer than the first backoff: a retry would have happened by now
  assert.equal(requests.length, 1)
  assert.equal(errors.length, 1)
})

test('403 names the refused pairs and is final even with getToken', async () => {
  const { url, requests } = await serve(['403'])
  const getToken = tokens()
  feed = createPriceFeed({ url, pairs: ['ETH-USD'], EventSource, getToken })
  const snap = await waitFor(feed, (s) => s.state === 'closed', 5_000, 'closed')
  assert.equal(snap.authError.code, 403)
  assert.deepEqual(snap.authError.pairs, ['ETH-USD'])
  assert.match(snap.reason, /forbidden \(HTTP 403\): not granted: ETH-USD/)
  assert.equal(requests.length, 1)
  assert.equal(getToken.calls, 1)
})

test('reauth: onReauth, a new token, and a resume from the last id with no gap or duplicate', async () => {
  const { url, requests } = await serve(['reauth', 'hold'])
  const getToken = tokens()
  const reasons = []
  const ids = []
  feed = createPriceFeed({ url, pairs: ['BTC-USD'], EventSource, getToken, onReauth: async (why) => reasons.push(why) })
  feed.on('price', (tick) => ids.push(tick.id))
  await waitFor(feed, (s) => s.pairs['BTC-USD']?.id === 4 && s.state === 'live', 5_000, 'resumed')
  assert.deepEqual(ids, [1, 2, 3, 4])
  assert.deepEqual(reasons, ['expired'])
  assert.equal(getToken.calls, 2)
  assert.deepEqual(
    requests.map((r) => [r.authorization, r.lastId]),
    [
      ['Bearer tok-1', null],
      ['Bearer tok-2', '2'],
    ],
  )
})

test('reauth without getToken reconnects with the same key; the 401 then closes it', async () => {
  const { url, requests } = await serve(['reauth', '401'])
  feed = createPriceFeed({ url, EventSource, token: KEY })
  const snap = await waitFor(feed, (s) => s.state === 'closed', 5_000, 'closed')
  assert.equal(snap.authError.code, 401)
  assert.equal(requests.length, 2)
  assert.equal(requests[1].lastId, '2')
})

test('a 401 asks getToken once; a refused fresh token is final', async () => {
  const { url, requests } = await serve(['401', '401', 'hold'])
  const getToken = tokens()
  feed = createPriceFeed({ url, EventSource, token: 'old', getToken })
  const snap = await waitFor(feed, (s) => s.state === 'closed', 5_000, 'closed')
  assert.equal(snap.authError.code, 401)
  assert.equal(getToken.calls, 1)
  assert.deepEqual(
    requests.map((r) => r.authorization),
    ['Bearer old', 'Bearer tok-1'],
  )
})

test('a 401 then an accepted fresh token streams on', async () => {
  const { url } = await serve(['401', 'hold'])
  const getToken = tokens()
  feed = createPriceFeed({ url, pairs: ['BTC-USD'], EventSource, token: 'old', getToken })
  const snap = await waitFor(feed, (s) => s.state === 'live', 5_000, 'live')
  assert.equal(snap.authError, null)
  assert.equal(getToken.calls, 1)
})

test('a failing getToken closes the feed with a 401 authError before any request', async () => {
  const { url, requests } = await serve(['hold'])
  feed = createPriceFeed({ url, EventSource, getToken: async () => { throw new Error('vault sealed') } })
  const snap = await waitFor(feed, (s) => s.state === 'closed', 5_000, 'closed')
  assert.equal(snap.authError.code, 401)
  assert.match(snap.authError.message, /getToken failed: vault sealed/)
  assert.equal(requests.length, 0)
})

test('browser-like EventSource: a refused stream is probed and shows as a 401, not reconnecting forever', async () => {
  const { url, requests } = await serve(['401', '401', 'hold'])
  feed = createPriceFeed({ url, EventSource: BrowserLikeEventSource })
  const snap = await waitFor(feed, (s) => s.state === 'closed', 5_000, 'closed')
  assert.deepEqual(snap.authError, { code: 401, message: 'API key a1b2c3d4 is expired', pairs: [] })
  await sleep(1_500)
  assert.equal(requests.length, 2, 'the stream, then one probe for its status; no retries')
})

test('browser-like EventSource: a refused stream that is not an auth problem is retried', async () => {
  const { url } = await serve(['end', 'end', 'hold'])
  // A 204: the browser-like source closes; the probe sees 204, and the client reconnects.
  feed = createPriceFeed({ url, pairs: ['BTC-USD'], EventSource: BrowserLikeEventSource })
  const snap = await waitFor(feed, (s) => s.state === 'live', 10_000, 'live after the refusals')
  assert.equal(snap.authError, null)
})

// -- the rules, over many seeded scripts ----------------------------------------------------

/** A small seeded PRNG (mulberry32), so a failing script can be replayed from its seed. */
function random(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** What must happen: the end state, the provider calls and the requests made. */
function expected(script, provider, initial) {
  let calls = 0
  let untested = false
  if (provider && !initial) [calls, untested] = [1, true]
  for (const [n, answer] of script.entries()) {
    if (answer === '401') {
      if (provider && !untested) {
        ;[calls, untested] = [calls + 1, true]
        continue
      }
      return { end: 401, calls, requests: n + 1 }
    }
    if (answer === '403') return { end: 403, calls, requests: n + 1 }
    untested = false
    if (answer === 'hold') return { end: 'live', calls, requests: n + 1 }
    if (provider) [calls, untested] = [calls + 1, true] // reauth
  }
  throw new Error('scripts end in hold')
}

test('for any answers: one refresh per accepted token, 401/403 final, ids once and in order', async () => {
  const runs = []
  for (let seed = 1; seed <= 24; seed++) {
    const rand = random(seed)
    const script = []
    let reauths = 0
    while (script.length < 5) {
      const pick = ['401', '403', 'reauth', 'hold'][Math.floor(rand() * 4)]
      if (pick === 'reauth' && reauths === 2) continue // a third would wait seconds of backoff
      reauths += pick === 'reauth'
      script.push(pick)
      if (pick !== 'reauth' && pick !== '401') break
    }
    if (script.at(-1) === 'reauth' || script.at(-1) === '401') script.push('hold')
    const provider = rand() < 0.5
    const initial = rand() < 0.5
    runs.push(
      (async () => {
        const { url, requests } = await serve(script)
        const getToken = provider ? tokens() : null
        const ids = []
        const one = createPriceFeed({ url, pairs: ['BTC-USD'], EventSource, token: initial ? 'static' : null, getToken })
        feeds.push(one)
        one.on('price', (tick) => ids.push(tick.id))
        const want = expected(script, provider, initial)
        const what = `seed ${seed}: ${script.join(',')} provider=${provider} initial=${initial}`
        // Live counts only on the last connection: the reauth ones are live for a moment too.
        const done = (s) => s.state === 'closed' || (s.state === 'live' && requests.length === want.requests)
        const snap = await waitFor(one, done, 8_000, what)
        assert.equal(snap.state === 'live' ? 'live' : snap.authError?.code, want.end, what)
        await sleep(200) // a wrong extra request or refresh would show by now
        assert.equal(requests.length, want.requests, what)
        assert.equal(getToken?.calls ?? 0, want.calls, what)
        assert.deepEqual(ids, ids.map((_, i) => i + 1), `${what}: every id once, in order`)
      })(),
    )
  }
  await Promise.all(runs)
})
