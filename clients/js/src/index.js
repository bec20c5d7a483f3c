// bittrade-feed browser/Node client: one EventSource on /api/price-stream, exposed as a
// store (subscribe/getSnapshot) that React's useSyncExternalStore can use directly.
//
// No dependencies and no build step: this one file is the whole client. The daemon's
// dashboard serves this same file (the Python wheel carries it as static/feed.js).
//
// Staleness: EventSource hides comment lines, so the daemon's `: keep-alive` heartbeats
// (about every 15 s of idle) never reach this code. What does arrive is one `price` event
// per pair per fetch interval while the feed is healthy, and a `status` event as soon as
// the daemon declares a pair stale (after its `feed.stale_after`, checked once per
// interval). So the daemon itself reports trouble within `stale_after + interval`; if
// nothing at all has arrived for that long, it is the connection that is broken. The
// default window, 120 s, is that sum for the daemon's defaults (90 s + 30 s). Pass
// `staleAfterMs` = (feed.stale_after + feed.interval) * 1000 for other settings; never
// less than 2 * interval, or a healthy feed flickers stale between two prices.
//
// Credentials (issue 13): browsers send the daemon's `bt_session` cookie (set by
// POST /api/login; `withCredentials` for another origin). An EventSource that takes a
// `fetch` override (Node's `eventsource` package) sends `token`/`getToken()` as
// `Authorization: Bearer` instead. A 401 or 403 is not retried forever: it closes the
// feed with `authError` set (a 401 first asks `getToken` once for a new token, if given).
// A `reauth` event (the credential expired or was revoked) closes the stream; the client
// calls `onReauth`, refreshes the token and reconnects from the last id, so nothing is lost.
//
// Alerts (issue 14): a stream whose credential has the `alerts` scope also carries `alert`
// events, the owner's rule firings. They have no `id:` line, so the price resume point
// (lastEventId) never moves; their own resume point is the firing id. The client keeps the
// highest it saw and sends it as `alerts_after` on every connection it opens, so the daemon
// replays what fired while it was away; an alert with an id already seen is dropped. The
// EventSource's own reconnect after a dropped connection reuses the URL it was made with;
// when an alert arrived since, the client closes it and reconnects itself with the new
// `alerts_after` instead. Either way an alert already seen is dropped by id: none is
// lost or repeated. Each opening also carries an `alerts` event, `{"after": N}`: every
// alert up to N was sent or predates the stream, so the client resumes from N even before
// its first alert arrives (what fires while the very first connection is down is replayed).

export const DEFAULT_STALE_AFTER_MS = 120_000
/** `reason` while every price is current but some come from the daemon's simulated source. */
export const SIMULATED_REASON = 'Simulated prices: not for trading'
export const DEFAULT_MAX_CLOCK_SKEW_MS = 30_000

const MIN_BACKOFF_MS = 1_000
const MAX_BACKOFF_MS = 30_000
const CLOSED = 2
/** A reauth within this long of the previous one waits for backoff instead of reconnecting at once. */
export const REAUTH_PACE_MS = 10_000

/** The snapshot before any connection: also the server-rendering snapshot of the hook. */
export const CONNECTING_SNAPSHOT = Object.freeze({
  state: 'connecting',
  canTrade: false,
  reason: 'connecting to the price feed',
  simulated: false,
  pairs: Object.freeze({}),
  lastEventId: null,
  lastEventAt: null,
  lastAlertId: null,
  lastError: null,
  authError: null,
})

