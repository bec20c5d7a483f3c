// Alert events (issue 14): onAlert / feed.on('alert'), one delivery per firing id, the
// alert resume point (alerts_after) apart from the price one (lastEventId).
//
// First against a scripted EventSource, so each case (a duplicate, a lower id, a dropped
// connection) happens exactly when the test says; then against the real daemon with alerts
// on: a price crossing a rule, and a firing made while the client is away, replayed once.

import assert from 'node:assert/strict'
import { after, afterEach, before, describe, test } from 'node:test'

import { EventSource } from 'eventsource'

import { createPriceFeed } from '../src/index.js'
import { startDaemon } from '../test-support/daemon.js'
import { startFakeKraken } from '../test-support/fake-kraken.js'
import { CLOSED, CONNECTING, ScriptedEventSource, firing } from '../test-support/scripted-eventsource.js'
import { sleep, waitFor } from '../test-support/wait.js'

const STREAM = 'http://127.0.0.1:9/api/price-stream'

const price = (id) => ({ id, pair: 'BTC-USD', price: '70001.5', ts: new Date().toISOString(), sources: ['kraken'] })

describe('alert events, scripted', () => {
  const feeds = []
  const open = (opts = {}) => {
    ScriptedEventSource.made = []
    const feed = createPriceFeed({ url: STREAM, pairs: ['BTC-USD'], EventSource: ScriptedEventSource, ...opts })
    feeds.push(feed)
    const es = ScriptedEventSource.made.at(-1)
    es.open()
    return { feed, es }
  }
  afterEach(() => {
    for (const feed of feeds.splice(0)) feed.close()
  })

  test('an alert reaches onAlert and on("alert"), parsed; the first URL asks for no replay', () => {
    const seen = []
    const { feed, es } = open({ onAlert: (alert) => seen.push(['option', alert]) })
    feed.on('alert', (alert) => seen.push(['on', alert]))
    assert.equal(es.url.searchParams.get('alerts_after'), null, 'without alertsAfter: firings from now on')
    es.send('alert', firing(7))
    assert.deepEqual(seen.map(([how, a]) => [how, a.id]), [['option', 7], ['on', 7]])
    const alert = seen[0][1]
    assert.equal(alert.ruleId, 3)
    assert.equal(alert.tickId, 107)
    assert.equal(alert.detail, 'BTC-USD crossed above 70000 (7)')
    assert.equal(alert.pair, 'BTC-USD')
    assert.equal(alert.kind, 'crosses_up')
    assert.equal(alert.direction, 'up')
    assert.equal(alert.price, '70001.5')
    assert.equal(alert.test, false)
    assert.ok(Object.isFrozen(alert) && Object.isFrozen(alert.data))
    assert.equal(feed.getSnapshot().lastAlertId, 7)
  })

  test('a duplicate id, or one below the highest seen, is dropped; a malformed one is reported', () => {
    const ids = []
    const { feed, es } = open({ onAlert: (alert) => ids.push(alert.id) })
    es.send('alert', firing(5))
    es.send('alert', firing(5))
    es.send('alert', firing(4))
    es.send('alert', firing(6))
    es.send('alert', '{not json')
    es.send('alert', { id: 'eight', rule_id: 3, at: 'x' })
    assert.deepEqual(ids, [5, 6])
    const snap = feed.getSnapshot()
    assert.equal(snap.lastAlertId, 6)
    assert.match(snap.lastError.message, /malformed alert event/)
  })

  test('alert events never move the price resume point', () => {
    const { feed, es } = open({ onAlert: () => {} })
    es.send('price', price(41), '41')
    // The daemon sends alerts without an id line: EventSource keeps the last price's id.
    es.send('alert', firing(900), '41')
    es.send('alert', firing(901), '41')
    const snap = feed.getSnapshot()
    assert.equal(snap.lastEventId, 41)
    assert.equal(snap.lastAlertId, 901)
    assert.equal(snap.pairs['BTC-USD'].id, 41)
  })

  test('a dropped connection after an alert reconnects with alerts_after = the highest id', async () => {
    const ids = []
    const { feed, es } = open({ onAlert: (alert) => ids.push(alert.id) })
    es.send('price', price(41), '41')
    es.send('alert', firing(8))
    es.drop()
    // EventSource would retry the old URL (no alerts_after): the client takes over instead.
    assert.equal(es.readyState, CLOSED)
    // After the client's backoff (about a second); the snapshot does not change meanwhile.
    for (let waited = 0; ScriptedEventSource.made.length < 2 && waited < 5_000; waited += 20) await sleep(20)
    const again = ScriptedEventSource.made[1]
    assert.equal(again.url.searchParams.get('alerts_after'), '8')
    assert.equal(again.url.searchParams.get('last_event_id'), '41')
    again.open()
    // The daemon replays from 8 on: 9 is new; a replay of 8 (a stale resume) is dropped.
    again.send('alert', firing(8))
    again.send('alert', firing(9))
    assert.deepEqual(ids, [8, 9])
  })

  test('the opening position is the resume point before any alert arrives', async () => {
    const ids = []
    const { feed, es } = open({ onAlert: (alert) => ids.push(alert.id) })
    es.send('price', price(41), '41')
    es.send('alerts', { after: 30 })
    assert.equal(feed.getSnapshot().lastAlertId, 30)
    es.send('alerts', { after: -1 })
    assert.match(feed.getSnapshot().lastError.message, /malformed alerts event/)
    es.drop()
    // The URL had no alerts_after: the client reconnects itself with the position.
    assert.equal(es.readyState, CLOSED)
    for (let waited = 0; ScriptedEventSource.made.length < 2 && waited < 5_000; waited += 20) await sleep(20)
    const again = ScriptedEventSource.made[1]
    assert.equal(again.url.searchParams.get('alerts_after'), '30')
    again.open()
    again.send('alerts', { after: 12 }) // lower than what it has: never moves it back
    again.send('alert', firing(31))
    assert.deepEqual(ids, [31])
    assert.equal(feed.getSnapshot().lastAlertId, 31)
  })

  test('a dropped connection with no new alert is left to EventSource (the URL is still right)', () => {
    const { es } = open({ alertsAfter: 12, onAlert: () => {} })
    assert.equal(es.url.searchParams.get('alerts_after'), '12')
    es.drop()
    assert.equal(es.readyState, CONNECTING, 'not closed: EventSource retries it')
    assert.equal(ScriptedEventSource.made.length, 1)
  })

  test('bad options are refused at once', () => {
    assert.throws(() => createPriceFeed({ url: STREAM, EventSource: ScriptedEventSource, onAlert: 'yes' }), /onAlert must be a function/)
    assert.throws(() => createPriceFeed({ url: STREAM, EventSource: ScriptedEventSource, alertsAfter: -1 }), /alertsAfter must be a firing id/)
  })
})

