// The React hook, through the example order form, rendered by react-dom into jsdom.

import assert from 'node:assert/strict'
import { after, afterEach, before, test } from 'node:test'

import { EventSource } from 'eventsource'

import { StrictMode, createRoot, h, until } from '../test-support/dom.js'
import { startDaemon } from '../test-support/daemon.js'
import { startFakeKraken } from '../test-support/fake-kraken.js'
import { sleep } from '../test-support/wait.js'

// After test-support/dom.js has set up the DOM globals react-dom looks for.
const { renderToString } = await import('react-dom/server')
const { TradeForm } = await import('../examples/TradeForm.js')

let kraken
let daemon
let root
before(async () => {
  kraken = await startFakeKraken('64123.4')
  daemon = await startDaemon({
    interval: 0.2,
    staleAfter: 0.6,
    sources: { 'BTC-USD': ['kraken'] },
    exchanges: { kraken: { base_url: kraken.url } },
  })
})
afterEach(() => {
  root?.unmount()
  root = null
  kraken.setPrice('64123.4')
})
after(async () => {
  await daemon?.dispose()
  await kraken?.close()
})

async function sseSubscribers() {
  const text = await (await fetch(`${daemon.url}/metrics`)).text()
  return Number(/^bittrade_feed_subscribers\{transport="sse"\} (\S+)$/m.exec(text)?.[1])
}

function mount(onOrder, url = daemon.url) {
  const container = document.createElement('div')
  document.body.replaceChildren(container)
  root = createRoot(container)
  root.render(h(StrictMode, null, h(TradeForm, { url: `${url}/api/price-stream`, onOrder, EventSource })))
  return {
    button: () => container.querySelector('button'),
    price: () => container.querySelector('output').textContent,
    status: () => container.querySelector('[role=status]')?.textContent ?? null,
  }
}

test('useBitcoinPrice drives the example form: Buy is enabled only while canTrade', async () => {
  const orders = []
  const form = mount((order) => orders.push(order))
  await until(() => form.button() !== null, 'first render')
  await until(() => !form.button().disabled, 'Buy enabled')
  assert.equal(form.price(), '64123.4')
  assert.equal(form.status(), null)

  form.button().click()
  assert.equal(orders.length, 1)
  assert.deepEqual({ ...orders[0], priceId: typeof orders[0].priceId }, {
    pair: 'BTC-USD', side: 'buy', amount: '0.01', limitPrice: '64123.4', priceId: 'number',
  })

  kraken.fail(500)
  await until(() => form.button().disabled, 'Buy disabled when stale')
  assert.match(form.status(), /Trading paused: BTC-USD is stale/)
  form.button().click()
  assert.equal(orders.length, 1, 'a disabled button sends nothing')

  kraken.setPrice('64150')
  await until(() => !form.button().disabled && form.price() === '64150', 'Buy enabled again')
})

test('on simulated prices Buy stays disabled, with the reason shown', async () => {
  const fake = await startDaemon({ interval: 0.2 }) // the simulated source
  try {
    const orders = []
    const form = mount((order) => orders.push(order), fake.url)
    await until(() => form.button() !== null && form.price() !== '—', 'a simulated price shown')
    await until(() => form.status() === 'Trading paused: Simulated prices: not for trading', 'the reason')
    assert.equal(form.button().disabled, true)
    await sleep(500) // more fresh, live, fake prices change nothing
    assert.equal(form.button().disabled, true)
    form.button().click()
    assert.deepEqual(orders, [])
  } finally {
    root?.unmount()
    root = null
    await fake.dispose()
  }
})

test('unmounting closes the connection, StrictMode double mount included', async () => {
  const form = mount(() => {})
  await until(() => form.button() !== null && !form.button().disabled, 'Buy enabled')
  assert.equal(await sseSubscribers(), 1, 'StrictMode left one connection, not two')
  root.unmount()
  root = null
  const deadline = Date.now() + 5_000
  while ((await sseSubscribers()) !== 0 && Date.now() < deadline) await sleep(50)
  assert.equal(await sseSubscribers(), 0)
})

test('server rendering shows the connecting snapshot and a disabled button', () => {
  const html = renderToString(h(TradeForm, { url: `${daemon.url}/api/price-stream`, onOrder() {}, EventSource }))
  assert.match(html, /<button type="submit" disabled="">Buy<\/button>/)
  assert.match(html, /Trading paused: connecting to the price feed/)
})
