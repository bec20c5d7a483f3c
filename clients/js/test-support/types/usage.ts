// Compiled (not run) by test/package.test.js: the declarations accept real usage and
// reject misuse (each @ts-expect-error must be an error).
import { CONNECTING_SNAPSHOT, SIMULATED_REASON, createPriceFeed } from 'bittrade-feed-client'
import type { Alert, PriceFeed, PriceSnapshot, Tick } from 'bittrade-feed-client'
import { EventSource as NodeEventSource } from 'eventsource'

const feed: PriceFeed = createPriceFeed({ url: '/api/price-stream', pairs: ['BTC-USD'], staleAfterMs: 75_000 })
const unsubscribe: () => void = feed.subscribe(() => {
  const snap: PriceSnapshot = feed.getSnapshot()
  const tick = snap.pairs['BTC-USD']
  const price: string | null = tick?.price ?? null
  const ok: boolean = snap.canTrade && snap.state === 'live'
  const fake: boolean = snap.simulated || (tick?.simulated ?? false) || snap.reason === SIMULATED_REASON
  void price, ok, fake
})
feed.on('price', (tick: Tick) => tick.price.toUpperCase())
feed.on('price', (tick: Tick) => tick.simulated === true)
feed.on('status', (event) => event.simulated === false)
feed.on('resync', (event) => event.ticks.map((t) => t.value.toFixed(2)))
feed.on('status', (event) => event.state === 'stale')
unsubscribe()
feed.close()
void CONNECTING_SNAPSHOT.state

// @ts-expect-error: not an event the feed emits
feed.on('message', () => {})
// @ts-expect-error: staleAfterMs is a number of milliseconds
createPriceFeed({ staleAfterMs: '75s' })
// @ts-expect-error: snapshots are read-only
feed.getSnapshot().canTrade = true
// @ts-expect-error: no such state
const wrong: PriceSnapshot['state'] = 'open'
void wrong

// Both the browser's EventSource and the `eventsource` package's fit the option.
createPriceFeed({ url: 'http://127.0.0.1:8080/api/price-stream', EventSource: globalThis.EventSource })
createPriceFeed({ url: 'http://127.0.0.1:8080/api/price-stream', EventSource: NodeEventSource })

// Credentials: a token, a token source, and the hooks a login flow uses.
const authed = createPriceFeed({
  url: 'http://127.0.0.1:8080/api/price-stream',
  EventSource: NodeEventSource,
  token: 'btk_abcd_secret',
  getToken: async () => 'a.jwt.token',
  onReauth: async (reason: string) => void reason.length,
  onError: (err) => void (err.code === 401 ? err.message : err.pairs.join(',')),
})
const refused = authed.getSnapshot().authError
const code: 401 | 403 | undefined = refused?.code
void code
// @ts-expect-error: getToken returns the token, not an object
createPriceFeed({ getToken: () => ({ token: 'x' }) })

// Alerts: a callback option and an event, with the resume point in the snapshot.
const alerting = createPriceFeed({
  onAlert: (alert: Alert) => void `${alert.id} ${alert.detail.toUpperCase()} ${alert.tickId ?? 'test'}`,
  alertsAfter: 41,
})
alerting.on('alert', (alert) => alert.ruleId + (alert.count ?? 0))
const resumeAlertsAfter: number | null = alerting.getSnapshot().lastAlertId
void resumeAlertsAfter
// @ts-expect-error: alertsAfter is a firing id, not a string
createPriceFeed({ alertsAfter: '41' })
// @ts-expect-error: an alert is read-only
alerting.on('alert', (alert) => void (alert.detail = ''))
