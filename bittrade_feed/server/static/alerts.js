// The alerts panel: the rules of the chosen pair (GET /api/alerts/rules, filtered here),
// a form to create one, a button to delete each; and what an `alert` event from the stream
// shows: an in-page banner and, once the permission is granted, a browser Notification.
//
// With alerts off on the daemon (the page's config says so; the rules API is then not
// mounted and would answer 404) the panel says so and hides the form. Browsers grant the notification prompt only on a user gesture, so it is
// asked on the first create or delete, never on page load.

import { readProblem } from './problem.js'

const RULES = 'api/alerts/rules'
const KIND_WORDS = {
  above: 'above',
  below: 'below',
  crosses_up: 'crosses up',
  crosses_down: 'crosses down',
  crosses: 'crosses',
  pct_move: 'moves',
}
const LEVEL_KINDS = new Set(['above', 'below', 'crosses_up', 'crosses_down', 'crosses'])
const BAND_KINDS = new Set(['crosses_up', 'crosses_down', 'crosses'])
/** Banners kept on screen; older ones go (the rules list keeps the counts). */
const MAX_BANNERS = 5
/** A problem's `field` and the control that holds it (the rest have no control). */
const FIELD_CONTROLS = {
  pair: 'alert-pair',
  kind: 'alert-kind',
  level: 'alert-level',
  hysteresis: 'alert-hysteresis',
  pct: 'alert-pct',
  window_s: 'alert-window',
  direction: 'alert-direction',
  'frequency.mode': 'alert-frequency',
  'frequency.cooldown_s': 'alert-cooldown',
  'frequency.max_count': 'alert-max-count',
}
const TIMEOUT_MS = 10_000
const OFF = 'Alerts are off on this daemon (alerts.enabled = false in its config).'
const NO_SCOPE = 'Alerts need a credential with the alerts scope; this one has none.'

const byId = (id) => document.getElementById(id)

/**
 * Wire the panel in the page (index.html's #alerts section).
 *
 * @param {{pairs: string[], enabled: boolean, onUnauthorized: () => void}} options
 *   `enabled`: the daemon's alerts.enabled; `onUnauthorized`: a 401, the session ended
 *   (the page checks it and shows its login form).
 */