/** Open the price stream and return a store (types and option docs: index.d.ts). */
export function createPriceFeed(options = {}) {
  const {
    url = '/api/price-stream',
    pairs = [],
    withCredentials = false,
    staleAfterMs = DEFAULT_STALE_AFTER_MS,
    maxClockSkewMs = DEFAULT_MAX_CLOCK_SKEW_MS,
    lastEventId = null,
    alertsAfter = null,
    onAlert = null,
    now = Date.now,
    getToken = null,
    onReauth = null,
    onError = null,
  } = options
  // Called through a wrapper: a browser's fetch refuses to run with another `this`.
  const fetchImpl = options.fetch ?? (typeof globalThis.fetch === 'function' ? (input, init) => globalThis.fetch(input, init) : null)
  const EventSourceImpl = options.EventSource ?? globalThis.EventSource
  if (typeof EventSourceImpl !== 'function') {
    throw new TypeError(
      'createPriceFeed: no EventSource here; pass options.EventSource (in Node: the "eventsource" package)',
    )
  }
  if (!(staleAfterMs > 0)) throw new RangeError('createPriceFeed: staleAfterMs must be > 0')
  const wanted = pairs.map((p) => String(p).trim().toUpperCase()).filter(Boolean)
  const baseUrl = resolveUrl(url, wanted)
  if (getToken !== null && typeof getToken !== 'function') throw new TypeError('createPriceFeed: getToken must be a function')
  if (onAlert !== null && typeof onAlert !== 'function') throw new TypeError('createPriceFeed: onAlert must be a function')
  if (alertsAfter != null && !(Number.isSafeInteger(Number(alertsAfter)) && Number(alertsAfter) >= 0)) {
    throw new RangeError('createPriceFeed: alertsAfter must be a firing id (an integer >= 0)')
  }
  // Only an implementation that lets us make its requests can send a header; a browser's
  // own EventSource sends cookies only.
  const canSendHeader = EventSourceImpl[Symbol.for('eventsource.supports-fetch-override')] === true

  const listeners = new Set()
  const handlers = { price: new Set(), status: new Set(), resync: new Set(), alert: new Set() }
  if (onAlert !== null) handlers.alert.add(onAlert)
  /** @type {Map<string, object>} latest tick per pair */
  const ticks = new Map()
  /** @type {Map<string, {state: string, since: string, reason: string}>} */
  const statuses = new Map()
  const seenPairs = new Set(wanted)

  let source = null
  /** The alert resume point in the current connection's URL. */
  let sourceAlertId = null
  let phase = 'connecting' // connecting | open | reconnecting | closed
  let openedAt = 0
  let lastId = lastEventId == null ? null : Number(lastEventId)
  /** The highest alert (firing) id seen: the alert resume point, apart from lastId. */
  let lastAlertId = alertsAfter == null ? null : Number(alertsAfter)
  let lastEventAt = null
  let lastError = null
  let backoff = MIN_BACKOFF_MS
  let reconnectTimer = null
  let token = options.token ? String(options.token) : null
  // A token from getToken that no connection has accepted yet: a 401 now is final.
  let untested = false
  let lastReauthAt = -Infinity
  let reauthing = false
  let authError = null
  /** The problem document of the last 401/403 our fetch saw (eventsource gives no body). */
  let problem = null
  let snapshot = CONNECTING_SNAPSHOT
  let signature = ''

  const checkEvery = Math.min(1000, Math.max(50, Math.floor(staleAfterMs / 10)))
  const watchdog = setInterval(onWatchdog, checkEvery)
  // In Node a forgotten feed must not keep the process alive on its timer alone.
  watchdog.unref?.()

  if (getToken !== null && token === null) refreshThen(connect)
  else connect()

  function streamUrl() {
    const target = new URL(baseUrl)
    if (lastId != null) target.searchParams.set('last_event_id', String(lastId))
    if (lastAlertId != null) target.searchParams.set('alerts_after', String(lastAlertId))
    return target.toString()
  }

  function authHeaders() {
    return token === null ? {} : { Authorization: `Bearer ${token}` }
  }

  /** eventsource's requests, with our header, keeping the problem of a refusal. */
  async function fetchWithCredentials(input, init = {}) {
    const res = await fetchImpl(input, { ...init, headers: { ...init.headers, ...authHeaders() } })
    if (res.status === 401 || res.status === 403) problem = await readProblem(res.clone())
    return res
  }

  function connect() {
    if (phase === 'closed') return
    const init = { withCredentials }
    if (canSendHeader && typeof fetchImpl === 'function') init.fetch = fetchWithCredentials
    const es = new EventSourceImpl(streamUrl(), init)
    source = es
    sourceAlertId = lastAlertId
    es.addEventListener('open', () => {
      if (source !== es) return
      phase = 'open'
      openedAt = now()
      untested = false
      reauthing = false
      update()
    })
    es.addEventListener('error', (event) => onStreamError(es, event))
    es.addEventListener('reauth', (event) => onReauthEvent(es, event))
    es.addEventListener('price', (event) => onEvent(es, event, onPrice))
    es.addEventListener('status', (event) => onEvent(es, event, onStatus))
    es.addEventListener('resync', (event) => onEvent(es, event, onResync))
    es.addEventListener('alert', (event) => onEvent(es, event, onAlertEvent))
    es.addEventListener('alerts', (event) => onEvent(es, event, onAlertPosition))
  }

  function onEvent(es, event, apply) {
    if (source !== es) return
    let data
    try {
      data = JSON.parse(event.data)
    } catch {
      lastError = { message: `unreadable ${event.type} event: ${String(event.data).slice(0, 80)}`, at: now() }
      update()
      return
    }
    phase = 'open'
    lastEventAt = now()
    backoff = MIN_BACKOFF_MS
    apply(data, event)
    update()
  }

  function onPrice(data) {
    const tick = readTick(data, now())
    if (tick === null) {
      lastError = { message: `malformed price event: ${JSON.stringify(data).slice(0, 80)}`, at: now() }
      return
    }
    if (!accepts(tick.pair)) return
    seenPairs.add(tick.pair)
    ticks.set(tick.pair, tick)
    lastId = lastId == null ? tick.id : Math.max(lastId, tick.id)
    emit('price', tick)
  }

  function onStatus(data) {
    if (!data || typeof data.pair !== 'string' || !accepts(data.pair)) return
    seenPairs.add(data.pair)
    const status = {
      pair: data.pair,
      state: String(data.state),
      since: data.since ?? null,
      reason: data.reason ?? '',
      simulated: data.simulated === true,
    }
    statuses.set(data.pair, status)
    emit('status', status)
  }

  function onResync(data, event) {
    // The daemon could not replay what we missed: its snapshot replaces ours.
    const received = now()
    for (const pair of [...ticks.keys()]) if (accepts(pair)) ticks.delete(pair)
    const fresh = []
    for (const raw of Array.isArray(data?.ticks) ? data.ticks : []) {
      const tick = readTick(raw, received)
      if (tick === null || !accepts(tick.pair)) continue
      seenPairs.add(tick.pair)
      ticks.set(tick.pair, tick)
      fresh.push(tick)
    }
    const id = Number(event.lastEventId)
    if (Number.isSafeInteger(id) && id > 0) lastId = id
    else if (fresh.length) lastId = Math.max(...fresh.map((t) => t.id))
    else lastId = null
    emit('resync', { reason: String(data?.reason ?? ''), ticks: fresh })
  }

  function onAlertEvent(data) {
    const alert = readAlert(data)
    if (alert === null) {
      lastError = { message: `malformed alert event: ${JSON.stringify(data).slice(0, 80)}`, at: now() }
      return
    }
    // Per connection the daemon sends increasing ids, and a resume starts above the id
    // asked for: one at or below the highest seen is a replay of one already delivered.
    if (lastAlertId != null && alert.id <= lastAlertId) return
    lastAlertId = alert.id
    emit('alert', alert)
  }

  function onAlertPosition(data) {
    const after = data?.after
    if (!Number.isSafeInteger(after) || after < 0) {
      lastError = { message: `malformed alerts event: ${JSON.stringify(data).slice(0, 80)}`, at: now() }
      return
    }
    if (lastAlertId == null || after > lastAlertId) lastAlertId = after
  }

  /** Ask getToken for a token (at most once per accepted one), then run `next`. */
  function refreshThen(next) {
    Promise.resolve()
      .then(() => getToken())
      .then((fresh) => {
        if (typeof fresh !== 'string' || !fresh.trim()) throw new TypeError(`getToken returned ${typeof fresh}, not a token`)
        token = fresh.trim()
        untested = true
        next()
      })
      .catch((err) => fail(401, `getToken failed: ${err?.message ?? err}`, []))
  }

  function onReauthEvent(es, event) {
    if (source !== es) return
    let why = 'no reason given'
    try {
      const data = JSON.parse(event.data)
      if (typeof data?.reason === 'string' && data.reason) why = data.reason.slice(0, 80)
    } catch {
      // a reauth without a readable reason is still a reauth
    }
    // The daemon closes the stream next; do not let EventSource retry the old credential.
    es.close()
    source = null
    phase = 'reconnecting'
    const immediate = now() - lastReauthAt >= REAUTH_PACE_MS
    lastReauthAt = now()
    reauthing = true
    lastError = { message: `the daemon asked for a new credential (${why})`, at: now() }
    update()
    const resume = () => {
      // A planned handover reconnects at once; a daemon that keeps asking is paced.
      if (immediate) connect()
      else scheduleReconnect()
    }
    Promise.resolve()
      .then(() => onReauth?.(why))
      .catch(report)
      .then(() => {
        if (phase === 'closed') return
        if (getToken !== null) refreshThen(resume)
        else resume()
      })
  }

  /** A 401/403 (or getToken failing): closed for good, with the reason for people. */
  function fail(code, detail, pairs) {
    if (phase === 'closed') return
    const what = code === 403 ? 'forbidden' : 'not authorised'
    authError = { code, message: detail, pairs }
    lastError = { message: `${what} (HTTP ${code}): ${detail}`, code, at: now() }
    stop()
    update()
    if (onError !== null) {
      try {
        onError(authError)
      } catch (err) {
        report(err)
      }
    }
  }

  function refused(code) {
    const doc = problem ?? {}
    problem = null
    const detail = typeof doc.detail === 'string' && doc.detail ? doc.detail : code === 401 ? 'log in or send a valid credential' : 'not granted to this credential'
    const pairs = Array.isArray(doc.pairs) ? doc.pairs.filter((p) => typeof p === 'string') : []
    if (code === 401 && getToken !== null && !untested) {
      // Once per accepted token: a refused fresh one is final (no 401 loop).
      phase = 'reconnecting'
      update()
      refreshThen(connect)
      return
    }
    fail(code, detail, pairs)
  }

  /** Browsers hide the status of a refused EventSource: ask once with fetch. */
  async function probe() {
    const controller = new AbortController()
    const timer = setTimeout(() => controller.abort(), 10_000)
    try {
      const res = await fetchImpl(streamUrl(), {
        headers: { Accept: 'text/event-stream', ...authHeaders() },
        credentials: withCredentials ? 'include' : 'same-origin',
        signal: controller.signal,
      })
      if (res.status === 401 || res.status === 403) problem = await readProblem(res)
      return res.status
    } catch {
      return undefined
    } finally {
      clearTimeout(timer)
      controller.abort() // a 200 would be a whole stream: only its status was wanted
    }
  }

  function onStreamError(es, event) {
    if (source !== es || phase === 'closed') return
    const code = typeof event?.code === 'number' ? event.code : undefined
    // Browsers say nothing about why; Node's eventsource gives a message and the status.
    const message = event?.message || (code ? `HTTP ${code}` : 'stream interrupted')
    lastError = { message, code, at: now() }
    reauthing = false
    if (code === 401 || code === 403) {
      es.close()
      source = null
      refused(code)
      return
    }
    if (code === undefined && es.readyState === CLOSED && typeof fetchImpl === 'function') {
      // A browser refused answer: a 401/403 must show as such, not as reconnecting forever.
      es.close()
      phase = 'reconnecting'
      update()
      probe().then((status) => {
        if (source !== es || phase === 'closed') return
        source = null
        if (status === 401 || status === 403) refused(status)
        else scheduleReconnect()
      })
      return
    }
    if (code !== undefined && code >= 400 && code < 500 && code !== 408 && code !== 429) {
      // A request the daemon refuses (unknown pair, bad id) will not get better by retrying.
      stop()
      update()
      return
    }
    phase = 'reconnecting'
    if (es.readyState === CLOSED || lastAlertId !== sourceAlertId) {
      // Browsers give up for good on a non-200 answer (a 503 from a proxy while the
      // daemon restarts, say); keep trying with backoff, resuming from the last id.
      // EventSource's own retry would send a stale alerts_after: reconnect ourselves.
      es.close()
      scheduleReconnect()
    }
    update()
  }

  function scheduleReconnect() {
    if (reconnectTimer !== null || phase === 'closed') return
    const delay = backoff * (0.8 + Math.random() * 0.4)
    backoff = Math.min(backoff * 2, MAX_BACKOFF_MS)
    reconnectTimer = setTimeout(() => {
      reconnectTimer = null
      if (phase !== 'closed') connect()
    }, delay)
  }

  function onWatchdog() {
    if (phase === 'open') {
      const silentFor = now() - (lastEventAt ?? openedAt)
      if (silentFor >= 2 * staleAfterMs) {
        // Nothing for twice the window: treat the socket as dead (a half-open TCP
        // connection looks open forever) and start over from the last id.
        lastError = { message: `no data for ${Math.round(silentFor / 1000)} s; reconnecting`, at: now() }
        source?.close()
        source = null
        phase = 'reconnecting'
        scheduleReconnect()
      }
    }
    update()
  }

  function stop() {
    phase = 'closed'
    clearInterval(watchdog)
    if (reconnectTimer !== null) clearTimeout(reconnectTimer)
    reconnectTimer = null
    source?.close()
    source = null
  }

  function accepts(pair) {
    return wanted.length === 0 || wanted.includes(pair)
  }

  function update() {
    const next = derive()
    const sig = JSON.stringify(next)
    if (sig === signature) return
    signature = sig
    snapshot = deepFreeze(next)
    for (const listener of [...listeners]) {
      try {
        listener()
      } catch (err) {
        report(err)
      }
    }
  }

  function derive() {
    const t = now()
    const open = phase === 'open'
    const silent = open && t - (lastEventAt ?? openedAt) >= staleAfterMs
    const names = wanted.length ? wanted : [...seenPairs].sort()
    const out = {}
    const problems = []
    let anyStale = false
    for (const pair of names) {
      const tick = ticks.get(pair) ?? null
      const status = statuses.get(pair) ?? null
      // Any state but "live" ("stale", "suspect": a price jump waiting for confirmation,
      // or one a newer daemon adds) means the daemon does not vouch for the price.
      const serverStale = status !== null && status.state !== 'live'
      const aged =
        tick !== null && (t - tick.receivedAt >= staleAfterMs || t - tick.tsMs >= staleAfterMs + maxClockSkewMs)
      if (serverStale) problems.push(`${pair} is ${status.state}: ${status.reason || 'no recent price'}`)
      else if (tick === null) problems.push(`no price for ${pair} yet`)
      else if (status === null) problems.push(`waiting for the status of ${pair}`)
      else if (aged) problems.push(`no new ${pair} price for ${Math.round((t - tick.receivedAt) / 1000)} s`)
      anyStale ||= serverStale || aged
      out[pair] = {
        ...(tick ?? emptyTick(pair)),
        status: status?.state ?? 'unknown',
        statusSince: status?.since ?? null,
        statusReason: status?.reason ?? null,
        // The price says for itself whether it is fake; before the first one, the status.
        simulated: tick?.simulated ?? status?.simulated ?? false,
        // The daemon sends every pair's status right after the opening prices: until it
        // has confirmed "live", a price is not yet known to be current.
        fresh: open && !silent && tick !== null && status?.state === 'live' && !aged,
      }
    }
    if (names.length === 0) problems.push('no pair reported by the feed yet')
    let state = phase
    if (open) state = silent || anyStale ? 'stale' : 'live'
    let reason
    if (phase === 'connecting') reason = 'connecting to the price feed'
    else if (phase === 'reconnecting' && !reauthing) reason = `connection lost (${lastError?.message ?? 'stream interrupted'}), reconnecting`
    else if (phase === 'closed') reason = lastError && lastError.code ? `closed: ${lastError.message}` : 'feed closed'
    else if (phase === 'reconnecting' && reauthing) reason = `${lastError?.message}, reconnecting`
    else if (silent) reason = `nothing received for ${Math.round((t - (lastEventAt ?? openedAt)) / 1000)} s`
    else reason = problems[0] ?? null
    const simulated = names.some((p) => out[p].simulated)
    // Fake prices can be live and fresh: they are still never tradeable.
    if (reason === null && simulated) reason = SIMULATED_REASON
    const canTrade = state === 'live' && names.length > 0 && names.every((p) => out[p].fresh) && !simulated
    return {
      state,
      canTrade,
      reason: canTrade ? null : reason,
      simulated,
      pairs: out,
      lastEventId: lastId,
      lastEventAt,
      lastAlertId,
      lastError,
      authError,
    }
  }

  function emit(type, payload) {
    for (const handler of [...handlers[type]]) {
      try {
        handler(payload)
      } catch (err) {
        report(err)
      }
    }
  }

  return {
    subscribe(listener) {
      listeners.add(listener)
      return () => listeners.delete(listener)
    },
    getSnapshot() {
      return snapshot
    },
    on(type, handler) {
      const set = handlers[type]
      if (!set) throw new TypeError(`unknown feed event ${JSON.stringify(type)}: use price, status, resync or alert`)
      set.add(handler)
      return () => set.delete(handler)
    },
    close() {
      stop()
      update()
    },
  }
}

