// A React order form as an integrator would write it: the submit button is disabled
// whenever the feed says trading is not safe (stale, reconnecting, no price yet, or
// simulated prices).
// Plain `createElement` so it runs without a JSX build; with JSX it reads the same.

import { createElement as h, useState } from 'react'

import { useBitcoinPrice } from 'bittrade-feed-client/react'

/**
 * @param {{ url?: string, pair?: string, onOrder: (order: object) => void, EventSource?: any }} props
 */
export function TradeForm({ url, pair = 'BTC-USD', onOrder, EventSource }) {
  const feed = useBitcoinPrice({ url, pairs: [pair], EventSource })
  const tick = feed.pairs[pair]
  const [amount, setAmount] = useState('0.01')

  function submit(event) {
    event.preventDefault()
    // Re-check at the moment of submit: the button may be a render behind the feed.
    if (!feed.canTrade || !tick?.price) return
    // Send the decimal string and the price's id, never the float used for display.
    onOrder({ pair, side: 'buy', amount, limitPrice: tick.price, priceId: tick.id })
  }

  return h(
    'form',
    { onSubmit: submit, 'aria-label': `Buy ${pair}` },
    h('p', null, `${pair}: `, h('output', { name: 'price' }, tick?.price ?? '—')),
    h(
      'label',
      null,
      'Amount ',
      h('input', { name: 'amount', inputMode: 'decimal', value: amount, onChange: (e) => setAmount(e.target.value) }),
    ),
    h('button', { type: 'submit', disabled: !feed.canTrade }, 'Buy'),
    feed.canTrade ? null : h('p', { role: 'status' }, `Trading paused: ${feed.reason}`),
  )
}