export function createAlertsPanel({ pairs, enabled, onUnauthorized }) {
  const form = byId('alert-form')
  const pairSelect = byId('alert-pair')
  const list = byId('alert-rules')
  /** Every rule of the owner, as the last list answer had them. */
  let rules = []
  /** Each load's number: an answer older than the newest request is dropped. */
  let loads = 0

  pairSelect.replaceChildren(...pairs.map((pair) => new Option(pair, pair)))
  form.addEventListener('submit', onCreate)
  byId('alert-kind').addEventListener('change', showFields)
  byId('alert-frequency').addEventListener('change', showFields)
  pairSelect.addEventListener('change', renderRules)
  list.addEventListener('click', onListClick)
  showFields()
  showPermission()

  /** The signed-in principal (from /api/whoami; null with auth off), for `load`. */
  let principal = null

  /**
   * Fetch the owner's rules and show those of the chosen pair.
   *
   * @param {object | null} [who] a new principal (after a login); omitted: the same one
   */
  async function load(who = principal) {
    principal = who
    // Counted first: an answer still on its way for someone else must not land after this.
    const mine = ++loads
    if (!enabled) return setOff(OFF)
    // whoami says whether the credential may use alerts: no request bound to be refused.
    if (principal?.alerts === false) return setOff(NO_SCOPE)
    let res
    let doc = null
    let problem = null
    try {
      res = await request('GET', RULES)
      if (res.ok) doc = await res.json()
      else problem = await readProblem(res)
    } catch (err) {
      if (mine === loads) note(`Could not load the alert rules: ${err.message}`)
      return
    }
    if (mine !== loads) return
    if (res.status === 401) return onUnauthorized()
    if (res.status === 404) return setOff(OFF)
    if (res.status === 403) return setOff(`Alerts are not allowed for this credential: ${problem.detail}`)
    if (doc === null) return note(`Could not load the alert rules: ${problem.detail}`)
    rules = Array.isArray(doc?.rules) ? doc.rules : []
    byId('alerts-off').hidden = true
    byId('alerts-permission').hidden = false
    form.hidden = false
    list.hidden = false
    renderRules()
  }

  function setOff(message) {
    rules = []
    form.hidden = true
    list.hidden = true
    byId('alert-error').hidden = true
    byId('alerts-permission').hidden = true // nothing here to be notified of
    note('')
    const off = byId('alerts-off')
    off.textContent = message
    off.hidden = false
  }

  function note(message) {
    byId('alerts-note').textContent = message
  }

  function renderRules() {
    const pair = pairSelect.value
    byId('alerts-pair').textContent = pair
    const shown = rules.filter((rule) => rule.pair === pair)
    if (shown.length === 0) {
      const empty = document.createElement('li')
      empty.className = 'muted'
      empty.textContent = `No alert rules for ${pair} yet.`
      list.replaceChildren(empty)
      return
    }
    list.replaceChildren(...shown.map(ruleItem))
  }

  function ruleItem(rule) {
    const item = document.createElement('li')
    item.className = 'rule'
    item.dataset.ruleId = String(rule.id)
    const what = document.createElement('span')
    what.className = 'rule-text'
    what.textContent = describeRule(rule)
    const state = document.createElement('span')
    state.className = 'rule-state muted'
    const fired = rule.fired ?? 0
    state.textContent = `${fired === 0 ? 'not fired yet' : `fired ${fired} ${fired === 1 ? 'time' : 'times'}`}${rule.done ? ' · done' : ''}`
    const remove = document.createElement('button')
    remove.type = 'button'
    remove.className = 'delete'
    remove.dataset.ruleId = String(rule.id)
    remove.textContent = 'Delete'
    remove.setAttribute('aria-label', `Delete alert rule ${rule.id}: ${what.textContent}`)
    item.append(what, state, remove)
    return item
  }

  function showFields() {
    const kind = byId('alert-kind').value
    byId('field-level').hidden = !LEVEL_KINDS.has(kind)
    byId('field-hysteresis').hidden = !BAND_KINDS.has(kind)
    for (const id of ['field-pct', 'field-window', 'field-direction']) byId(id).hidden = kind !== 'pct_move'
    const repeat = byId('alert-frequency').value === 'repeat'
    byId('field-cooldown').hidden = !repeat
    byId('field-max-count').hidden = !repeat
  }

  /** The rule the form describes, with only the fields its kind takes. */
  function body() {
    const value = (id) => byId(id).value.trim()
    const kind = value('alert-kind')
    const rule = { pair: value('alert-pair'), kind }
    if (LEVEL_KINDS.has(kind)) rule.level = value('alert-level')
    if (BAND_KINDS.has(kind) && value('alert-hysteresis') !== '') rule.hysteresis = value('alert-hysteresis')
    if (kind === 'pct_move') {
      rule.pct = value('alert-pct')
      rule.window_s = whole(value('alert-window'))
      rule.direction = value('alert-direction')
    }
    if (value('alert-frequency') === 'repeat') {
      rule.frequency = { mode: 'repeat', cooldown_s: whole(value('alert-cooldown')) }
      if (value('alert-max-count') !== '') rule.frequency.max_count = whole(value('alert-max-count'))
    } else {
      rule.frequency = { mode: 'once' }
    }
    return rule
  }

  async function onCreate(event) {
    event.preventDefault()
    askPermission() // before any await: the submit is the user gesture browsers require
    clearError()
    const button = byId('alert-create')
    button.disabled = true
    try {
      const res = await request('POST', RULES, body())
      if (res.status === 201) {
        const rule = await res.json()
        note(`Alert rule ${rule.id} created: ${describeRule(rule)}.`)
        byId('alert-level').value = ''
        await load()
      } else if (res.status === 401) {
        onUnauthorized()
      } else if (res.status === 404) {
        setOff(OFF)
      } else {
        showError(await readProblem(res))
      }
    } catch (err) {
      showError({ detail: `Could not reach the daemon: ${err.message}`, field: '' })
    } finally {
      button.disabled = false
    }
  }

  async function onListClick(event) {
    const button = event.target.closest('button.delete')
    if (button === null) return
    askPermission()
    clearError()
    button.disabled = true
    try {
      const res = await request('DELETE', `${RULES}/${encodeURIComponent(button.dataset.ruleId)}`)
      // 404: someone else (another tab) deleted it first; either way it is gone.
      if (res.status === 204 || res.status === 404) note(`Alert rule ${button.dataset.ruleId} deleted.`)
      else if (res.status === 401) return onUnauthorized()
      else showError(await readProblem(res))
      await load()
    } catch (err) {
      showError({ detail: `Could not reach the daemon: ${err.message}`, field: '' })
    } finally {
      button.disabled = false
    }
  }

  /** The daemon's problem next to the form, and the control it names marked invalid. */
  function showError({ detail, field }) {
    const error = byId('alert-error')
    error.textContent = detail
    error.dataset.field = field
    error.hidden = false
    const control = field ? byId(FIELD_CONTROLS[field] ?? '') : null
    if (control !== null) {
      control.setAttribute('aria-invalid', 'true')
      control.setAttribute('aria-describedby', 'alert-error')
      if (!control.closest('[hidden]')) control.focus()
    }
  }

  function clearError() {
    const error = byId('alert-error')
    error.hidden = true
    error.textContent = ''
    delete error.dataset.field
    for (const control of form.querySelectorAll('[aria-invalid]')) {
      control.removeAttribute('aria-invalid')
      control.removeAttribute('aria-describedby')
    }
  }

  /** Ask once, from a user gesture, whether this page may show notifications. */
  function askPermission() {
    if (typeof Notification === 'undefined' || Notification.permission !== 'default') return
    Notification.requestPermission().then(showPermission, showPermission)
  }

  function showPermission() {
    const state = typeof Notification === 'undefined' ? 'unsupported' : Notification.permission
    const words = {
      granted: 'Browser notifications are on.',
      denied: 'Browser notifications are blocked for this page: alerts show here only.',
      default: 'Creating or deleting a rule asks whether this page may show browser notifications.',
      unsupported: 'This browser has no notifications: alerts show here only.',
    }
    const status = byId('alerts-permission')
    status.dataset.permission = state
    status.textContent = words[state] ?? ''
  }

  /** An `alert` event: a banner in the page, a Notification if allowed, fresh counts. */
  function showAlert(alert) {
    const banners = byId('alert-banners')
    const banner = document.createElement('div')
    banner.className = 'alert-banner'
    banner.setAttribute('role', 'alert')
    banner.dataset.alertId = String(alert.id)
    banner.dataset.ruleId = String(alert.ruleId)
    const text = document.createElement('span')
    text.textContent = `${alert.test ? 'Test alert' : 'Alert'}: ${alert.detail}`
    const dismiss = document.createElement('button')
    dismiss.type = 'button'
    dismiss.className = 'dismiss'
    dismiss.textContent = 'Dismiss'
    dismiss.setAttribute('aria-label', `Dismiss alert: ${alert.detail}`)
    dismiss.addEventListener('click', () => banner.remove())
    banner.append(text, dismiss)
    banners.prepend(banner)
    while (banners.children.length > MAX_BANNERS) banners.lastElementChild.remove()
    notify(alert)
    load()
  }

  return { load, showAlert }
}

