import type { PriceFeed, PriceFeedOptions, PriceSnapshot } from './index.js'

export type { Alert, AuthError, FeedState, PairSnapshot, PriceFeed, PriceFeedOptions, PriceSnapshot } from './index.js'

export interface UseBitcoinPriceOptions extends PriceFeedOptions {
  /** Follow this feed instead of opening one (it is not closed on unmount). */
  feed?: PriceFeed | null
}

/** The snapshot of a feed opened for the component's lifetime (or of `options.feed`). */
export function useBitcoinPrice(options?: UseBitcoinPriceOptions): PriceSnapshot

/** The snapshot of an existing feed; the connecting snapshot while `feed` is null. */
export function usePriceFeed(feed: PriceFeed | null | undefined): PriceSnapshot
