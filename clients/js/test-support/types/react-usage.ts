import { useBitcoinPrice, usePriceFeed } from 'bittrade-feed-client/react'
import type { Alert, PriceSnapshot } from 'bittrade-feed-client/react'
import { createPriceFeed } from 'bittrade-feed-client'

export function useLabel(): string {
  const snap: PriceSnapshot = useBitcoinPrice({ pairs: ['BTC-USD'], withCredentials: true })
  const shared = usePriceFeed(createPriceFeed())
  const again = useBitcoinPrice({ feed: null, onAlert: (alert: Alert) => void alert.detail })
  return `${snap.pairs['BTC-USD']?.price ?? '—'} ${shared.state} ${again.canTrade}`
}