function notify(alert) {
  if (typeof Notification === 'undefined' || Notification.permission !== 'granted') return
  try {
    // One tag per firing: a second tab of the dashboard replaces it instead of adding one.
    new Notification(`${alert.pair ?? 'bittrade-feed'} alert`, { body: alert.detail, tag: `bittrade-feed-alert-${alert.id}` })
  } catch {
    // Some browsers (Android Chrome) only notify from a service worker: the banner is shown.
  }
}

function request(method, url, json) {
  const init = { method, credentials: 'same-origin', cache: 'no-store', signal: AbortSignal.timeout(TIMEOUT_MS) }
  if (json !== undefined) {
    init.headers = { 'Content-Type': 'application/json' }
    init.body = JSON.stringify(json)
  }
  return fetch(url, init)
}

/** A whole number as a number, anything else as typed (the daemon names the field). */
function whole(text) {
  return /^\d{1,15}$/.test(text) ? Number(text) : text === '' ? undefined : text
}

/** A rule in words: "crosses up 70000 (±50) · once". */
export function describeRule(rule) {
  let what
  if (rule.kind === 'pct_move') {
    const way = rule.direction === 'either' ? 'up or down' : rule.direction
    what = `moves ${way} ${rule.pct} % within ${formatSeconds(rule.window_s)}`
  } else {
    what = `${KIND_WORDS[rule.kind] ?? rule.kind} ${rule.level}`
    if (BAND_KINDS.has(rule.kind) && rule.hysteresis && Number(rule.hysteresis) !== 0) what += ` (±${rule.hysteresis})`
  }
  const freq = rule.frequency ?? { mode: 'once' }
  let how = 'once'
  if (freq.mode === 'repeat') {
    how = `repeat, ${freq.cooldown_s ?? 0} s apart`
    if (freq.max_count) how += `, at most ${freq.max_count} times`
  }
  return `${what} · ${how}`
}

function formatSeconds(s) {
  if (s % 3600 === 0) return `${s / 3600} h`
  if (s % 60 === 0) return `${s / 60} min`
  return `${s} s`
}
