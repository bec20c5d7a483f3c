// An EventSource whose daemon side is the test: it opens, sends events and drops the
// connection exactly when the test says, with no server and no timing.

export const CONNECTING = 0
export const OPEN = 1
export const CLOSED = 2

/** The subset of EventSource the client uses; every instance is kept in `made`. */
export class ScriptedEventSource {
  static made = []
  constructor(url) {
    this.url = new URL(url)
    this.readyState = CONNECTING
    this.listeners = new Map()
    ScriptedEventSource.made.push(this)
  }
  addEventListener(type, listener) {
    if (!this.listeners.has(type)) this.listeners.set(type, [])
    this.listeners.get(type).push(listener)
  }
  close() {
    this.readyState = CLOSED
  }
  dispatch(type, event = {}) {
    for (const listener of this.listeners.get(type) ?? []) listener({ type, ...event })
  }
  open() {
    this.readyState = OPEN
    this.dispatch('open')
  }
  /** One event; `data` is sent as JSON unless it is a string already. */
  send(type, data, lastEventId = '') {
    this.dispatch(type, { data: typeof data === 'string' ? data : JSON.stringify(data), lastEventId })
  }
  /** A dropped connection that EventSource itself retries with the same URL. */
  drop() {
    this.readyState = CONNECTING
    this.dispatch('error', { message: 'socket closed' })
  }
}

/** An alert event's data (a firing, as the daemon sends it) with firing id `id`. */
export const firing = (id, detail = `BTC-USD crossed above 70000 (${id})`) => ({
  id,
  rule_id: 3,
  tick_id: 100 + id,
  at: '2026-12-02T05:00:00.000Z',
  data: { tick_id: 100 + id, pair: 'BTC-USD', price: '70001.5', ts: '2026-12-02T05:00:00.000Z', kind: 'crosses_up', direction: 'up', detail, count: 1, simulated: false },
})
