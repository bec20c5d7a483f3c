import { useBitcoinPrice, usePriceFeed } from 'bittrade-feed-client/react'
import type { PriceSnapshot } from 'bittrade-feed-client/react'
import { createPriceFeed } from 'bittrade-feed-client'

export function useLabel(): string {
  const snap: PriceSnapshot = useBitcoinPrice({ pairs: ['BTC-USD'], withCredentials: true })
  const shared = usePriceFeed(createPriceFeed())
  const again = useBitcoinPrice({ feed: null })
  return `${snap.pairs['BTC-USD']?.price ?? '—'} ${shared.state} ${again.canTrade}`
}
