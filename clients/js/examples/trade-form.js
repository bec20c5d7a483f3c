// The framework-free version: subscribe to the store and keep the button in step.

import { createPriceFeed } from 'bittrade-feed-client'

const PAIR = 'BTC-USD'
const feed = createPriceFeed({ url: '/api/price-stream', pairs: [PAIR] })
const form = document.querySelector('#order')
const button = form.querySelector('button[type=submit]')
const why = document.querySelector('#why')

function render() {
  const snap = feed.getSnapshot()
  form.elements.price.value = snap.pairs[PAIR]?.price ?? '—'
  button.disabled = !snap.canTrade
  why.hidden = snap.canTrade
  why.textContent = snap.canTrade ? '' : `Trading paused: ${snap.reason}`
}

feed.subscribe(render)
render()

form.addEventListener('submit', (event) => {
  event.preventDefault()
  const snap = feed.getSnapshot()
  if (!snap.canTrade) return // the feed went stale between render and click
  const tick = snap.pairs[PAIR]
  const order = { pair: PAIR, side: 'buy', amount: form.elements.amount.value, limitPrice: tick.price, priceId: tick.id }
  document.querySelector('#sent').textContent = `would send ${JSON.stringify(order)}`
})
