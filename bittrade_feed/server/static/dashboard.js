// The live dashboard: prices, charts, freshness, connection and sources, from the same
// client library integrators use (feed.js is served from clients/js/src/index.js, the one copy).
// Every URL is relative, so the page also works behind a proxy under a sub-path.
//
// With [auth] on, /api/whoami answers 401 until the browser has the daemon's session
// cookie: the page then shows a login form that POSTs the key to /api/login (the cookie is
// HttpOnly: this script never sees it, nor keeps the key), and starts the stream after.
// A 401 on the stream, or a `reauth` event whose whoami check says the session ended,
// brings the form back; the new stream resumes from the last event id.
//
// Alerts (alerts.js): the panel lists and edits the rules over the REST API; the stream's
// `alert` events show as banners and notifications. A stream restarted after a login
// resumes alerts after the last one shown, as prices after the last price.

import { createAlertsPanel } from './alerts.js'
import { createPriceFeed } from './feed.js'
import { problemText } from './problem.js'

const config = JSON.parse(document.getElementById('feed-config').textContent)
// The daemon reports a stale pair by itself within stale_after + interval; beyond that
// only a broken connection explains silence (see feed.js). Never below two intervals.
const staleAfterMs = Math.max((config.stale_after + config.interval) * 1000, 2 * config.interval * 1000)
// About 500 prices of history, between one minute and one hour.
const windowMs = Math.min(3_600_000, Math.max(60_000, config.interval * 500 * 1000))
// Sources are polled once per fetch interval, between one and five seconds.
const SOURCES_EVERY_MS = Math.min(5_000, Math.max(1_000, config.interval * 1000))
// Points further apart than this are an outage: the line breaks instead of bridging it.
const GAP_MS = 2.5 * config.interval * 1000
const FIAT_DECIMALS = 2
const HISTORY_LIMIT = 1000
const CHART_W = 600
const CHART_H = 150
const SVG_NS = 'http://www.w3.org/2000/svg'
const STATE_LABELS = {
  connecting: 'Connecting…',
  live: 'Live',
  stale: 'Stale',
  reconnecting: 'Reconnecting…',
  closed: 'Disconnected',
}

const $ = (selector, root = document) => root.querySelector(selector)
const cards = new Map(config.pairs.map((pair) => [pair, makeCard(pair)]))
const alertsPanel = createAlertsPanel({ pairs: config.pairs, enabled: config.alerts === true, onUnauthorized: () => checkSession(null) })
/** The live stream; null while logged out. */
let feed = null
/** Where a stream restarted after a login resumes (the last feed's last event id). */
let resumeFrom = null
/** Where its alerts resume (the last feed's highest alert id). */
let resumeAlertsFrom = null
let previousState = null
let lastSourcesAt = null

$('#version').textContent = `bittrade-feed ${config.version}`
$('#simulated').hidden = !config.simulated
$('#login-form').addEventListener('submit', onLogin)
$('#logout').addEventListener('click', onLogout)

setInterval(tickClock, 1000)
setInterval(refreshSources, SOURCES_EVERY_MS)
boot()

async function boot() {
  // With auth off the page asks nothing more than before (config.auth comes from the daemon).
  if (config.auth !== true) return start(null)
  const who = await whoami()
  if (who.required) showLogin()
  else start(who.principal)
}

// -- login ----------------------------------------------------------------------

/**
 * Who the cookie (if any) is: `{required: true}` when auth is on and nobody is logged in,
 * else `{principal}` (null when auth is off on an older daemon, or it is unreachable:
 * the stream then reports the connection itself).
 */
async function whoami() {
  try {
    const res = await fetch('api/whoami', { credentials: 'same-origin', cache: 'no-store', signal: AbortSignal.timeout(10_000) })
    if (res.status === 401) return { required: true, principal: null }
    if (!res.ok) return { required: false, principal: null }
    return { required: false, principal: await res.json() }
  } catch {
    return { required: false, principal: null }
  }
}