/**
 * Node's EventSource, whose connections wait while `gate.closed`: the test decides when
 * the client gets back to the daemon.
 */
function gatedEventSource() {
  const gate = { closed: false, urls: [], opened: null }
  let release = () => {}
  gate.shut = () => {
    gate.closed = true
    gate.opened = new Promise((resolve) => (release = resolve))
  }
  gate.open = () => {
    gate.closed = false
    release()
  }
  class Gated {
    constructor(url, init) {
      gate.urls.push(new URL(url))
      this.listeners = []
      this.inner = null
      this.done = false
      const start = () => {
        if (this.done) return
        this.inner = new EventSource(url, init)
        for (const [type, listener] of this.listeners) this.inner.addEventListener(type, listener)
      }
      if (gate.closed) gate.opened.then(start)
      else start()
    }
    get readyState() {
      return this.inner?.readyState ?? CONNECTING
    }
    addEventListener(type, listener) {
      this.listeners.push([type, listener])
      this.inner?.addEventListener(type, listener)
    }
    close() {
      this.done = true
      this.inner?.close()
    }
  }
  return { gate, Gated }
}

describe('alert events from the real daemon', () => {
  let kraken
  let daemon
  const feeds = []
  before(async () => {
    kraken = await startFakeKraken('64123.4')
    daemon = await startDaemon({
      interval: 0.2,
      sources: { 'BTC-USD': ['kraken'] },
      exchanges: { kraken: { base_url: kraken.url } },
      sections: { alerts: { enabled: true } },
    })
  })
  afterEach(() => {
    for (const feed of feeds.splice(0)) feed.close()
    kraken.setPrice('64123.4')
  })
  after(async () => {
    await daemon?.dispose()
    await kraken?.close()
  })

  async function api(method, path, body) {
    const res = await fetch(`${daemon.url}${path}`, {
      method,
      headers: body ? { 'Content-Type': 'application/json' } : {},
      body: body ? JSON.stringify(body) : undefined,
    })
    const doc = res.status === 204 ? null : await res.json()
    assert.ok(res.ok, `${method} ${path}: HTTP ${res.status} ${JSON.stringify(doc)}`)
    return doc
  }

  test('a price crossing a rule reaches onAlert with its detail; lastEventId stays a price id', async () => {
    const rule = await api('POST', '/api/alerts/rules', { pair: 'BTC-USD', kind: 'crosses_up', level: '65000' })
    const alerts = []
    const prices = []
    const feed = createPriceFeed({ url: `${daemon.url}/api/price-stream`, pairs: ['BTC-USD'], EventSource, onAlert: (a) => alerts.push(a) })
    feeds.push(feed)
    feed.on('price', (tick) => prices.push(tick.id))
    const opening = await waitFor(feed, (s) => s.canTrade, 10_000, 'live')
    // The opening price may predate the rule; the first price after it only arms the rule.
    await waitFor(feed, (s) => s.lastEventId > opening.lastEventId, 10_000, 'a price after the rule')
    kraken.setPrice('65500.5')
    const snap = await waitFor(feed, () => alerts.length > 0, 10_000, 'an alert')
    assert.equal(alerts.length, 1)
    const [alert] = alerts
    assert.equal(alert.ruleId, rule.id)
    assert.equal(alert.detail, 'BTC-USD 65500.5 crossed above 65000')
    assert.equal(alert.price, '65500.5')
    assert.ok(prices.includes(alert.tickId), 'fired by a price the stream delivered')
    assert.equal(snap.lastEventId, Math.max(...prices), 'the resume point is the last price id')
    await api('DELETE', `/api/alerts/rules/${rule.id}`)
  })

  test('a firing made while the client is away arrives once after it reconnects with alerts_after', async () => {
    const rule = await api('POST', '/api/alerts/rules', { pair: 'BTC-USD', kind: 'above', level: '1000000' })
    const { gate, Gated } = gatedEventSource()
    const ids = []
    const feed = createPriceFeed({ url: `${daemon.url}/api/price-stream`, pairs: ['BTC-USD'], EventSource: Gated, onAlert: (a) => ids.push(a.id) })
    feeds.push(feed)
    await waitFor(feed, (s) => s.state === 'live', 10_000, 'live')
    const first = await api('POST', `/api/alerts/rules/${rule.id}/test`)
    await waitFor(feed, (s) => s.lastAlertId === first.id, 10_000, 'the live test firing')

    gate.shut()
    await daemon.stop()
    await waitFor(feed, (s) => s.state === 'reconnecting', 10_000, 'reconnecting')
    await daemon.start()
    const away = await api('POST', `/api/alerts/rules/${rule.id}/test`)
    gate.open()
    const back = await waitFor(feed, (s) => s.lastAlertId === away.id, 15_000, 'the firing made while away')
    assert.deepEqual(ids, [first.id, away.id], 'each firing once, in order')
    assert.equal(gate.urls.at(-1).searchParams.get('alerts_after'), String(first.id))
    assert.equal(back.lastEventId !== null, true, 'prices resumed too')
  })
})