/** Parse the wire form of a price; `null` if it is not one. */
function readTick(data, receivedAt) {
  if (!data || typeof data !== 'object') return null
  const { id, pair, price, ts, sources, simulated } = data
  const tsMs = typeof ts === 'string' ? Date.parse(ts) : NaN
  const value = typeof price === 'string' ? Number(price) : NaN
  if (!Number.isSafeInteger(id) || typeof pair !== 'string' || !Number.isFinite(value) || !Number.isFinite(tsMs)) {
    return null
  }
  return Object.freeze({
    pair,
    id,
    price,
    value,
    ts,
    tsMs,
    sources: Object.freeze(Array.isArray(sources) ? sources.map(String) : []),
    simulated: simulated === true,
    receivedAt,
  })
}

/** Parse the wire form of an alert (a firing); `null` if it is not one. */
function readAlert(raw) {
  if (!raw || typeof raw !== 'object') return null
  const { id, rule_id: ruleId, tick_id: tickId = null, at, data } = raw
  if (!Number.isSafeInteger(id) || id <= 0 || !Number.isSafeInteger(ruleId) || typeof at !== 'string') return null
  if (tickId !== null && !Number.isSafeInteger(tickId)) return null
  const body = data && typeof data === 'object' && !Array.isArray(data) ? data : {}
  const text = (value) => (typeof value === 'string' ? value : null)
  return deepFreeze({
    id,
    ruleId,
    tickId,
    at,
    test: body.test === true,
    pair: text(body.pair),
    kind: text(body.kind),
    direction: text(body.direction),
    detail: text(body.detail) ?? '',
    price: text(body.price),
    ts: text(body.ts),
    count: Number.isSafeInteger(body.count) ? body.count : null,
    simulated: body.simulated === true,
    data: body,
  })
}

/** A problem+json body as an object ({} when it is not one). */
async function readProblem(res) {
  try {
    const doc = await res.json()
    return doc && typeof doc === 'object' ? doc : {}
  } catch {
    return {}
  }
}

function emptyTick(pair) {
  return { pair, id: null, price: null, value: null, ts: null, tsMs: null, sources: [], receivedAt: null }
}

function resolveUrl(url, pairs) {
  const base = globalThis.location?.href
  let target
  try {
    target = base ? new URL(url, base) : new URL(url)
  } catch {
    throw new TypeError(`createPriceFeed: ${JSON.stringify(url)} is not a URL (outside browsers it must be absolute)`)
  }
  if (pairs.length) target.searchParams.set('pairs', pairs.join(','))
  return target.toString()
}

function deepFreeze(value) {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const key of Object.keys(value)) deepFreeze(value[key])
  }
  return value
}

function report(err) {
  if (typeof globalThis.reportError === 'function') globalThis.reportError(err)
  else setTimeout(() => { throw err })
}