function start(principal) {
  stopFeed()
  $('#login').hidden = true
  $('#content').hidden = false
  $('#trade').hidden = false
  const signedIn = principal !== null && principal.kind !== 'anonymous'
  $('#logout').hidden = !signedIn
  $('#who').hidden = !signedIn
  $('#who').textContent = signedIn ? `signed in as ${principal.subject}` : ''
  feed = createPriceFeed({
    url: 'api/price-stream',
    pairs: config.pairs,
    staleAfterMs,
    lastEventId: resumeFrom,
    alertsAfter: resumeAlertsFrom,
    onAlert: (alert) => alertsPanel.showAlert(alert),
    onError: (err) => {
      if (err.code === 401) showLogin('Your session has ended. Log in again to resume the live prices.')
    },
    // The cookie's session or its key ended: ask the daemon before reconnecting with it.
    onReauth: (reason) => checkSession(reason),
  })
  const own = feed
  feed.subscribe(render)
  feed.on('price', (tick) => cards.get(tick.pair)?.add([tick]))
  feed.on('resync', () => {
    // A gap the daemon could not replay: reload the history instead of drawing across it.
    if (feed === own) for (const card of cards.values()) card.reload()
  })
  for (const card of cards.values()) card.reload()
  previousState = null
  render()
  refreshSources()
  alertsPanel.load(principal)
}

/** A 401 or reauth: if whoami agrees the session is over, show the form. */
async function checkSession(reason) {
  const who = await whoami()
  const why = reason ? ` (${reason})` : ''
  if (who.required && feed !== null) showLogin(`Your session has ended${why}. Log in again to resume the live prices.`)
}

function stopFeed() {
  if (feed === null) return
  resumeFrom = feed.getSnapshot().lastEventId
  resumeAlertsFrom = feed.getSnapshot().lastAlertId
  feed.close()
  feed = null
}

function showLogin(message = '') {
  stopFeed()
  $('#content').hidden = true
  $('#trade').hidden = true
  $('#logout').hidden = true
  $('#who').hidden = true
  $('#banner').hidden = true
  $('#alert-banners').replaceChildren() // the next person to log in must not see them
  const badge = $('#connection')
  badge.dataset.state = 'closed'
  badge.textContent = 'Logged out'
  document.body.dataset.state = 'logged-out'
  $('#login').hidden = false
  loginError(message)
  $('#login-key').focus()
}

function loginError(message) {
  const error = $('#login-error')
  error.textContent = message
  error.hidden = message === ''
  $('#login-key').setAttribute('aria-invalid', String(message !== ''))
}

async function onLogin(event) {
  event.preventDefault()
  const input = $('#login-key')
  const key = input.value.trim()
  if (!key) {
    loginError('Enter an API key or a token.')
    input.focus()
    return
  }
  const button = $('#login-submit')
  button.disabled = true
  loginError('')
  try {
    const res = await fetch('api/login', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ key }),
      signal: AbortSignal.timeout(10_000),
    })
    if (res.status === 204 || res.status === 404) {
      // 404: authentication is off on this daemon; there is nothing to log in to.
      input.value = ''
      const who = await whoami()
      if (who.required) loginError('Logged in, but the daemon still asks for a credential: are cookies blocked?')
      else start(who.principal)
      return
    }
    loginError(`Login refused: ${await problemText(res)}`)
    input.select()
  } catch (err) {
    loginError(`Could not reach the daemon: ${err.message}`)
  } finally {
    button.disabled = false
  }
}

async function onLogout() {
  try {
    await fetch('api/logout', { method: 'POST', credentials: 'same-origin', signal: AbortSignal.timeout(10_000) })
  } catch {
    // The cookie may outlive a failed request; the form is shown either way.
  }
  resumeFrom = null
  resumeAlertsFrom = null
  showLogin()
  $('#login-note').textContent = 'Logged out. Log in again with an API key or a token.'
}

// -- the live view --------------------------------------------------------------

