// The live dashboard: prices, charts, freshness, connection and sources, from the same
// client library integrators use (feed.js is served from clients/js/src/index.js, the one copy).
// Every URL is relative, so the page also works behind a proxy under a sub-path.

import { createPriceFeed } from './feed.js'

const config = JSON.parse(document.getElementById('feed-config').textContent)
// The daemon reports a stale pair by itself within stale_after + interval; beyond that
// only a broken connection explains silence (see feed.js). Never below two intervals.
const staleAfterMs = Math.max((config.stale_after + config.interval) * 1000, 2 * config.interval * 1000)
// About 500 prices of history, between one minute and one hour.
const windowMs = Math.min(3_600_000, Math.max(60_000, config.interval * 500 * 1000))
const SOURCES_EVERY_MS = 5_000
const HISTORY_LIMIT = 1000
const STATE_LABELS = {
  connecting: 'Connecting…',
  live: 'Live',
  stale: 'Stale',
  reconnecting: 'Reconnecting…',
  closed: 'Disconnected',
}

const $ = (selector, root = document) => root.querySelector(selector)
const feed = createPriceFeed({ url: 'api/price-stream', pairs: config.pairs, staleAfterMs })
const cards = new Map(config.pairs.map((pair) => [pair, makeCard(pair)]))
let previousState = null
let lastSourcesAt = null

$('#version').textContent = `bittrade-feed ${config.version}`
$('#simulated').hidden = !config.simulated

feed.subscribe(render)
feed.on('price', (tick) => cards.get(tick.pair)?.add([tick]))
feed.on('resync', () => {
  // A gap the daemon could not replay: reload the history instead of drawing across it.
  for (const card of cards.values()) card.reload()
})
for (const card of cards.values()) card.reload()
render()
setInterval(tickClock, 1000)
refreshSources()
setInterval(refreshSources, SOURCES_EVERY_MS)

function render() {
  const snap = feed.getSnapshot()
  const badge = $('#connection')
  badge.dataset.state = snap.state
  badge.textContent = STATE_LABELS[snap.state] ?? snap.state
  document.body.dataset.state = snap.state

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
  /** Oldest first, unique ids. */
  let points = []
  let shownId = null
  let shownValue = null
  let loading = null

  function add(ticks) {
    let changed = false
    for (const t of ticks) {
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
          const res = await fetch(url, { signal: AbortSignal.timeout(10_000) })
          if (!res.ok) break
          const body = await res.json()
          for (const p of body.prices) loaded.push({ id: p.id, tsMs: Date.parse(p.ts), value: Number(p.price) })
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
      line.setAttribute('points', '')
      area.setAttribute('d', '')
      $('.hi', node).textContent = ''
      $('.lo', node).textContent = ''
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
    const W = 600
    const H = 150
    const pad = 22 // room for the high/low labels
    const xy = points.map((p) => [
      ((p.tsMs - t0) / (t1 - t0)) * W,
      pad + (1 - (p.value - lo) / (hi - lo)) * (H - 2 * pad),
    ])
    const coords = xy.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`)
    line.setAttribute('points', coords.join(' '))
    area.setAttribute('d', `M${xy[0][0].toFixed(1)},${H} L${coords.join(' L')} L${xy.at(-1)[0].toFixed(1)},${H} Z`)
    $('.hi', node).textContent = `high ${formatNumber(Math.max(...values))}`
    $('.lo', node).textContent = `low ${formatNumber(Math.min(...values))}`

    const first = points[0].value
    const last = points.at(-1).value
    const delta = last - first
    const pct = first ? (delta / first) * 100 : 0
    const sign = delta > 0 ? '+' : delta < 0 ? '−' : '±'
    change.textContent = `${sign}${formatNumber(Math.abs(delta))} (${sign}${Math.abs(pct).toFixed(2)} %) in ${formatSpan(Math.min(windowMs, t1 - points[0].tsMs))}`
    change.className = `change ${delta > 0 ? 'up' : delta < 0 ? 'down' : ''}`
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
      priceEl.textContent = formatDecimal(view.price)
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
  const state = feed.getSnapshot().state
  // While the daemon is unreachable the stream already says so; do not add failing polls.
  if (state !== 'live' && state !== 'stale') return
  const note = $('#sources-note')
  try {
    const res = await fetch('api/sources', { signal: AbortSignal.timeout(4_000) })
    if (!res.ok) throw new Error(`HTTP ${res.status}`)
    const { sources } = await res.json()
    const rows = sources.map((s) => {
      const tr = document.createElement('tr')
      tr.dataset.source = s.name
      const error = document.createElement('span')
      if (s.last_error) error.append(`${s.last_error_reason ?? 'error'}: ${s.last_error_message ?? ''} (`, when(s.last_error), ')')
      else error.textContent = '—'
      tr.append(
        cell(sourceName(s)),
        cell(badgeFor(s.state)),
        cell(s.pairs.join(', ')),
        cell(s.last_success ? when(s.last_success) : 'never', s.last_success ?? ''),
        cell(error, '', 'error'),
        cell(String(s.consecutive_failures)),
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

function cell(content, title = '', className = '') {
  const td = document.createElement('td')
  if (typeof content === 'string') td.textContent = content
  else td.append(content)
  if (title) td.title = title
  if (className) td.className = className
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

function badgeFor(circuit) {
  const span = document.createElement('span')
  span.className = 'badge'
  span.dataset.circuit = circuit
  span.textContent = { closed: 'ok', half_open: 'probing', open: 'resting', disabled: 'disabled' }[circuit] ?? circuit
  span.title = `circuit ${circuit}`
  return span
}

// -- formatting -------------------------------------------------------------------

/** Group the integer digits of a decimal string without going through a float. */
function formatDecimal(text) {
  const [int, frac] = text.split('.')
  const grouped = int.replace(/\B(?=(\d{3})+(?!\d))/g, ',')
  return frac === undefined ? grouped : `${grouped}.${frac}`
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
