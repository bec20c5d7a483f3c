// React binding: `useBitcoinPrice(options)` returns the feed's snapshot and re-renders on
// every change. React is a peer dependency of this entry only; the core has none.

import { useEffect, useRef, useState, useSyncExternalStore } from 'react'

import { CONNECTING_SNAPSHOT, createPriceFeed } from './index.js'

const subscribeNothing = () => () => {}
const connecting = () => CONNECTING_SNAPSHOT

/**
 * Follow a feed made elsewhere (share one connection between components).
 *
 * @param {import('./index.js').PriceFeed | null | undefined} feed
 */
export function usePriceFeed(feed) {
  return useSyncExternalStore(feed ? feed.subscribe : subscribeNothing, feed ? feed.getSnapshot : connecting, connecting)
}

/**
 * Open a feed for the lifetime of the component (or follow `options.feed`).
 *
 * A new connection is made when url, pairs, withCredentials, token, staleAfterMs or
 * maxClockSkewMs change; the old one is closed. getToken, onReauth and onError are taken
 * from the render that opened the connection (prefer getToken to a changing token: it
 * refreshes without a new connection); onAlert is always the latest render's, so it may
 * close over state without reconnecting. After a 401/403 the snapshot's `authError` is set
 * and the feed stays closed: after a login, change the token or remount the component
 * (a new React `key`) to connect again.
 *
 * @param {import('./react.js').UseBitcoinPriceOptions} [options]
 */
export function useBitcoinPrice(options = {}) {
  const { feed: shared, ...feedOptions } = options
  const key = shared
    ? null
    : JSON.stringify([
        feedOptions.url ?? null,
        feedOptions.pairs ?? null,
        Boolean(feedOptions.withCredentials),
        feedOptions.token ?? null,
        feedOptions.staleAfterMs ?? null,
        feedOptions.maxClockSkewMs ?? null,
      ])
  const [own, setOwn] = useState(null)
  const onAlert = useRef(feedOptions.onAlert)
  useEffect(() => {
    onAlert.current = feedOptions.onAlert
  })
  useEffect(() => {
    if (key === null) return undefined
    // Made in the effect, not during render: StrictMode's mount-unmount-mount and
    // server rendering then never leave a connection open behind them.
    const feed = createPriceFeed({ ...feedOptions, onAlert: (alert) => onAlert.current?.(alert) })
    setOwn({ key, feed })
    return () => {
      feed.close()
      setOwn((current) => (current?.feed === feed ? null : current))
    }
    // feedOptions is summarised by key; an EventSource or now() swap alone does not reconnect.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key])
  return usePriceFeed(shared ?? (own !== null && own.key === key ? own.feed : null))
}