function render() {
  if (feed === null) return
  const snap = feed.getSnapshot()
  const badge = $('#connection')
  badge.dataset.state = snap.state
  badge.textContent = STATE_LABELS[snap.state] ?? snap.state
  document.body.dataset.state = snap.state

  $('#simulated').hidden = !(config.simulated || snap.simulated)
  const trade = $('#trade')
  trade.dataset.canTrade = String(snap.canTrade)
  $('#trade-label').textContent = snap.canTrade ? 'Safe to trade' : 'Not safe to trade'
  $('#trade-reason').textContent = snap.canTrade ? 'every price is live and fresh' : snap.reason ?? ''

  const banner = $('#banner')
  const kind = snap.state === 'stale' ? 'stale' : snap.state === 'reconnecting' || snap.state === 'closed' ? 'disconnected' : ''
  banner.hidden = kind === ''
  banner.dataset.kind = kind
  banner.textContent = bannerText(snap)

  for (const [pair, card] of cards) card.render(snap.pairs[pair], snap)
  const offline = snap.state === 'reconnecting' || snap.state === 'closed'
  $('section.sources').classList.toggle('dim', offline)
  if (offline && previousState !== snap.state) {
    $('#sources-note').textContent = `as of ${lastSourcesAt ?? 'never'}: the daemon is unreachable`
  }
  if (previousState !== null && previousState !== 'live' && previousState !== 'stale' && snap.state === 'live') {
    refreshSources() // back from an outage: do not wait for the next period
  }
  previousState = snap.state
}

function bannerText(snap) {
  if (snap.state === 'stale') return `Prices are stale: ${snap.reason ?? 'no recent update'}. Trading is paused.`
  if (snap.state === 'reconnecting') {
    return `Connection to the feed lost, reconnecting… Prices shown may be out of date.`
  }
  if (snap.state === 'closed') return `Disconnected from the feed: ${snap.reason ?? 'closed'}. Reload the page to retry.`
  return ''
}

function tickClock() {
  if (feed === null) return
  const snap = feed.getSnapshot()
  for (const [pair, card] of cards) card.tickClock(snap.pairs[pair])
  for (const span of document.querySelectorAll('[data-when]')) span.textContent = formatWhen(span.dataset.when)
}

// -- one card per pair --------------------------------------------------------

