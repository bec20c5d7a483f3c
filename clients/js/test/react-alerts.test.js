// The React hook's onAlert: the latest render's callback gets each alert, and changing it
// neither reconnects nor drops one.

import assert from 'node:assert/strict'
import { test } from 'node:test'

import { useEffect } from 'react'

import { StrictMode, createRoot, h, until } from '../test-support/dom.js'
import { ScriptedEventSource, firing } from '../test-support/scripted-eventsource.js'

const { useBitcoinPrice } = await import('../src/react.js')

function Alerts({ label, seen, shown }) {
  const snap = useBitcoinPrice({
    url: 'http://127.0.0.1:9/api/price-stream',
    EventSource: ScriptedEventSource,
    onAlert: (alert) => seen.push([label, alert.id]),
  })
  // Effects run in order: once this one has, the hook's effects of this render have too.
  useEffect(() => {
    shown.push(label)
  })
  return h('output', null, String(snap.lastAlertId ?? 'none'))
}

test('useBitcoinPrice calls the latest onAlert, on the same connection', async () => {
  ScriptedEventSource.made = []
  const seen = []
  const shown = []
  const container = document.createElement('div')
  document.body.replaceChildren(container)
  const root = createRoot(container)
  try {
    root.render(h(StrictMode, null, h(Alerts, { label: 'first', seen, shown })))
    // StrictMode mounts twice: the first connection is closed, the second one lives.
    await until(() => ScriptedEventSource.made.some((es) => es.readyState !== 2), 'a connection')
    const es = ScriptedEventSource.made.at(-1)
    es.open()
    es.send('alert', firing(1))
    await until(() => container.textContent === '1', 'the first alert rendered')
    root.render(h(StrictMode, null, h(Alerts, { label: 'second', seen, shown })))
    await until(() => shown.includes('second'), 'the re-render and its effects')
    es.send('alert', firing(2))
    await until(() => container.textContent === '2', 'the second alert rendered')
    assert.deepEqual(seen, [['first', 1], ['second', 2]])
    assert.equal(ScriptedEventSource.made.filter((e) => e.readyState !== 2).length, 1, 'no new connection')
  } finally {
    root.unmount()
  }
})