function makeCard(pair) {
  const node = $('#pair-card').content.firstElementChild.cloneNode(true)
  node.dataset.pair = pair
  $('.pair-name', node).textContent = pair
  $('.price-quote', node).textContent = pair.split('-')[1] ?? ''
  $('.chart', node).setAttribute('aria-label', `${pair} price over the last ${formatSpan(windowMs)}`)
  $('#pairs').append(node)
  const priceEl = $('.price-value', node)
  // One number of decimals per pair (the most seen, at least the quote's usual), so the
  // price does not change width from tick to tick.
  let decimals = defaultDecimals(pair)
  /** Oldest first, unique ids. */
  let points = []
  let shownId = null
  let shownValue = null
  let loading = null

  function add(ticks) {
    let changed = false
    for (const t of ticks) {
      decimals = Math.max(decimals, decimalsOf(t.price))
      const last = points.at(-1)
      if (last && t.id <= last.id) {
        if (points.some((p) => p.id === t.id)) continue
        points.push({ id: t.id, tsMs: t.tsMs, value: t.value })
        points.sort((a, b) => a.id - b.id)
      } else {
        points.push({ id: t.id, tsMs: t.tsMs, value: t.value })
      }
      changed = true
    }
    if (changed) {
      prune()
      draw()
    }
  }

  function prune() {
    const latest = points.at(-1)?.tsMs ?? Date.now()
    const cut = Math.max(Date.now(), latest) - windowMs
    const first = points.findIndex((p) => p.tsMs >= cut)
    if (first > 0) points = points.slice(first)
  }

  async function reload() {
    if (loading) return loading
    loading = (async () => {
      try {
        let since = new Date(Date.now() - windowMs).toISOString()
        const loaded = []
        for (let page = 0; page < 5; page++) {
          const url = `api/prices?pair=${encodeURIComponent(pair)}&since=${encodeURIComponent(since)}&limit=${HISTORY_LIMIT}`
          const res = await fetch(url, { credentials: 'same-origin', signal: AbortSignal.timeout(10_000) })
          if (!res.ok) break
          const body = await res.json()
          for (const p of body.prices) {
            decimals = Math.max(decimals, decimalsOf(p.price))
            loaded.push({ id: p.id, tsMs: Date.parse(p.ts), value: Number(p.price) })
          }
          if (!body.truncated || body.prices.length === 0) break
          since = new Date(Date.parse(body.prices.at(-1).ts) + 1).toISOString()
        }
        const keep = new Map(loaded.map((p) => [p.id, p]))
        for (const p of points) keep.set(p.id, p) // live ticks that arrived meanwhile
        points = [...keep.values()].sort((a, b) => a.id - b.id)
        prune()
        draw()
      } catch {
        // The stream still works without history; the next resync or reload retries.
      } finally {
        loading = null
      }
    })()
    return loading
  }

  function draw() {
    const line = $('.line', node)
    const area = $('.area', node)
    const empty = points.length < 2
    $('.empty', node).hidden = !empty
    const change = $('.change', node)
    if (empty) {
      line.setAttribute('d', '')
      area.setAttribute('d', '')
      $('.grid', node).replaceChildren()
      $('.y-axis', node).replaceChildren()
      $('.x-axis', node).replaceChildren()
      change.textContent = ''
      change.className = 'change'
      return
    }
    const values = points.map((p) => p.value)
    let lo = Math.min(...values)
    let hi = Math.max(...values)
    if (hi === lo) {
      hi += Math.abs(hi) * 0.0005 || 1
      lo -= Math.abs(lo) * 0.0005 || 1
    }
    const t1 = points.at(-1).tsMs
    const t0 = Math.min(points[0].tsMs, t1 - 1)
    const pad = 12 // the line never touches the top or bottom edge
    const x = (ts) => ((ts - t0) / (t1 - t0)) * CHART_W
    const y = (v) => pad + (1 - (v - lo) / (hi - lo)) * (CHART_H - 2 * pad)
    // One path segment ("M" then "L"s) per run of points without an outage between them.
    const runs = []
    for (const [i, p] of points.entries()) {
      if (i === 0 || p.tsMs - points[i - 1].tsMs > GAP_MS) runs.push([])
      runs.at(-1).push([x(p.tsMs).toFixed(1), y(p.value).toFixed(1)])
    }
    // A lone point between two gaps gets a zero-length stroke: its round cap is a dot.
    line.setAttribute('d', runs.map((r) => `M${r.map(([px, py]) => `${px},${py}`).join(' L')}${r.length === 1 ? ' l0,0' : ''}`).join(' '))
    area.setAttribute('d', runs.filter((r) => r.length > 1).map((r) => `M${r[0][0]},${CHART_H} L${r.map(([px, py]) => `${px},${py}`).join(' L')} L${r.at(-1)[0]},${CHART_H} Z`).join(' '))
    drawAxes(lo, hi, t0, t1, y)

    const first = points[0].value
    const last = points.at(-1).value
    const delta = last - first
    const pct = first ? (delta / first) * 100 : 0
    const sign = delta > 0 ? '+' : delta < 0 ? '−' : '±'
    change.textContent = `${sign}${formatNumber(Math.abs(delta))} (${sign}${Math.abs(pct).toFixed(2)} %) in ${formatSpan(Math.min(windowMs, t1 - points[0].tsMs))}`
    change.className = `change ${delta > 0 ? 'up' : delta < 0 ? 'down' : ''}`
  }

  function drawAxes(lo, hi, t0, t1, y) {
    const grid = []
    const priceLabels = []
    const step = niceStep((hi - lo) / 3)
    const places = Math.max(0, -Math.floor(Math.log10(step)))
    for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) {
      const py = y(v)
      grid.push(svgLine(0, py, CHART_W, py))
      priceLabels.push(axisLabel(formatFixed(v, places), 'top', (py / CHART_H) * 100))
    }
    const timeLabels = []
    const tStep = niceTimeStep((t1 - t0) / 4)
    for (let ts = Math.ceil(t0 / tStep) * tStep; ts <= t1; ts += tStep) {
      const px = ((ts - t0) / (t1 - t0)) * CHART_W
      grid.push(svgLine(px, 0, px, CHART_H))
      const percent = (px / CHART_W) * 100
      // A centred label at either end would stick out of the card: keep only its line.
      if (percent >= 6 && percent <= 94) timeLabels.push(axisLabel(formatClock(ts, tStep), 'left', percent))
    }
    $('.grid', node).replaceChildren(...grid)
    $('.y-axis', node).replaceChildren(...priceLabels)
    $('.x-axis', node).replaceChildren(...timeLabels)
  }

  function render(view, snap) {
    node.classList.toggle('dim', snap.state === 'reconnecting' || snap.state === 'closed' || snap.state === 'connecting')
    const status = $('.pair-status', node)
    const connected = snap.state === 'live' || snap.state === 'stale'
    let label = 'waiting'
    let state = 'unknown'
    if (!connected && snap.state !== 'connecting') [label, state] = ['offline', 'reconnecting']
    else if (view?.fresh) [label, state] = ['fresh', 'live']
    else if (view?.price != null && connected) [label, state] = ['stale', 'stale']
    status.dataset.state = state
    status.textContent = label
    status.title = view?.statusReason || ''
    if (!view || view.price === null) return
    if (view.id !== shownId) {
      decimals = Math.max(decimals, decimalsOf(view.price))
      priceEl.textContent = formatDecimal(view.price, decimals)
      priceEl.dataset.price = view.price
      if (shownValue !== null && view.value !== shownValue) {
        priceEl.classList.remove('up', 'down')
        void priceEl.offsetWidth // restart the highlight animation
        priceEl.classList.add(view.value > shownValue ? 'up' : 'down')
      }
      shownId = view.id
      shownValue = view.value
      $('.sources-line', node).textContent = `from ${view.sources.join(', ')} · id ${view.id}`
    }
    tickClock(view)
  }

  function tickClock(view) {
    const age = $('.age', node)
    if (!view || view.tsMs === null) {
      age.textContent = 'no price yet'
      return
    }
    age.textContent = `updated ${formatAgo(Date.now() - view.tsMs)}`
    age.title = view.ts
  }

  return { add, reload, render, tickClock }
}

// -- sources table --------------------------------------------------------------

async function refreshSources() {
  if (feed === null) return
  const state = feed.getSnapshot().state
  // While the daemon is unreachable the stream already says so; do not add failing polls.
  if (state !== 'live' && state !== 'stale') return
  const note = $('#sources-note')
  try {
    const res = await fetch('api/sources', { credentials: 'same-origin', signal: AbortSignal.timeout(4_000) })
    if (res.status === 401) {
      // The session ended between two polls (the stream's reauth may still be on its way).
      await checkSession(null)
      return
    }
    if (!res.ok) throw new Error(`HTTP ${res.status}`)
    const { sources } = await res.json()
    const rows = sources.map((s) => {
      const tr = document.createElement('tr')
      tr.dataset.source = s.name
      const error = document.createElement('span')
      if (s.last_error) error.append(`${s.last_error_reason ?? 'error'}: ${s.last_error_message ?? ''} (`, when(s.last_error), ')')
      else error.textContent = '—'
      const health = sourceHealth(s)
      tr.dataset.health = health
      tr.append(
        cell(sourceName(s), '', 'name', 'Source'),
        cell(badgeFor(health, s.state), '', 'health', 'Status'),
        cell(s.pairs.join(', '), '', '', 'Pairs'),
        cell(s.last_success ? when(s.last_success) : 'never', s.last_success ?? '', '', 'Last success'),
        cell(error, '', 'error', 'Last error'),
        cell(String(s.consecutive_failures), '', '', 'Failures'),
      )
      return tr
    })
    if (!rows.length) rows.push(row('no sources configured'))
    $('#sources tbody').replaceChildren(...rows)
    lastSourcesAt = new Date().toLocaleTimeString()
    note.textContent = `refreshed ${lastSourcesAt}`
  } catch (err) {
    note.textContent = `sources unavailable: ${err.message}`
  }
}

/** A relative time that the one-second clock keeps current. */
function when(iso) {
  const span = document.createElement('span')
  span.dataset.when = iso
  span.textContent = formatWhen(iso)
  return span
}

function cell(content, title = '', className = '', label = '') {
  const td = document.createElement('td')
  if (typeof content === 'string') td.textContent = content
  else td.append(content)
  if (title) td.title = title
  if (className) td.className = className
  if (label) td.dataset.label = label // the heading, shown beside the value on a phone
  return td
}

function row(text) {
  const tr = document.createElement('tr')
  const td = cell(text, '', 'muted')
  td.colSpan = 6
  tr.append(td)
  return tr
}

function sourceName(source) {
  const span = document.createElement('span')
  span.textContent = source.name
  if (source.simulated) {
    const tag = document.createElement('span')
    tag.className = 'tag'
    tag.textContent = 'fake prices'
    span.append(tag)
  }
  return span
}

/**
 * What the source's last outcome says: a closed circuit is not "ok" while its latest
 * request failed (it takes a few failures in a row to open it).
 */
function sourceHealth(s) {
  if (s.state === 'disabled') return 'disabled'
  if (s.state === 'open') return 'resting'
  if (s.state === 'half_open') return 'probing'
  const failedLast = s.last_error !== null && (s.last_success === null || Date.parse(s.last_error) >= Date.parse(s.last_success))
  if (s.consecutive_failures > 0 || failedLast) return 'failing'
  return s.last_success === null ? 'waiting' : 'ok'
}

const HEALTH_TITLES = {
  ok: 'its last request gave a valid price',
  failing: 'its last request failed; it is rested after a few failures in a row',
  resting: 'failing: not asked until its rest is over, then probed once',
  probing: 'its rest is over: the next request decides',
  disabled: 'blocked for this location (HTTP 451): no longer asked until a reload',
  waiting: 'not asked yet',
}

function badgeFor(health, circuit) {
  const span = document.createElement('span')
  span.className = `badge health-${health}`
  span.dataset.health = health
  span.textContent = health
  span.title = `${HEALTH_TITLES[health]} (circuit ${circuit})`
  return span
}

// -- formatting -------------------------------------------------------------------

/** Group the integer digits of a decimal string and pad it to `decimals`, never through a float. */
function formatDecimal(text, decimals = 0) {
  const [int, frac = ''] = text.split('.')
  const grouped = int.replace(/\B(?=(\d{3})+(?!\d))/g, ',')
  const padded = frac.padEnd(decimals, '0')
  return padded ? `${grouped}.${padded}` : grouped
}

function decimalsOf(text) {
  const dot = text.indexOf('.')
  return dot < 0 ? 0 : text.length - dot - 1
}

/** Cents for a fiat or stablecoin quote (BTC-USD 64,123.40); crypto quotes as they come. */
function defaultDecimals(pair) {
  const quote = pair.split('-')[1] ?? ''
  return /^(USD|EUR|GBP|CHF|JPY|CAD|AUD|USDT|USDC|DAI)$/.test(quote) ? FIAT_DECIMALS : 0
}

/** A round step (1, 2 or 5 times a power of ten) near `raw`. */
function niceStep(raw) {
  const power = 10 ** Math.floor(Math.log10(raw))
  const unit = raw / power
  return (unit < 1.5 ? 1 : unit < 3.5 ? 2 : unit < 7.5 ? 5 : 10) * power
}

const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200].map((s) => s * 1000)

function niceTimeStep(raw) {
  return TIME_STEPS.find((s) => s >= raw) ?? TIME_STEPS.at(-1)
}

function formatFixed(n, places) {
  return n.toLocaleString('en-US', { minimumFractionDigits: places, maximumFractionDigits: places })
}

/** Local wall-clock time of an axis tick: seconds only when the steps are under a minute. */
function formatClock(ts, step) {
  const options = { hour: '2-digit', minute: '2-digit', hour12: false }
  if (step < 60_000) options.second = '2-digit'
  return new Date(ts).toLocaleTimeString('en-GB', options)
}

function svgLine(x1, y1, x2, y2) {
  const el = document.createElementNS(SVG_NS, 'line')
  for (const [k, v] of Object.entries({ x1, y1, x2, y2 })) el.setAttribute(k, v.toFixed(1))
  return el
}

/** An HTML label over the chart (SVG text would be stretched by the chart's aspect ratio). */
function axisLabel(text, side, percent) {
  const span = document.createElement('span')
  span.className = 'tick'
  span.textContent = text
  span.style.setProperty(side, `${percent.toFixed(2)}%`)
  return span
}

function formatNumber(n) {
  // Display only (charts, differences): the exact decimal strings are shown as sent.
  return Math.abs(n) >= 1 || n === 0
    ? n.toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 })
    : n.toLocaleString('en-US', { maximumSignificantDigits: 4 })
}

function formatAgo(ms) {
  const s = Math.max(0, Math.round(ms / 1000))
  if (s < 60) return `${s} s ago`
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s ago`
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min ago`
}

function formatWhen(iso) {
  return formatAgo(Date.now() - Date.parse(iso))
}

function formatSpan(ms) {
  const s = Math.round(ms / 1000)
  if (s < 120) return `${s} s`
  if (s < 7200) return `${Math.round(s / 60)} min`
  return `${Math.round(s / 3600)} h`
}
